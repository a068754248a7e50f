"""Label sources other than UTKFace names (issue #15): label tables, folder layouts, age ranges,
split lists, built from real archive images; first through the dataset and the ingestion node,
then through Kedro by editing only conf/local/catalog.yml of a throw-away project."""

from __future__ import annotations

import functools
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from age_gender.datasets import FaceSourceDataset
from age_gender.faces import UTKFACE_NAME, FaceLabel, parse_utkface_name
from age_gender.pipelines.ingestion.nodes import decode_faces
from tests.conftest import make_project, run_kedro, saved

PARAMS = {"image_sizes": [32], "max_pixels": 10**6, "workers": 1, "exclude_files": [],
          "conflicting_duplicates": "keep_first",
          "face_check": {"enabled": False, "drop_suspects": False, "min_neighbors": 3}}
GENDER_WORDS = ("Male", "Female")
FAIRFACE_BINS = [(0, 2), (3, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69)]


@functools.lru_cache(maxsize=2)
def _unseen(archive: str, offset: int) -> tuple[tuple[str, bytes], ...]:
    found = []
    with tarfile.open(archive) as tar:
        for index, member in enumerate(tar):
            if len(found) >= 160:
                break
            if member.isfile() and index % 40 == offset and UTKFACE_NAME.fullmatch(member.name.split("/")[-1]):
                found.append((member.name, tar.extractfile(member).read()))
    return tuple(found)


def unseen_archive_members(archive: Path, count: int, offset: int = 20) -> list[tuple[str, bytes]]:
    """``count`` well-named faces of the real archive that the ``archive_members`` sample (every
    40th member) does not hold: images no model of a sample project trained on."""
    members = _unseen(str(archive), offset)
    assert len(members) >= count
    return list(members[:count])


def _faces(archive_members, count: int) -> list[tuple[str, bytes, FaceLabel]]:
    good = [(n, d) for n, d in archive_members.items() if UTKFACE_NAME.fullmatch(n.split("/")[-1])]
    return [(n.split("/")[-1], d, parse_utkface_name(n)) for n, d in good[:count]]


def _fairface_age(age: int) -> str:
    return next((f"{low}-{high}" for low, high in FAIRFACE_BINS if low <= age <= high), "more than 70")


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 400, text
    return text


# ---------------------------------------------------------------- UTKFace names without .chip.jpg


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".jpg.chip.jpg"])
def test_utkface_label_names_with_or_without_chip_suffix_are_labelled(suffix):
    assert parse_utkface_name(f"UTKFace/26_1_2_20170116174525125{suffix}") == FaceLabel(26, 1, 2, "20170116174525125")


def test_a_folder_of_plain_jpg_utkface_names_is_ingested(tmp_path, archive_members):
    faces = _faces(archive_members, 6)
    for name, data, _ in faces:
        (tmp_path / name.replace(".jpg.chip.jpg", ".jpg")).write_bytes(data)
    (tmp_path / "26_1_20170116174525125.jpg").write_bytes(faces[0][1])  # three fields: still refused
    manifest, _, findings = decode_faces(FaceSourceDataset(str(tmp_path)).load(), PARAMS)
    assert len(manifest) == 6 and findings["set_aside"] == {"malformed_name": ["26_1_20170116174525125.jpg"]}
    assert sorted(manifest["age"]) == sorted(label.age for _, _, label in faces)


# ---------------------------------------------------------------- (a) a CSV with other column names


def _table_source(tmp_path, archive_members, count=12):
    faces = _faces(archive_members, count)
    images = tmp_path / "dataset"
    (images / "photos").mkdir(parents=True)
    rows = []
    for i, (_, data, label) in enumerate(faces):
        (images / "photos" / f"{i:03d}.jpg").write_bytes(data)
        rows.append({"img_path": f"photos/{i:03d}.jpg", "Age": label.age, "Sex": GENDER_WORDS[label.gender]})
    return faces, images, rows


