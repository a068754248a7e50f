"""scratch_search, scratch, transfer, evaluation, evaluate_external and predict, run through Kedro
on a sample of the real archive at tiny sizes. One project is prepared per module; the tests
then read what the runs wrote."""

import io
import json
import os

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import make_project, run_kedro

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
    return json.loads((project / "data" / "08_reporting" / name).read_text())


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
    model = keras.models.load_model(project / "data" / "06_models" / "scratch.keras")
    assert model.input_shape == (None, 32, 32, 3)
    assert (project / "data" / "08_reporting" / "scratch_learning_curves.png").exists()
    assert not list((project / "data").rglob("*_test_predictions*"))


def test_a_run_of_zero_epochs_never_replaces_a_trained_model(project):
    model = project / "data" / "06_models" / "scratch.keras"
    before = model.read_bytes()
    with pytest.raises(Exception, match="epochs"):
        run_kedro(project, "scratch", {**TINY, "scratch_training": {**TINY["scratch_training"], "epochs": 0}})
    assert model.read_bytes() == before


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
    predictions = pd.read_parquet(project / "data" / "07_model_output" / "evaluation_predictions.parquet")
    metrics = _json(project, "evaluation_metrics.json")
    assert set(metrics) == {"scratch", "transfer"}
    for name, part in predictions.groupby("model"):
        assert metrics[name]["n"] == len(part) == 60
        assert metrics[name]["gender"]["accuracy"] == pytest.approx((part["gender"] == part["gender_pred"]).mean(), abs=1e-4)
        assert metrics[name]["age"]["mae"] == pytest.approx((part["age"] - part["age_pred"]).abs().mean(), abs=1e-3)
        assert sum(g["n"] for g in metrics[name]["by_race"].values()) == 60
        # the per-model headline is the same numbers, with how the model trained
        headline = _json(project, f"test_metrics/{name}.json")
        assert (headline["gender_accuracy"], headline["age_mae"], headline["n"]) == (
            metrics[name]["gender"]["accuracy"], metrics[name]["age"]["mae"], 60)
        assert headline["train_seconds"] == _json(project, f"{name}_training_info.json")["train_seconds"]
    comparison = _json(project, "model_comparison.json")
    assert {r["model"] for r in comparison["models"]} == {"scratch", "transfer", "study_cnn10", "study_xception"}
    for plot in ("age_prediction", "error_by_group", "confusion_matrix", "model_comparison", "prediction_gallery"):
        assert (project / "data" / "08_reporting" / f"{plot}.png").stat().st_size > 5000


def test_evaluate_external_on_a_folder_it_has_never_seen(project, archive_members, tmp_path):
    folder = tmp_path / "other_faces"
    folder.mkdir()
    for name, data in list(archive_members.items())[-40:]:
        (folder / name.split("/")[-1]).write_bytes(data)
    (folder / "broken_0_0_x.jpg").write_bytes(b"not an image")
    run_kedro(project, "evaluate_external", {**TINY, "external_faces": str(folder)})
    report = _json(project, "external/ingestion_report.json")
    assert report["files_seen"] == 41 and report["set_aside"]["malformed_name"] == ["broken_0_0_x.jpg"]
    metrics = _json(project, "external/evaluation_metrics.json")
    assert metrics["transfer"]["n"] == report["kept"]
    assert (project / "data" / "08_reporting" / "external" / "prediction_gallery.png").exists()


def test_predict_on_ordinary_photos(project, archive_members, tmp_path):
    faces = [Image.open(io.BytesIO(d)) for d in list(archive_members.values())[:2]]
    photo = Image.new("RGB", (640, 400), (200, 200, 200))
    photo.paste(faces[0].resize((160, 160)), (60, 80))
    photo.paste(faces[1].resize((140, 140)), (400, 120))
    folder = tmp_path / "photos"
    folder.mkdir()
    photo.save(folder / "two.jpg")
    Image.new("RGB", (300, 200), (20, 120, 20)).save(folder / "landscape.png")
    run_kedro(project, "predict", {**TINY, "photos": str(folder)})
    table = pd.read_csv(project / "data" / "07_model_output" / "photo_predictions.csv")
    report = _json(project, "predict_report.json")
    assert report["no_face"] == ["landscape.png"] and report["photos_seen"] == 2
    assert set(table["file"]) == {"two.jpg"} and len(table) >= 1
    assert table["gender_prob"].between(0.5, 1).all() and table["age"].gt(0).all()
    assert (project / "data" / "07_model_output" / "annotated_photos" / "two.jpg").exists()
