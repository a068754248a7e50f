"""Tiny ingestion+split+scratch+transfer+evaluation on a sample of the real archive; copies metrics out.
usage: python compare_run.py OUTDIR CONFDIR"""
import io, json, os, shutil, sys, tarfile
from pathlib import Path
def main():
    out = Path(sys.argv[1]); conf = Path(sys.argv[2])
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    sample = Path("/tmp/renovate_cmp/sample.tar.gz")
    if not sample.exists():
        sys.path.insert(0, "/work/wt-renovate/src")
        from age_gender.faces import UTKFACE_NAME
        members = {}
        with tarfile.open(os.environ["UTKFACE_ARCHIVE"]) as archive:
            for index, member in enumerate(archive):
                if member.isfile() and (not UTKFACE_NAME.match(member.name.rsplit("/", 1)[-1]) or index % 40 == 0):
                    members[member.name] = archive.extractfile(member).read()
        tmp = sample.with_suffix(".part")
        with tarfile.open(tmp, "w:gz") as a:
            for name, data in members.items():
                info = tarfile.TarInfo(name); info.size = len(data); a.addfile(info, io.BytesIO(data))
        os.replace(tmp, sample)
    os.environ["UTKFACE_ARCHIVE"] = str(sample)
    root = out / "project"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(conf, root / "conf")
    shutil.copy("/work/wt-renovate/pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    for layer in ("01_raw","02_intermediate","03_primary","04_feature","05_model_input","06_models","07_model_output","08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    TINY = {
        "ingestion": {"image_sizes": [32, 48]},
        "split": {"test_size": 60, "subset_size": 300},
        "scratch_training": {"input_size": 32, "epochs": 2, "patience": 2, "batch_size": 32, "width_multiplier": 0.125},
        "scratch": {"architecture": {"conv_pairs": 3, "dense_layers": 1, "dense_units": 16, "split_point": 1}},
        "transfer": {"compare": ["mobilenet_v2"], "input_size": 32, "head": {"epochs": 3, "patience": 2},
                     "head_search": {"structures": ["dense-dropout", "dense-bn"]},
                     "hyperband": {"max_epochs": 3, "factor": 3, "units_max": 128},
                     "fine_tune": {"epochs": 1, "unfreeze_last": 4, "batch_size": 32}},
    }
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    bootstrap_project(root)
    for name in ("ingestion", "split", "scratch", "transfer", "evaluation"):
        with KedroSession.create(project_path=root, runtime_params=TINY) as session:
            session.run(pipeline_names=[name])
    for f in (root / "data" / "08_reporting").glob("*.json"):
        shutil.copy(f, out / f.name)
    shutil.copy(root / "data/05_model_input/face_splits.parquet", out / "face_splits.parquet")
    print("done", sorted(p.name for p in out.glob("*.json")))

if __name__ == '__main__':
    main()