def test_label_table_with_other_column_names_and_words_for_genders(tmp_path, archive_members):
    faces, images, rows = _table_source(tmp_path, archive_members)
    rows[1]["Age"] = None               # missing age: set aside, never guessed
    rows[2]["Sex"] = "unknown"          # a value no map covers
    rows[3]["Age"] = 130                # above the oldest documented age
    del rows[4]                         # an image no row names
    rows.append({"img_path": "photos/999.jpg", "Age": 30, "Sex": "Male"})  # a row without image
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    dataset = FaceSourceDataset(str(images), labels={
        "table": {"type": "pandas.CSVDataset", "filepath": str(tmp_path / "labels.csv")},
        "columns": {"file": "img_path", "age": "Age", "gender": "Sex"},
        "values": {"gender": {"Male": 0, "Female": 1}}})
    manifest, _, findings = decode_faces(dataset.load(), PARAMS)
    assert findings["set_aside"] == {"missing_label": ["photos/001.jpg"], "unmapped_label": ["photos/002.jpg"],
                                     "implausible_age": ["photos/003.jpg"], "no_label_row": ["photos/004.jpg"]}
    assert "'unknown' is not in values.gender" in findings["details"]["photos/002.jpg"]
    assert findings["label_source"]["rows_without_image"] == 1
    assert findings["label_source"]["rows_without_image_examples"] == ["photos/999.jpg"]
    truth = {f"photos/{i:03d}.jpg": label for i, (_, _, label) in enumerate(faces)}
    assert len(manifest) == 8 and list(manifest["file_name"]) == list(manifest["member"])  # whole paths
    for row in manifest.itertuples():
        assert (row.age, row.gender, row.race) == (truth[row.member].age, truth[row.member].gender, -1)
        assert row.age_low == row.age_high == row.age and row.given_split == ""


@pytest.mark.parametrize("change, fragment", [
    (lambda rows: [{k: v for k, v in r.items() if k != "Sex"} for r in rows], "no column 'Sex' (labels.columns.gender)"),
    (lambda rows: rows + [dict(rows[0])], "lists 'photos/000.jpg' twice (rows 2 and 14)"),
    (lambda rows: rows + [{**rows[0], "img_path": "../outside.jpg"}], "leaves the image folder"),
    (lambda rows: rows + [{**rows[0], "img_path": "/etc/passwd"}], "leaves the image folder"),
])
def test_a_malformed_label_table_is_one_line_before_any_image_is_read(tmp_path, archive_members, change, fragment):
    _, images, rows = _table_source(tmp_path, archive_members)
    pd.DataFrame(change(rows)).to_csv(tmp_path / "labels.csv", index=False)
    dataset = FaceSourceDataset(str(images), max_members=1, labels={
        "table": {"type": "pandas.CSVDataset", "filepath": str(tmp_path / "labels.csv")},
        "columns": {"file": "img_path", "age": "Age", "gender": "Sex"},
        "values": {"gender": {"Male": 0, "Female": 1}}})
    with pytest.raises(DatasetError) as caught:  # max_members=1: had images been read, that error came first
        dataset.load()
    assert fragment in _one_line(caught.value)


@pytest.mark.parametrize("labels, split_lists, fragment", [
    ({"table": {}, "colums": {}}, None, "unknown key"),
    ({"table": {}, "values": {"gender": {"M": "male"}}}, None, "values.gender maps to 'male', which is not 0"),
    ({"layout": "{age}/{name}"}, None, "must use {age}, {gender} and {name}"),
    (None, {"train": {}}, "split_lists needs a 'train' and a 'test' list"),
])
def test_a_bad_label_block_is_refused_when_the_catalog_is_read(tmp_path, labels, split_lists, fragment):
    with pytest.raises(DatasetError) as caught:
        FaceSourceDataset(str(tmp_path), labels=labels, split_lists=split_lists)
    assert fragment in _one_line(caught.value)


# ---------------------------------------------------------------- (b) FairFace-like: age ranges


def _fairface(root: Path, faces, split: bool = True) -> Path:
    rows = []
    for i, (_, data, label) in enumerate(faces):
        part = "train" if i % 4 else "val"
        (root / part).mkdir(parents=True, exist_ok=True)
        (root / part / f"{i}.jpg").write_bytes(data)
        rows.append({"file": f"{part}/{i}.jpg", "age": _fairface_age(label.age),
                     "gender": GENDER_WORDS[label.gender], "race": ["White", "Black", "East Asian", "Indian",
                                                                    "Latino_Hispanic"][label.race],
                     **({"split": part} if split else {})})
    pd.DataFrame(rows).to_csv(root / "fairface_labels.csv", index=False)
    return root / "fairface_labels.csv"


FAIRFACE_LABELS = {"columns": {"file": "file", "age": "age", "gender": "gender", "race": "race"},
                   "values": {"gender": {"Male": 0, "Female": 1}, "age": {"more than 70": "70-116"},
                              "race": {"White": 0, "Black": 1, "East Asian": 2, "Indian": 3,
                                       "Latino_Hispanic": 4}}}


