"""scratch_search, scratch, transfer, evaluation, evaluate_external and predict, run through Kedro
on a sample of the real archive at tiny sizes. One project is prepared per module; the tests
then read what the runs wrote."""

import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from age_gender.lineage import short
from tests.conftest import make_project, run_kedro, saved

pytestmark = pytest.mark.pipeline

TINY = {
    "ingestion": {"image_sizes": [32, 48]},
    "split": {"test_size": 60, "subset_size": 300},
    "scratch_training": {"input_size": 32, "epochs": 2, "patience": 2, "batch_size": 32,
                         "width_multiplier": 0.125},
    "scratch": {"architecture": {"conv_pairs": 3, "dense_layers": 1, "dense_units": 16, "split_point": 1}},
    "scratch_search": {"max_candidates": 2, "training": {"epochs": 1}},
    "transfer": {"compare": ["mobilenet_v2"], "input_size": 32,
                 "head": {"epochs": 3, "patience": 2},
                 "head_search": {"structures": ["dense-dropout", "dense-bn"]},
                 "hyperband": {"max_epochs": 3, "factor": 3, "units_max": 128},
                 "fine_tune": {"epochs": 1, "unfreeze_last": 4, "batch_size": 32}},
}


# The search's node set comes from the configuration files (one pipeline per candidate), so the
# tiny grid goes into the throw-away project's conf; "never" is past max_candidates.
TINY_GRID = """
scratch_search:
  max_candidates: 2
  training: {epochs: 1}
  grid:
    a: {conv_pairs: 2, dense_layers: 1, dense_units: 8, split_point: 1}
    b: {conv_pairs: 3, dense_layers: 1, dense_units: 8, split_point: 3, cross_stitch: dense}
    never: {conv_pairs: 3, dense_layers: 1, dense_units: 8, split_point: 0}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, sample_archive, weights_dir):
    root = make_project(tmp_path_factory.mktemp("project"))
    (root / "conf" / "base" / "parameters_scratch_search.yml").write_text(TINY_GRID)
    os.environ["UTKFACE_ARCHIVE"] = str(sample_archive)
    os.environ["UTKFACE_WEIGHTS_DIR"] = str(weights_dir)
    for name in ("ingestion", "split", "scratch_search", "scratch", "transfer", "evaluation"):
        run_kedro(root, name, TINY)
    return root


def _json(project, name):
    return json.loads(saved(project / "data" / "08_reporting" / name).read_text())


def test_scratch_search_scores_candidates_and_picks_one(project):
    results = pd.read_csv(project / "data" / "08_reporting" / "scratch_search_results.csv")
    assert list(results["name"]) and set(results["name"]) == {"a", "b"}  # max_candidates=2
    assert results["val2_gender_accuracy"].between(0, 1).all()
    winner = _json(project, "scratch_search_winner.json")
    assert winner["name"] in {"a", "b"} and "rank" in winner["rule"]
    assert sorted(p.stem for p in (project / "data" / "07_model_output" / "scratch_search").glob("*.json")) == ["a", "b"]
    assert (project / "data" / "08_reporting" / "scratch_search.png").exists()


def test_scratch_model_file_and_training_info(project):
    import keras

    info = _json(project, "scratch_training_info.json")
    assert info["model"] == "scratch" and info["train_seconds"] > 0 and info["epochs_run"] == 2
    assert "gender_accuracy" not in info  # training does not judge: evaluation does
    model = keras.models.load_model(saved(project / "data" / "06_models" / "scratch.keras"))
    assert model.input_shape == (None, 32, 32, 3)
    assert saved(project / "data" / "08_reporting" / "scratch_learning_curves.png").is_file()
    assert not list((project / "data").rglob("*_test_predictions*"))


def test_a_run_of_zero_epochs_never_replaces_a_trained_model(project):
    model = saved(project / "data" / "06_models" / "scratch.keras")
    before, versions = model.read_bytes(), sorted(model.parent.parent.iterdir())
    with pytest.raises(Exception, match="epochs"):
        run_kedro(project, "scratch", {**TINY, "scratch_training": {**TINY["scratch_training"], "epochs": 0}})
    assert model.read_bytes() == before and sorted(model.parent.parent.iterdir()) == versions


def test_transfer_model_is_marked_pretrained_with_local_weights(project):
    info = _json(project, "transfer_training_info.json")
    assert info["backbone"] == "mobilenet_v2" and info["pretrained"] is True and info["train_seconds"] > 0
    provenance = _json(project, "backbone_provenance.json")
    assert set(provenance["mobilenet_v2"]["data_keys"]) == {"train", "val1", "val2"}
    comparison = pd.read_csv(project / "data" / "08_reporting" / "backbone_comparison.csv")
    assert list(comparison["backbone"]) == ["mobilenet_v2"]
    best = _json(project, "transfer_best_head.json")
    assert best["tuned"] and best["trials"] >= 1
    assert any((project / "data" / "06_models" / "hyperband").rglob("trial.json"))


def test_evaluation_numbers_agree_with_the_saved_predictions(project):
    predictions = pd.read_parquet(saved(project / "data" / "07_model_output" / "evaluation_predictions.parquet"))
    metrics = _json(project, "evaluation_metrics.json")
    assert set(metrics) == {"scratch", "transfer", "ensemble"}  # conf/base's evaluation.ensembles
    for name, part in predictions.groupby("model"):
        assert metrics[name]["n"] == len(part) == 60
        assert metrics[name]["gender"]["accuracy"] == pytest.approx((part["gender"] == part["gender_pred"]).mean(), abs=1e-4)
        assert metrics[name]["age"]["mae"] == pytest.approx((part["age"] - part["age_pred"]).abs().mean(), abs=1e-3)
        assert sum(g["n"] for g in metrics[name]["by_race"].values()) == 60
        # the per-model headline is the same numbers, with how the model trained
        headline = _json(project, f"test_metrics/{name}.json")
        assert (headline["gender_accuracy"], headline["age_mae"], headline["n"]) == (
            metrics[name]["gender"]["accuracy"], metrics[name]["age"]["mae"], 60)
        if name != "ensemble":
            assert headline["train_seconds"] == _json(project, f"{name}_training_info.json")["train_seconds"]
        # every headline number carries its 95 % bootstrap interval, around it
        m = metrics[name]
        for ci, value in ((m["gender"]["accuracy_ci"], m["gender"]["accuracy"]), (m["age"]["mae_ci"], m["age"]["mae"])):
            assert ci[0] <= value <= ci[1] and ci[0] < ci[1]
        assert headline["gender_accuracy_ci"] == metrics[name]["gender"]["accuracy_ci"]
        assert set(metrics[name]["age_mae_by_band_ci"]) == set(metrics[name]["age_mae_by_band"])
        assert all("age_mae_ci" in g for g in metrics[name]["by_race"].values())
        assert metrics[name]["bootstrap"]["resamples"] == 2000
    # the ensemble is the mean of its members' predictions on each face, judged like a model
    by_model = {name: part.set_index("file_name").sort_index() for name, part in predictions.groupby("model")}
    for column in ("age_pred", "female_prob"):
        assert np.allclose(by_model["ensemble"][column], (by_model["scratch"][column] + by_model["transfer"][column]) / 2)
    assert (by_model["ensemble"]["gender_pred"] == (by_model["ensemble"]["female_prob"] >= 0.5)).all()
    ensemble = _json(project, "test_metrics/ensemble.json")
    assert ensemble["ensemble_of"] == ["scratch", "transfer"]
    assert ensemble["train_seconds"] == pytest.approx(sum(
        _json(project, f"{m}_training_info.json")["train_seconds"] for m in ("scratch", "transfer")), abs=0.2)
    assert "P(female) of `scratch`, `transfer`" in saved(project / "data" / "08_reporting" / "model_cards" / "ensemble.md").read_text()
    comparison = _json(project, "model_comparison.json")
    assert [r["model"] for r in comparison["models"]] == ["scratch", "transfer", "ensemble", "study_cnn10", "study_xception"]
    assert [(d["first"], d["second"]) for d in comparison["paired_differences"]] == [
        ("transfer", "scratch"), ("ensemble", "scratch"), ("ensemble", "transfer")]
    # the paired difference is the difference of the two models' numbers, with its own interval
    paired = comparison["paired_differences"][0]
    assert (paired["first"], paired["second"], paired["n"]) == ("transfer", "scratch", 60)
    assert paired["gender_accuracy"] == pytest.approx(
        metrics["transfer"]["gender"]["accuracy"] - metrics["scratch"]["gender"]["accuracy"], abs=2e-4)
    assert paired["gender_accuracy_ci"][0] <= paired["gender_accuracy"] <= paired["gender_accuracy_ci"][1]
    assert _json(project, "paired_differences.json") == comparison["paired_differences"]
    markdown = saved(project / "data" / "08_reporting" / "model_comparison.md").read_text()
    assert "transfer - scratch: gender accuracy" in markdown and " [" in markdown
    for plot in ("age_prediction", "error_by_group", "confusion_matrix", "model_comparison", "prediction_gallery"):
        assert saved(project / "data" / "08_reporting" / f"{plot}.png").stat().st_size > 5000


def test_evaluate_external_on_a_folder_it_has_never_seen(project, archive_members, utkface_archive, tmp_path):
    from tests.test_label_sources import unseen_archive_members

    folder = tmp_path / "other_faces"
    folder.mkdir()
    trained = set(archive_members.values())  # the archive holds byte-identical copies under other names
    for name, data in [m for m in unseen_archive_members(utkface_archive, 60) if m[1] not in trained][:30]:
        (folder / name.split("/")[-1]).write_bytes(data)
    from age_gender.faces import UTKFACE_NAME

    copies = [n for n in list(archive_members)[-40:]  # faces the models trained on
              if UTKFACE_NAME.fullmatch(n.split("/")[-1])][:10]
    for name in copies:
        (folder / name.split("/")[-1]).write_bytes(archive_members[name])
    (folder / "broken_0_0_x.jpg").write_bytes(b"not an image")
    run_kedro(project, "evaluate_external", {**TINY, "external_faces": str(folder)})
    report = _json(project, "external/ingestion_report.json")
    assert report["files_seen"] == 41 and report["set_aside"]["malformed_name"] == ["broken_0_0_x.jpg"]
    overlap = _json(project, "external/overlap_report.json")
    # the copies of training faces are found by content hash, counted per split, and not scored
    assert overlap["in_training_data"] == report["kept"] - 30 and overlap["policy"] == "drop"
    assert sum(overlap["in_training_data_by_split"].values()) == overlap["in_training_data"]
    metrics = _json(project, "external/evaluation_metrics.json")
    assert metrics["transfer"]["n"] == 30 and metrics["ensemble"]["n"] == 30  # ensembles are scored here too
    assert _json(project, "external/test_metrics/ensemble.json")["ensemble_of"] == ["scratch", "transfer"]
    text = (project / "data" / "08_reporting" / "external" / "external_comparison.md").read_text()
    assert "NOT on the project's held-out UTKFace test split" in text and "MAE" in text
    # the report names the dataset and the ingestion it scored, as its ingestion's outputs do
    identity = json.loads((project / "data" / "03_primary" / "external" / "face_cache" / "identity.json").read_text())
    assert overlap["external_ingestion"] == identity["ingestion_id"]
    assert f"Dataset `{report['source']}`, ingestion {short(identity['ingestion_id'])}" in text
    assert _json(project, "external/external_comparison.json")["source"] == report["source"]
    assert (project / "data" / "08_reporting" / "external" / "prediction_gallery.png").exists()


def test_predict_on_ordinary_photos(project, archive_members, tmp_path):
    faces = [Image.open(io.BytesIO(d)) for d in list(archive_members.values())[:2]]
    photo = Image.new("RGB", (640, 400), (200, 200, 200))
    photo.paste(faces[0].resize((160, 160)), (60, 80))
    photo.paste(faces[1].resize((140, 140)), (400, 120))
    folder = tmp_path / "photos"
    folder.mkdir()
    photo.save(folder / "two.jpg")
    photo.save(folder / "two.png")  # the same stem: both annotations are kept
    Image.new("RGB", (300, 200), (20, 120, 20)).save(folder / "landscape.png")
    run_kedro(project, "predict", {**TINY, "photos": str(folder)})
    table = pd.read_csv(project / "data" / "07_model_output" / "photo_predictions.csv")
    report = _json(project, "predict_report.json")
    assert report["no_face"] == ["landscape.png"] and report["photos_seen"] == 3
    assert set(table["file"]) == {"two.jpg", "two.png"} and len(table) >= 2
    assert table["gender_prob"].between(0.5, 1).all() and table["age"].gt(0).all()
    annotated = project / "data" / "07_model_output" / "annotated_photos"
    assert report["annotated"]["two.png"] == "two.png.jpg"
    assert (annotated / "two.jpg.jpg").exists() and (annotated / "two.png.jpg").exists()


def _copy_for_training(project, target):
    """A copy of ``project`` with its ingestion, split and conf, but no model, checkpoint or report."""
    import shutil

    layers = ("06_models", "07_model_output", "08_reporting")
    shutil.copytree(project, target, ignore=shutil.ignore_patterns(*layers))
    for layer in layers:
        (target / "data" / layer).mkdir()
    return target


def test_the_same_scratch_run_twice_gives_the_same_metrics(project, tmp_path):
    """device.deterministic (conf/base: true): two fresh `kedro run`s of the same configuration, in
    two processes at once, train the same model and evaluate to the same numbers."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    runs = []
    for name in ("first", "second"):
        root = _copy_for_training(project, tmp_path / name)
        (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(TINY))
        runs.append((root, subprocess.Popen(
            [str(Path(sys.executable).parent / "kedro"), "run", "--pipelines", "scratch,evaluation"], cwd=root,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    for _, process in runs:
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output[-3000:]
    first, second = ([_json(root, "evaluation_metrics.json"),
                      json.loads(saved(root / "data" / "07_model_output" / "scratch_history.json").read_text())]
                     for root, _ in runs)
    assert first == second
    assert set(first[0]) == {"scratch"} and first[1]["val_loss"]  # a real model, judged


def test_models_and_splits_of_other_split_settings_are_refused_before_any_node(project, tmp_path):
    """A re-split (another seed) after training: evaluation would score the old models on test rows
    they trained on, and training would ignore the run's split settings; both are refused."""
    import shutil

    from age_gender.lineage import LineageError

    root = tmp_path / "resplit"
    shutil.copytree(project, root)
    resplit = {**TINY, "split": {**TINY["split"], "seed": 7}}
    run_kedro(root, "split", resplit)
    before = saved(root / "data" / "08_reporting" / "evaluation_metrics.json").read_bytes()
    with pytest.raises(LineageError, match=r"scratch_model was trained on another split table .*"
                                           r"rerun `kedro run --pipeline scratch`"):
        run_kedro(root, "evaluation", resplit)
    assert saved(root / "data" / "08_reporting" / "evaluation_metrics.json").read_bytes() == before
    with pytest.raises(LineageError, match=r"face_splits was drawn with other split settings"):
        run_kedro(root, "scratch", TINY)  # seed 42, but the table now holds the seed-7 split


def test_a_fit_stopped_by_its_budget_is_flagged_and_ends_the_run_with_a_warning(project, caplog):
    """Run last in this module: it retrains the scratch model (3 epochs, a budget of 0.1 s)."""
    import logging

    params = {**TINY, "scratch_training": {**TINY["scratch_training"], "epochs": 3,
                                           "time_budget_minutes": 0.0001 / 6}}
    with caplog.at_level(logging.WARNING, logger="age_gender.hooks"):
        run_kedro(project, "scratch", params)
    info = _json(project, "scratch_training_info.json")
    assert info["out_of_time"] is True and info["epochs_run"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "age_gender.hooks"]
    assert warnings and "scratch_training_info (epochs run: 1)" in warnings[-1]
    assert "out_of_time: true" in warnings[-1]
