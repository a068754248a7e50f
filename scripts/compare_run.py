"""Run a tiny ingestion, split, scratch, transfer and evaluation of one version of the code, to
compare its metrics with another version's (``scripts/compare_metrics.py``).

The run uses a sample of the real archive (every 40th member plus the malformed names, about 548
files, written once to ``OUTDIR/../renovate_sample.tar.gz``), tiny sizes (32 px, 2 scratch
epochs, MobileNetV2 at 32 px, 1 fine-tuning epoch; see ``TINY``) and the code on ``PYTHONPATH``,
in a throw-away Kedro project under ``OUTDIR/project`` built from ``CONFDIR`` (so ``data/`` of
this checkout is never touched). It copies ``data/08_reporting/*.json`` and
``face_splits.parquet`` into ``OUTDIR``.

For identical metrics between two versions, run both single-threaded and deterministic::

    mkdir -p /tmp/before && git archive <commit> src conf | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before/src TF_DETERMINISTIC_OPS=1 TF_NUM_INTRAOP_THREADS=1 \
      TF_NUM_INTEROP_THREADS=1 python scripts/compare_run.py /tmp/det_before /tmp/before/conf
    PYTHONPATH=$PWD/src TF_DETERMINISTIC_OPS=1 TF_NUM_INTRAOP_THREADS=1 \
      TF_NUM_INTEROP_THREADS=1 python scripts/compare_run.py /tmp/det_after conf
    python scripts/compare_metrics.py /tmp/det_before /tmp/det_after

Needs ``UTKFACE_ARCHIVE`` (the real ``.tar.gz``) and ``UTKFACE_WEIGHTS_DIR`` (MobileNetV2's
no-top weights). Errors: ``KeyError`` when ``UTKFACE_ARCHIVE`` is unset; Kedro's own errors
(e.g. the project's one-line parameter error) when ``CONFDIR`` does not fit the code.
"""

import argparse
import io
import os
import shutil
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
    out.mkdir(parents=True, exist_ok=True)
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
        if report.is_dir():  # a versioned entry: <name>/<version>/<name>, the newest version
            report = sorted(report.glob(f"*/{report.name}"))[-1]
        shutil.copy(report, out / report.name)
    shutil.copy(root / "data" / "05_model_input" / "face_splits.parquet", out / "face_splits.parquet")


if __name__ == "__main__":  # the ingestion's process pool re-imports this module
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See the module docstring for the full before/after recipe.")
    parser.add_argument("outdir", type=Path, help="where the reports are copied (the project goes in OUTDIR/project)")
    parser.add_argument("confdir", type=Path, help="the conf/ folder of the code version under test")
    args = parser.parse_args()
    main(args.outdir, args.confdir)