def test_age_ranges_are_kept_as_intervals_and_covered_by_the_ingestion_id(tmp_path, archive_members):
    from age_gender.lineage import ingestion_id

    faces = _faces(archive_members, 16)
    table = _fairface(tmp_path / "fairface", faces, split=False)
    labels = {**FAIRFACE_LABELS, "table": {"type": "pandas.CSVDataset", "filepath": str(table)}}
    manifest, _, findings = decode_faces(FaceSourceDataset(str(tmp_path / "fairface"), labels=labels).load(), PARAMS)
    assert len(manifest) == 16 and findings["label_source"]["age_ranges"] > 0
    assert "midpoint" in findings["label_source"]["age_point_label"]
    truth = {f"{'train' if i % 4 else 'val'}/{i}.jpg": label for i, (_, _, label) in enumerate(faces)}
    for row in manifest.itertuples():
        assert row.age_low <= truth[row.member].age <= row.age_high
        assert row.age == (row.age_low + row.age_high) // 2 and row.race == truth[row.member].race
    # two label sets with the same midpoints but other ranges are other ingestions
    wider = manifest.assign(age_high=manifest["age_high"] + 2, age_low=manifest["age_low"] - 2)
    assert ingestion_id(wider, [32]) != ingestion_id(manifest, [32])


def test_share_of_predictions_inside_the_labelled_age_range():
    from age_gender.metrics import Bootstrap, age_range_metrics

    table = pd.DataFrame({"age_low": [20, 20, 0, 70], "age_high": [29, 29, 2, 116],
                          "age_pred": [29.9, 30.0, -0.5, 80.0]})
    result = age_range_metrics(table, Bootstrap(resamples=200))
    assert result["age_in_range_share"] == 0.5 and result["n"] == 4
    low, high = result["age_in_range_share_ci"]
    assert 0 <= low <= 0.5 <= high <= 1


# ---------------------------------------------------------------- (c) AFAD-like folder tree


def _afad(root: Path, faces) -> None:
    for i, (_, data, label) in enumerate(faces):
        folder = root / "AFAD-Full" / str(label.age) / ("111" if label.gender == 0 else "112")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(data)
    (root / "AFAD-Full" / "README.jpg").write_bytes(faces[0][1])  # not in the layout


AFAD_LABELS = {"layout": "{age}/{gender}/{name}", "values": {"gender": {"111": 0, "112": 1}}}


def test_folder_layout_gives_age_and_gender_codes(tmp_path, archive_members):
    faces = _faces(archive_members, 12)
    _afad(tmp_path, faces)
    manifest, _, findings = decode_faces(FaceSourceDataset(str(tmp_path), labels=AFAD_LABELS).load(), PARAMS)
    assert findings["set_aside"] == {"malformed_name": ["AFAD-Full/README.jpg"]}
    assert "does not fit labels.layout" in findings["details"]["AFAD-Full/README.jpg"]
    for row in manifest.itertuples():
        label = faces[int(row.member.rsplit("/", 1)[-1].split(".")[0])][2]
        assert (row.age, row.gender) == (label.age, label.gender)


# ---------------------------------------------------------------- (d) published train / test lists


def _protocol(root: Path, faces, missing: int = 3) -> dict:
    images = root / "images" / "UTKFace"
    images.mkdir(parents=True)
    for name, data, _ in faces:
        (images / name).write_bytes(data)
    names = [name for name, _, _ in faces]
    cut = len(names) * 3 // 4
    train = names[:cut] + [f"9{i}_0_0_20170101000000000.jpg.chip.jpg" for i in range(missing)]
    test = names[cut:] + [f"8{i}_1_0_20170101000000000.jpg.chip.jpg" for i in range(missing - 1)]
    pd.DataFrame({"file": train}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"file": test}).to_csv(root / "test.csv", index=False)
    return {"train": {"type": "pandas.CSVDataset", "filepath": str(root / "train.csv")},
            "test": {"type": "pandas.CSVDataset", "filepath": str(root / "test.csv")}}


def test_split_lists_give_each_listed_file_its_split_and_count_the_missing(tmp_path, archive_members):
    faces = _faces(archive_members, 20)
    lists = _protocol(tmp_path, faces)
    manifest, _, findings = decode_faces(
        FaceSourceDataset(str(tmp_path / "images"), split_lists=lists).load(), PARAMS)
    assert findings["label_source"]["split_lists"]["train"] == {
        "listed": 18, "found": 15, "missing": 3,
        "missing_examples": [f"9{i}_0_0_20170101000000000.jpg.chip.jpg" for i in range(3)]}
    assert {k: v for k, v in findings["label_source"]["split_lists"]["test"].items() if k != "missing_examples"} \
        == {"listed": 7, "found": 5, "missing": 2}
    assert manifest["given_split"].value_counts().to_dict() == {"train": 15, "test": 5}


