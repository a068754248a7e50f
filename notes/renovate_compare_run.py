"""A tiny ingestion, split, scratch, transfer and evaluation run on a sample of the real archive
(every 40th file plus the malformed names), in a throw-away Kedro project; copies the reports out.

usage: PYTHONPATH=<src> UTKFACE_ARCHIVE=... UTKFACE_WEIGHTS_DIR=... python renovate_compare_run.py OUTDIR CONFDIR
"""

import io
import os
import shutil
import sys
import tarfile
from pathlib import Path

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
LAYERS = ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
          "07_model_output", "08_reporting")


def sample_archive(path: Path) -> Path:
    from age_gender.faces import UTKFACE_NAME

    if path.exists():
        return path
    tmp = path.with_suffix(".part")
    with tarfile.open(os.environ["UTKFACE_ARCHIVE"]) as archive, tarfile.open(tmp, "w:gz") as out:
        for index, member in enumerate(archive):
            if member.isfile() and (index % 40 == 0 or not UTKFACE_NAME.match(member.name.rsplit("/", 1)[-1])):
                data = archive.extractfile(member).read()
                info = tarfile.TarInfo(member.name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
    return path


def main(out: Path, conf: Path) -> None:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    os.environ["UTKFACE_ARCHIVE"] = str(sample_archive(out.parent / "renovate_sample.tar.gz"))
    root = out / "project"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(conf, root / "conf")
    shutil.copy(Path(__file__).resolve().parents[1] / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    for layer in LAYERS:
        (root / "data" / layer).mkdir(parents=True)
    bootstrap_project(root)
    for name in ("ingestion", "split", "scratch", "transfer", "evaluation"):
        with KedroSession.create(project_path=root, runtime_params=TINY) as session:
            session.run(pipeline_names=[name])
    for report in (root / "data" / "08_reporting").glob("*.json"):
        shutil.copy(report, out / report.name)
    shutil.copy(root / "data" / "05_model_input" / "face_splits.parquet", out / "face_splits.parquet")


if __name__ == "__main__":  # the ingestion's process pool re-imports this module
    main(Path(sys.argv[1]), Path(sys.argv[2]))
