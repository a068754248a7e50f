"""`ingestion` and `split` run through Kedro on a sample of the real archive."""

import json

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from tests.conftest import run_kedro

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