def test_a_file_in_both_split_lists_is_refused(tmp_path, archive_members):
    faces = _faces(archive_members, 8)
    lists = _protocol(tmp_path, faces)
    pd.DataFrame({"file": [faces[0][0]]}).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DatasetError) as caught:
        FaceSourceDataset(str(tmp_path / "images"), split_lists=lists).load()
    assert "a file belongs to one split" in _one_line(caught.value)


# ---------------------------------------------------------------- through Kedro, conf/local only

TINY = {
    "ingestion": {"image_sizes": [32], "face_check": {"enabled": False, "drop_suspects": False, "min_neighbors": 3}},
    "split": {"subset_size": "all"},
    "scratch_training": {"input_size": 32, "epochs": 1, "patience": 1, "batch_size": 32,
                         "width_multiplier": 0.125, "warmup_epochs": 0},
    "scratch": {"architecture": {"conv_pairs": 2, "dense_layers": 1, "dense_units": 16, "split_point": 1}},
    "evaluation": {"bootstrap": {"resamples": 200, "confidence": 0.95, "seed": 0}},
}


def _catalog(project: Path, entries: dict) -> None:
    import yaml

    (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(entries, sort_keys=False))


def _report(project: Path, name: str) -> dict:
    return json.loads(saved(project / "data" / "08_reporting" / name).read_text())  # newest version if versioned


@pytest.fixture(scope="module")
def protocol_project(tmp_path_factory, archive_members):
    """A published-protocol reproduction: train and test lists of file names (some missing),
    trained for one epoch and evaluated, then a FairFace-like table evaluated externally."""
    root = tmp_path_factory.mktemp("protocol")
    project = make_project(root / "project")
    faces = _faces(archive_members, 150)
    lists = _protocol(root, faces, missing=4)
    entry = {"type": "age_gender.datasets.FaceSourceDataset", "filepath": str(root / "images"),
             "split_lists": lists}
    _catalog(project, {"utkface_raw": entry})
    for pipeline in ("ingestion", "split", "scratch", "evaluation"):
        run_kedro(project, pipeline, TINY)
    return project, faces, entry


def test_a_published_protocol_is_reproduced_by_editing_the_catalog_only(protocol_project):
    project, faces, _ = protocol_project
    summary = _report(project, "split_summary.json")
    lists = summary["predefined"]["split_lists"]
    assert lists["train"] == {"listed": 116, "found": 112, "missing": 4}
    assert lists["test"] == {"listed": 41, "found": 38, "missing": 3}
    splits = pd.read_parquet(project / "data" / "05_model_input" / "face_splits.parquet")
    test_files = set(splits.loc[splits["split"] == "test", "file_name"])
    assert test_files == {name for name, _, _ in faces[112:]} & set(splits["file_name"])
    counts = summary["counts"]
    assert counts["test"] == len(test_files) and counts["unused"] == 0
    assert counts["train"] + counts["val1"] + counts["val2"] == summary["predefined"]["kept_per_given_split"]["train"]
    metrics = _report(project, "evaluation_metrics.json")
    assert metrics["scratch"]["n"] == counts["test"]


