"""`ingestion` and `split` run through Kedro on a sample of the real archive."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from age_gender.lineage import ActionableError
from tests.conftest import REPO, run_kedro

pytestmark = pytest.mark.pipeline

TINY = {"ingestion": {"image_sizes": [32, 48]}, "split": {"test_size": 60, "subset_size": 300}}


def test_ingestion_then_split_through_kedro(kedro_project, sample_archive, monkeypatch):
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(sample_archive))
    run_kedro(kedro_project, "ingestion", TINY)
    run_kedro(kedro_project, "split", TINY)

    data = kedro_project / "data"
    report = json.loads((data / "08_reporting" / "ingestion_report.json").read_text())
    assert report["files_seen"] == report["kept"] + sum(len(v) for v in report["set_aside"].values())
    assert len(report["set_aside"]["malformed_name"]) == 8
    manifest = pd.read_parquet(data / "03_primary" / "face_manifest.parquet")
    cache = np.load(data / "03_primary" / "face_cache" / "48px.npy", mmap_mode="r")
    assert len(manifest) == report["kept"] == len(cache) and cache.shape[1:] == (48, 48, 3)
    assert (data / "08_reporting" / "age_distribution.png").stat().st_size > 10_000

    splits = pd.read_parquet(data / "05_model_input" / "face_splits.parquet")
    counts = splits["split"].value_counts()
    assert (counts["test"], counts["train"], counts["val1"], counts["val2"]) == (60, 240, 30, 30)


def test_missing_archive_stops_the_run_before_any_node(kedro_project, tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(tmp_path / "missing" / "UTKFace.tar.gz"))
    with pytest.raises(DatasetError, match=r"missing/UTKFace\.tar\.gz.*UTKFACE_ARCHIVE"):
        run_kedro(kedro_project, "ingestion", TINY)
    assert not list((kedro_project / "data" / "03_primary").iterdir())


# --- refused before the first node (issue 11, "Errors where the user can act on them") ----------

SMALL = {"ingestion": {"image_sizes": [32], "face_check": {"enabled": False}, "workers": 1},
         "split": {"test_size": 20, "subset_size": 100}}


@contextmanager
def read_only(folder):
    """Make ``folder`` read-only for this process, root included (immutable attribute for root)."""
    root = os.geteuid() == 0
    if root:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        yield folder
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_read_only_reporting_folder_is_refused_before_any_node(kedro_project, sample_archive, monkeypatch):
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(sample_archive))
    reporting = kedro_project / "data" / "08_reporting"
    with read_only(reporting), pytest.raises(ActionableError) as error:
        run_kedro(kedro_project, "ingestion", SMALL)
    message = str(error.value)
    assert "\n" not in message and f"cannot write to '{reporting}'" in message
    assert "ingestion_report" in message and "conf/local/catalog.yml" in message
    assert not list((kedro_project / "data" / "03_primary").iterdir())  # no node ran


def test_training_on_a_splits_table_without_val2_is_refused_before_any_node(kedro_project, sample_archive,
                                                                             monkeypatch):
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(sample_archive))
    run_kedro(kedro_project, "ingestion", SMALL)
    run_kedro(kedro_project, "split", SMALL)
    path = kedro_project / "data" / "05_model_input" / "face_splits.parquet"
    splits = pd.read_parquet(path)
    splits["split"] = splits["split"].astype(str).replace({"val2": "unused"})
    splits.to_parquet(path)
    for pipeline in ("scratch", "scratch_search", "transfer"):
        with pytest.raises(ActionableError, match=r"face_splits has no 'val2' rows.*rerun `kedro run --pipeline split`"):
            run_kedro(kedro_project, pipeline, SMALL)
    assert not list((kedro_project / "data" / "06_models").iterdir())


def test_split_leaving_test_empty_is_refused_and_writes_nothing(kedro_project, sample_archive, monkeypatch):
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(sample_archive))
    run_kedro(kedro_project, "ingestion", SMALL)
    # test_size=0 is refused by the parameter schema; a fraction that rounds to no image passes
    # it and is refused by the split node, before anything is written
    with pytest.raises(ActionableError, match=r"split.test_size=0.0001 leaves the 'test' split empty"):
        run_kedro(kedro_project, "split", {**SMALL, "split": {"test_size": 0.0001, "subset_size": 100}})
    assert not (kedro_project / "data" / "05_model_input" / "face_splits.parquet").exists()


@pytest.mark.parametrize("env, where", [(None, "conf/local"), ("local", "conf/local"), ("smoke", "conf/smoke")])
def test_unwritable_output_fix_names_the_runs_own_conf_folder(tmp_path, env, where):
    """`--env smoke` does not read conf/local: the fix names the catalog the run reads."""
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node
    from kedro_datasets.json import JSONDataset

    from age_gender.hooks import check_outputs_writable

    folder = tmp_path / "reports"
    folder.mkdir()
    catalog = DataCatalog({"report": JSONDataset(filepath=str(folder / "report.json"))})
    pipeline = Pipeline([node(lambda: {}, None, "report", name="make_report")])
    with read_only(folder), pytest.raises(ActionableError, match=rf"elsewhere in {where}/catalog\.yml$"):
        check_outputs_writable(pipeline, catalog, env=env)


@pytest.mark.parametrize("kind", ["versioned", "partitioned"])
def test_unwritable_folder_of_versions_or_partitions_is_refused_before_any_node(tmp_path, kind):
    """A versioned dataset writes into <filepath>/<timestamp>/ and a partitioned one into its own
    folder: an immutable one of those (its parent writable) was found only when saving, after
    training (`distilled.keras` under --env smoke)."""
    from kedro.io import DataCatalog, Version
    from kedro.pipeline import Pipeline, node
    from kedro_datasets.json import JSONDataset
    from kedro_datasets.partitions import PartitionedDataset

    folder = tmp_path / "models" / "model.json"
    folder.mkdir(parents=True)
    dataset = (JSONDataset(filepath=str(folder), version=Version(None, None)) if kind == "versioned"
               else PartitionedDataset(path=str(folder), dataset="json.JSONDataset", filename_suffix=".json"))
    from age_gender.hooks import check_outputs_writable

    catalog = DataCatalog({"report": dataset})
    pipeline = Pipeline([node(lambda: {}, None, "report", name="make_report")])
    with read_only(folder), pytest.raises(ActionableError, match=rf"cannot write to '{folder}'.*writes report"):
        check_outputs_writable(pipeline, catalog, env="smoke")
    check_outputs_writable(pipeline, catalog, env="smoke")  # writable again: passes


def test_failed_kedro_run_ends_with_one_line_naming_cause_and_fix(kedro_project, sample_archive):
    """Through the real CLI: the traceback may come first, the last line is the cause and fix."""
    reporting = kedro_project / "data" / "08_reporting"
    env = {**os.environ, "UTKFACE_ARCHIVE": str(sample_archive),
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with read_only(reporting):
        result = subprocess.run([sys.executable, "-m", "kedro", "run", "--pipeline", "ingestion"],
                                cwd=kedro_project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ERROR: cannot write to '{reporting}' (Operation not permitted), where this run writes "
                    "age_distribution_plot, ingestion_report. Fix: make "
                    f"'{reporting}' writable, or point these catalog entries elsewhere in "
                    "conf/local/catalog.yml."), last


def test_a_run_before_the_run_that_writes_its_inputs_is_refused_naming_it(kedro_project, sample_archive,
                                                                         monkeypatch):
    """`split` (and `transfer`) on a fresh project: one line naming what is missing and the
    pipelines to run first, before any node, instead of a dataset traceback."""
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(sample_archive))
    with pytest.raises(ActionableError, match=r"^face_cache, face_manifest, ingestion_report do not exist yet "
                                              r"\(this run reads them\): run `kedro run --pipeline ingestion` first$"):
        run_kedro(kedro_project, "split", TINY)
    # the commands named carry the run's environment: the default one's outputs would not help
    with pytest.raises(ActionableError, match=r"\(this run reads them\): run `kedro run --env smoke --pipeline "
                                              r"ingestion` first$"):
        run_kedro(kedro_project, "split", TINY, env="smoke")
    with pytest.raises(ActionableError, match=r"face_splits.* do not exist yet .*: run `kedro run --pipeline "
                                              r"ingestion` then `kedro run --pipeline split` first$"):
        run_kedro(kedro_project, "transfer", TINY)
    assert not list((kedro_project / "data" / "05_model_input").glob("*.parquet"))
    # through the real CLI: a refusal before any node is its one line, without a traceback
    env = {**os.environ, "UTKFACE_ARCHIVE": str(sample_archive),
           "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("AGE_GENDER_TRACEBACK", None)
    done = subprocess.run([sys.executable, "-m", "kedro", "run", "--env", "smoke", "--pipeline", "split"],
                          cwd=kedro_project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "ERROR: face_cache, face_manifest, ingestion_report do not exist yet (this run reads them). "
        "Fix: run `kedro run --env smoke --pipeline ingestion` first."), done.stderr[-500:]
