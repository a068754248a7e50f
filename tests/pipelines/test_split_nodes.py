from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from age_gender.lineage import ActionableError, stamp_cache
from age_gender.pipelines.split import nodes


def split_faces(manifest, params):
    """The node with the image cache its manifest was ingested with."""
    cache = stamp_cache(manifest, {"8px": np.zeros((len(manifest), 8, 8, 3), np.uint8)})
    return nodes.split_faces(manifest, cache, params)

REPO = Path(__file__).resolve().parents[2]
PARAMS = {"seed": 7, "test_size": 200, "subset_size": 1000,
          "fractions": {"train": 0.8, "val1": 0.1, "val2": 0.1},
          "age_band_edges": [0, 5, 13, 20, 30, 40, 50, 60, 70, 200]}


@pytest.fixture()
def manifest():
    rng = np.random.default_rng(0)
    n = 3000
    return pd.DataFrame({"file_name": [f"{i:05d}.jpg" for i in rng.permutation(n)],
                         "age": rng.integers(1, 100, n), "gender": rng.integers(0, 2, n),
                         "race": rng.integers(0, 5, n), "sha256": [f"{i:064x}" for i in range(n)]})


def test_split_sizes_disjoint_and_cover(manifest):
    table, summary = split_faces(manifest, PARAMS)
    assert summary["counts"] == {"train": 800, "val1": 100, "val2": 100, "test": 200, "unused": 1800}
    assert table["file_name"].is_unique and len(table) == len(manifest)
    assert (manifest.loc[table["cache_index"], "file_name"].to_numpy() == table["file_name"]).all()


def test_same_parameters_same_split_and_seed_changes_it(manifest):
    first, _ = split_faces(manifest, PARAMS)
    shuffled = manifest.sample(frac=1, random_state=3)
    again, _ = split_faces(shuffled.reset_index(drop=True), PARAMS)
    key = ["file_name", "split"]
    assert first[key].sort_values("file_name").reset_index(drop=True).equals(
        again[key].sort_values("file_name").reset_index(drop=True))
    other, _ = split_faces(manifest, {**PARAMS, "seed": 8})
    assert not first["split"].equals(other["split"])


def test_splits_are_stratified_by_gender_and_age(manifest):
    table, _ = split_faces(manifest, {**PARAMS, "subset_size": "all", "test_size": 0.2})
    overall = table["gender"].mean()
    for name in ("train", "val1", "val2", "test"):
        part = table[table["split"] == name]
        assert abs(part["gender"].mean() - overall) < 0.02
        assert abs(part["age"].mean() - table["age"].mean()) < 1.5


@pytest.mark.parametrize("bad", [{"fractions": {"train": 0.9, "val1": 0.2, "val2": 0.1}},
                                 {"subset_size": 10**6}, {"test_size": -3},
                                 {"age_band_edges": [0, 50]}])
def test_bad_split_parameters_are_clear_errors(manifest, bad):
    with pytest.raises(ValueError, match="split"):
        split_faces(manifest, {**PARAMS, **bad})


def test_table_carries_the_ingestion_it_indexes(manifest):
    cache = stamp_cache(manifest, {"8px": np.zeros((len(manifest), 8, 8, 3), np.uint8)})
    table, summary = nodes.split_faces(manifest, cache, PARAMS)
    assert (table["ingestion_id"] == cache.ingestion_id).all()
    assert summary["ingestion_id"] == cache.ingestion_id


@pytest.mark.parametrize(("bad", "empty"), [({"test_size": 0}, "test"), ({"subset_size": 0}, "train"),
                                            ({"fractions": {"train": 0.9, "val1": 0.1, "val2": 0.0}}, "val2"),
                                            ({"subset_size": 2}, "val1")])
def test_a_split_left_empty_is_refused_before_training(manifest, bad, empty):
    with pytest.raises(ActionableError, match=f"leaves the '{empty}' split empty"):
        split_faces(manifest, {**PARAMS, **bad})


def test_base_split_on_the_real_archive_labels_holds_3000_test_faces_and_the_study_subset(utkface_archive):
    """conf/base's split on every labelled name of the real archive: a stratified test split of
    3,000 faces, the study's 5,000-image subset cut 80/10/10 beside it, nothing empty."""
    import tarfile

    import yaml

    from age_gender.faces import parse_utkface_name

    labels = []
    with tarfile.open(utkface_archive) as archive:
        for name in archive.getnames():
            label = parse_utkface_name(name)
            if not isinstance(label, str):
                labels.append((name.rsplit("/", 1)[-1], label.age, label.gender, label.race))
    frame = pd.DataFrame(labels, columns=["file_name", "age", "gender", "race"]).drop_duplicates("file_name")
    frame["sha256"] = [f"{i:064x}" for i in range(len(frame))]
    params = yaml.safe_load((REPO / "conf" / "base" / "parameters_split.yml").read_text())["split"]
    table, summary = split_faces(frame.reset_index(drop=True), params)
    assert params["test_size"] == 3000
    counts = summary["counts"]
    assert counts["test"] == 3000 and counts["train"] == 4000 and counts["val1"] == 500 and counts["val2"] == 500
    assert counts["unused"] == len(frame) - 8000 > 10000
    test = table[table["split"] == "test"]
    assert abs(test["gender"].mean() - frame["gender"].mean()) < 0.01  # stratified on gender x age band
    assert abs(test["age"].median() - frame["age"].median()) <= 1