def test_a_trained_model_is_evaluated_on_a_fairface_style_table(protocol_project, utkface_archive, tmp_path):
    project, faces, protocol = protocol_project
    trained = {data for _, data, _ in faces}  # the archive holds byte-identical copies under other names
    unseen = [(n.split("/")[-1], d, parse_utkface_name(n)) for n, d in unseen_archive_members(utkface_archive, 60)
              if d not in trained][:40]
    seen = faces[:5]  # faces the model trained on, offered under other names
    table = _fairface(tmp_path / "fairface", unseen + seen, split=False)
    _catalog(project, {
        "utkface_raw": protocol,
        "external_raw": {"type": "age_gender.datasets.FaceSourceDataset", "filepath": str(tmp_path / "fairface"),
                         "labels": {**FAIRFACE_LABELS, "table": {"type": "pandas.CSVDataset", "filepath": str(table)}}}})
    run_kedro(project, "evaluate_external", TINY)
    overlap = _report(project, "external/overlap_report.json")
    assert overlap["in_training_data"] == 5 and overlap["in_training_data_by_split"]["train"] \
        + overlap["in_training_data_by_split"]["val1"] + overlap["in_training_data_by_split"]["val2"] == 5
    result = _report(project, "external/external_comparison.json")
    scratch = result["unseen"]["scratch"]
    assert scratch["n"] == 40 and scratch["age_labels"] == "ranges" and "age_mae" not in scratch
    predictions = pd.read_parquet(project / "data" / "07_model_output" / "external" / "all_predictions.parquet")
    inside = (predictions["age_pred"] >= predictions["age_low"]) & (predictions["age_pred"] < predictions["age_high"] + 1)
    assert scratch["age_in_range_share"] == pytest.approx(inside.mean(), abs=1e-4)
    low, high = scratch["age_in_range_share_ci"]
    assert low <= scratch["age_in_range_share"] <= high
    text = (project / "data" / "08_reporting" / "external" / "external_comparison.md").read_text()
    assert "inside the labelled range" in text and "no age MAE is given" in text
    assert "45 kept external images; 5 of them have the same bytes as a face of the training data" in text
    # beside the held-out test numbers of the same training run of the model (evaluation has run)
    held_out = _report(project, "test_metrics/scratch.json")
    assert result["held_out_test"]["scratch"]["age_mae"] == held_out["age_mae"]
    assert "| scratch | training dataset, held-out test split | 38 |" in text
    # the single-dataset form writes the side-by-side report too, with its one dataset
    side_by_side = _report(project, "external_report.json")["datasets"]
    assert list(side_by_side) == ["external_raw"] and side_by_side["external_raw"]["unseen"] == result["unseen"]


@pytest.mark.parametrize("form", ["csv_table", "afad_layout", "fairface_split_column"])
def test_other_label_forms_ingest_and_split_through_kedro(form, tmp_path, archive_members):
    """(a) and (c) through ingestion and split; FairFace with its own split column through
    training and evaluation too."""
    project = make_project(tmp_path / "project")
    faces = _faces(archive_members, 120)
    if form == "csv_table":
        _, images, rows = _table_source(tmp_path, archive_members, 120)
        pd.DataFrame(rows).to_parquet(tmp_path / "labels.parquet")
        entry = {"filepath": str(images), "labels": {
            "table": {"type": "pandas.ParquetDataset", "filepath": str(tmp_path / "labels.parquet")},
            "columns": {"file": "img_path", "age": "Age", "gender": "Sex"},
            "values": {"gender": {"Male": 0, "Female": 1}}}}
    elif form == "afad_layout":
        _afad(tmp_path / "afad", faces)
        entry = {"filepath": str(tmp_path / "afad"), "labels": AFAD_LABELS}
    else:
        table = _fairface(tmp_path / "fairface", faces)
        entry = {"filepath": str(tmp_path / "fairface"), "labels": {
            **FAIRFACE_LABELS, "columns": {**FAIRFACE_LABELS["columns"], "split": "split"},
            "values": {**FAIRFACE_LABELS["values"], "split": {"train": "train", "val": "test"}},
            "table": {"type": "pandas.CSVDataset", "filepath": str(table)}}}
    _catalog(project, {"utkface_raw": {"type": "age_gender.datasets.FaceSourceDataset", **entry}})
    params = {**TINY, "split": {"test_size": 20, "subset_size": "all"}}
    run_kedro(project, "ingestion", params)
    run_kedro(project, "split", params)
    report = _report(project, "ingestion_report.json")
    assert report["kept"] >= 115 and report["label_source"]["form"] in ("table", "layout")
    splits = pd.read_parquet(project / "data" / "05_model_input" / "face_splits.parquet")
    assert splits["split"].isin(["train", "val1", "val2", "test"]).all() and len(splits) == report["kept"]
    summary = _report(project, "split_summary.json")
    if form == "fairface_split_column":  # trained and judged on its own split, ages as ranges
        assert summary["counts"]["test"] == int(np.sum([i % 4 == 0 for i in range(120)]))
        assert summary["predefined"]["kept_per_given_split"] == {"test": 30, "train": 90}
        assert {"age_low", "age_high"} <= set(splits.columns)
        run_kedro(project, "scratch", params)
        run_kedro(project, "evaluation", params)
        scratch = _report(project, "evaluation_metrics.json")["scratch"]
        predictions = pd.read_parquet(saved(project / "data" / "07_model_output" / "evaluation_predictions.parquet"))
        inside = (predictions["age_pred"] >= predictions["age_low"]) & (predictions["age_pred"] < predictions["age_high"] + 1)
        assert scratch["n"] == 30 and scratch["age_in_range"]["n"] == 30
        assert scratch["age_in_range"]["age_in_range_share"] == pytest.approx(inside.mean(), abs=1e-4)
        # model_comparison shows the share inside the range, not an MAE against midpoints
        comparison = _report(project, "model_comparison.json")
        row = next(r for r in comparison["models"] if r["model"] == "scratch")
        assert row["age_labels"] == "ranges" and row["age_mae"] is None
        assert row["age_in_range_share"] == scratch["age_in_range"]["age_in_range_share"]
        assert row["age_midpoint_mae"] == scratch["age"]["mae"]
        low, high = row["age_in_range_share_ci"]
        text = saved(project / "data" / "08_reporting" / "model_comparison.md").read_text()
        share = f"{100 * row['age_in_range_share']:.2f} [{100 * low:.2f}, {100 * high:.2f}] % inside the labelled range"
        assert "| scratch | " in text and share in text and "no age MAE is given" in text
        assert f"{scratch['age']['mae']:.3f}" not in text  # the midpoint MAE is not shown as an age MAE
    else:
        assert summary["counts"]["test"] == 20 and "predefined" not in summary


def test_an_unreadable_label_table_is_one_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    dataset = FaceSourceDataset(str(tmp_path), labels={
        "table": {"type": "pandas.CSVDataset", "filepath": str(tmp_path / "nowhere.csv")}})
    with pytest.raises(DatasetError) as caught:
        dataset.load()
    assert "cannot read labels.table" in _one_line(caught.value)


def _training(archive_members, count):
    from age_gender.lineage import stamp_cache, stamp_splits

    faces = _faces(archive_members, count)
    manifest = pd.DataFrame({"file_name": [n for n, _, _ in faces], "age": [f.age for _, _, f in faces],
                             "gender": [f.gender for _, _, f in faces], "race": [f.race for _, _, f in faces],
                             "sha256": [__import__("hashlib").sha256(d).hexdigest() for _, d, _ in faces]})
    cache = stamp_cache(manifest, {"32px": np.zeros((count, 32, 32, 3), np.uint8)})
    splits = manifest[["file_name", "age", "gender", "race"]].assign(
        cache_index=np.arange(count), split=(["train", "val1", "val2", "test", "unused"] * count)[:count])
    return faces, manifest, cache, stamp_splits(splits, cache.ingestion_id, {"seed": 1})


@pytest.mark.parametrize("policy", ["drop", "score_apart"])
def test_external_images_in_the_training_data_are_found_by_content_and_counted_per_split(archive_members, policy):
    from age_gender.pipelines.evaluate_external.nodes import find_overlap

    faces, manifest, cache, splits = _training(archive_members, 10)
    external = pd.DataFrame({"file_name": ["x1.jpg", "x2.jpg", "x3.jpg"], "member": ["x1.jpg", "x2.jpg", "x3.jpg"],
                             "age": [30, 40, 50], "age_low": [30, 40, 50], "age_high": [30, 40, 50],
                             "gender": [0, 1, 0], "race": [-1, -1, -1],
                             "sha256": [manifest["sha256"][0], manifest["sha256"][3], "f" * 64]})
    rows, report = find_overlap(external, manifest, cache, splits, {"overlap": policy})
    assert report["in_training_data"] == 2 and report["policy"] == policy
    assert report["in_training_data_by_split"] == {"train": 1, "val1": 0, "val2": 0, "test": 1, "unused": 0}
    assert list(rows["seen_in"]) == (["", ] if policy == "drop" else ["train", "test", ""])
    assert list(rows["cache_index"]) == ([2] if policy == "drop" else [0, 1, 2])


def test_a_given_val_part_becomes_val1_and_val2_and_the_train_part_stays_train():
    from age_gender.lineage import stamp_cache
    from age_gender.pipelines.split.nodes import split_faces

    n = 200
    rng = np.random.default_rng(0)
    given = np.array(["train"] * 120 + ["val"] * 40 + ["test"] * 30 + ["unused"] * 10)
    manifest = pd.DataFrame({"file_name": [f"{i:03d}.jpg" for i in range(n)], "sha256": [f"{i:064x}" for i in range(n)],
                             "age": rng.integers(1, 90, n), "gender": rng.integers(0, 2, n), "race": -1,
                             "given_split": given})
    cache = stamp_cache(manifest, {"32px": np.zeros((n, 32, 32, 3), np.uint8)})
    params = {"seed": 3, "test_size": 5, "subset_size": "all", "fractions": {"train": 0.8, "val1": 0.1, "val2": 0.1},
              "age_band_edges": [0, 20, 40, 60, 200]}
    table, summary = split_faces(manifest, cache, params)
    split = table.set_index("file_name")["split"].astype(str)
    names = manifest["file_name"]
    assert (split[names[given == "train"]] == "train").all() and (split[names[given == "test"]] == "test").all()
    assert set(split[names[given == "val"]]) == {"val1", "val2"} and summary["counts"]["val1"] == 20
    assert summary["counts"]["unused"] == 10 and summary["predefined"]["kept_per_given_split"]["val"] == 40
    again, _ = split_faces(manifest, cache, params)
    assert again.equals(table)  # seeded


def test_held_out_numbers_of_an_earlier_training_are_not_shown_beside_external_ones():
    from age_gender.pipelines.evaluate_external.nodes import _held_out

    info = {"model": "scratch", "split_id": "a", "train_seconds": 12.5}
    headline = {"model": "scratch", "n": 5, "gender_accuracy": 0.8, "age_mae": 7.0, "split_id": "a", "train_seconds": 12.5}
    assert _held_out("scratch", headline, info)["age_mae"] == 7.0
    assert _held_out("scratch", headline, {**info, "train_seconds": 13.0}) is None  # retrained since
    assert _held_out("scratch", None, info) is None


def test_label_values_are_read_strictly_and_never_raise():
    from age_gender.labels import ValueMaps

    maps = ValueMaps.from_config({"gender": {"m": 0, "f": 1}, "age": {"more than 70": "70-116"}}, "x")
    assert maps.age("20-29") == (20, 29) and maps.age(25.0) == (25, 25) and maps.age("more than 70") == (70, 116)
    assert maps.age("9" * 5000).kind == "implausible_age" and maps.age("29-20").kind == "unmapped_label"
    assert maps.age("25.5").kind == "unmapped_label" and maps.age(float("nan")).kind == "missing_label"
    assert maps.code("gender", "f", (0, 1)) == 1 and maps.code("gender", "F", (0, 1)).kind == "unmapped_label"
    assert ValueMaps().code("gender", "1" * 5000, (0, 1)).kind == "unmapped_label"
    assert ValueMaps().code("gender", 1.0, (0, 1)) == 1


def test_several_external_datasets_are_reported_side_by_side(protocol_project, utkface_archive, tmp_path):
    """external.datasets lists two catalog entries (conf/local only): a UTKFace-named folder with
    3 training faces in it, and a FairFace-style CSV with age ranges; one namespaced pipeline per
    dataset, then external_report puts them side by side."""
    import yaml

    project, faces, protocol = protocol_project
    trained = {data for _, data, _ in faces}
    unseen = [(n.split("/")[-1], d, parse_utkface_name(n)) for n, d in unseen_archive_members(utkface_archive, 100)
              if d not in trained][:40]
    folder = tmp_path / "utk_copy"
    folder.mkdir()
    for name, data, _ in unseen[:20] + faces[:3]:  # 3 faces the model trained on, under their own names
        (folder / name).write_bytes(data)
    table = _fairface(tmp_path / "fairface", unseen[20:], split=False)
    source = {"type": "age_gender.datasets.FaceSourceDataset"}
    _catalog(project, {"utkface_raw": protocol, "utk_copy": {**source, "filepath": str(folder)},
                       "fairface": {**source, "filepath": str(tmp_path / "fairface"), "labels": {
                           **FAIRFACE_LABELS, "table": {"type": "pandas.CSVDataset", "filepath": str(table)}}}})
    local = project / "conf" / "local" / "parameters_external.yml"
    local.write_text(yaml.safe_dump({"external": {"overlap": "drop", "datasets": ["utk_copy", "fairface"]}}))
    try:
        run_kedro(project, "evaluate_external", TINY)
        report = _report(project, "external_report.json")["datasets"]
        assert list(report) == ["utk_copy", "fairface"]
        utk, fair = report["utk_copy"], report["fairface"]
        assert utk["n"] == 23 and utk["in_training_data"] == 3 and utk["label_form"] == "utkface_names"
        assert fair["n"] == 20 and fair["in_training_data"] == 0 and fair["label_form"] == "table"
        assert utk["unseen"]["scratch"]["n"] == 20 and utk["unseen"]["scratch"]["age_labels"] == "years"
        assert fair["unseen"]["scratch"]["age_labels"] == "ranges" and "age_mae" not in fair["unseen"]["scratch"]
        for name in ("utk_copy", "fairface"):  # each dataset's own outputs, the same numbers
            own = _report(project, f"external/{name}/external_comparison.json")
            assert own["unseen"] == report[name]["unseen"]
            assert (project / "data" / "03_primary" / "external" / name / "face_manifest.parquet").is_file()
        predictions = pd.read_parquet(project / "data" / "07_model_output" / "external" / "utk_copy" / "all_predictions.parquet")
        mae = (predictions["age_pred"] - predictions["age"]).abs().mean()
        assert utk["unseen"]["scratch"]["age_mae"] == pytest.approx(mae, abs=1e-3)
        low, high = utk["unseen"]["scratch"]["age_mae_ci"]
        assert low <= utk["unseen"]["scratch"]["age_mae"] <= high
        text = (project / "data" / "08_reporting" / "external_report.md").read_text()
        share = fair["unseen"]["scratch"]["age_in_range_share"]
        assert "| utk_copy | utkface_names, ages in years | 23 | 3 (" in text and "| scratch | 20 |" in text
        assert "| fairface | table, ages in ranges | 20 | 0 (0 / 0 / 0 / 0 / 0; drop) | scratch | 20 |" in text
        assert f"{100 * share:.2f} [" in text and "% inside the range" in text

        # --params external_faces (the single form's entry) is refused, not silently ignored
        with pytest.raises(DatasetError) as error:
            run_kedro(project, "evaluate_external", {**TINY, "external_faces": str(folder)})
        assert "--params external_faces points the single entry external_raw" in _one_line(error.value)
        # a listed name without a FaceSourceDataset entry: one line, before any node runs
        local.write_text(yaml.safe_dump({"external": {"overlap": "drop", "datasets": ["utk_copy", "nowhere"]}}))
        with pytest.raises(DatasetError) as error:
            run_kedro(project, "evaluate_external", TINY)
        assert "external.datasets lists 'nowhere', but the catalog has no FaceSourceDataset entry" in _one_line(error.value)
    finally:
        local.unlink()


def test_an_unknown_external_dataset_names_the_conf_folder_the_run_reads():
    """`--env smoke` reads conf/base and conf/smoke, not conf/local: the line names the folder the
    entry must go to for this run."""
    from types import SimpleNamespace

    from age_gender.hooks import check_external_datasets

    pipeline = SimpleNamespace(inputs=lambda: {"utk_copy", "nowhere", "params:external"})
    entries = {"utk_copy": FaceSourceDataset("/tmp/faces")}
    catalog = SimpleNamespace(load=lambda name: {"external": {"datasets": ["utk_copy", "nowhere"]}},
                              get=entries.get, keys=lambda: list(entries))
    for env, folder in ((None, "conf/local"), ("local", "conf/local"), ("smoke", "conf/smoke")):
        with pytest.raises(DatasetError, match=rf"no FaceSourceDataset entry 'nowhere' \(no entry of that name\); "
                                               rf"define it in {folder}/catalog\.yml"):
            check_external_datasets(pipeline, catalog, env=env)
    # a misspelt name (other_40 for other40) was reported as "(found none)", as if the catalog had no entry at all
    entries["other40"] = FaceSourceDataset("/tmp/other")
    catalog.load = lambda name: {"external": {"datasets": ["other_40"]}}
    pipeline.inputs = lambda: {"other_40", "other40"}
    with pytest.raises(DatasetError, match=r"entry 'other_40' \(no entry of that name; did you mean 'other40'\?\); define"):
        check_external_datasets(pipeline, catalog, env="smoke")
    entries["plain"] = object()
    catalog.load = lambda name: {"external": {"datasets": ["plain"]}}
    pipeline.inputs = lambda: {"plain"}
    with pytest.raises(DatasetError, match=r"entry 'plain' \(its type is object\)"):
        check_external_datasets(pipeline, catalog, env="smoke")
    del entries["other40"], entries["plain"]
    catalog.load = lambda name: {"external": {"datasets": ["utk_copy", "nowhere"]}}
    pipeline.inputs = lambda: {"utk_copy", "nowhere", "params:external"}
    entries["nowhere"] = FaceSourceDataset("/tmp/more")
    assert check_external_datasets(pipeline, catalog, env="smoke") == ["utk_copy", "nowhere"]
