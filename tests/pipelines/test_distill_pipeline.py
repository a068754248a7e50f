"""transfer -> distill -> evaluation with `evaluation.models: [scratch, transfer, distilled]`,
through Kedro on a sample of the real archive at tiny sizes."""

import json
import os

import pandas as pd
import pytest

from tests.conftest import make_project, run_kedro, saved

pytestmark = pytest.mark.pipeline

TINY = {
    "ingestion": {"image_sizes": [32]},
    "split": {"test_size": 60, "subset_size": 250},
    "scratch_training": {"input_size": 32, "epochs": 1, "patience": 1, "batch_size": 32,
                         "width_multiplier": 0.125},
    "scratch": {"architecture": {"conv_pairs": 3, "dense_layers": 1, "dense_units": 16, "split_point": 1}},
    "transfer": {"compare": ["mobilenet_v2"], "input_size": 32,
                 "head": {"epochs": 2, "patience": 1},
                 "head_search": {"structures": ["dense-dropout"]},
                 "hyperband": {"enabled": False},
                 "fine_tune": {"epochs": 1, "unfreeze_last": 2, "batch_size": 32}},
    "distill": {"unlabelled_faces": 100, "training": {"epochs": 2, "patience": 2}},
}
JUDGED = {**TINY, "evaluation": {"models": ["scratch", "transfer", "distilled"]}}


@pytest.fixture(scope="module")
def project(tmp_path_factory, sample_archive, weights_dir):
    root = make_project(tmp_path_factory.mktemp("distill"))
    os.environ["UTKFACE_ARCHIVE"] = str(sample_archive)
    os.environ["UTKFACE_WEIGHTS_DIR"] = str(weights_dir)
    for name in ("ingestion", "split", "scratch", "transfer"):
        run_kedro(root, name, TINY)
    return root


def _json(project, name):
    return json.loads(saved(project / "data" / "08_reporting" / name).read_text())


@pytest.fixture(scope="module")
def distilled(project):
    # before distill ran: judging the distilled model is refused before any node, naming distill
    with pytest.raises(Exception, match=r"distilled_model .*not exist yet.*kedro run --pipeline distill"):
        run_kedro(project, "evaluation", JUDGED)
    assert not (project / "data" / "08_reporting" / "evaluation_metrics.json").exists()
    run_kedro(project, "distill", TINY)
    run_kedro(project, "evaluation", JUDGED)
    return project


def test_the_teacher_labels_unused_faces_only(distilled):
    targets = pd.read_parquet(distilled / "data" / "05_model_input" / "distill_targets.parquet")
    splits = pd.read_parquet(distilled / "data" / "05_model_input" / "face_splits.parquet")
    split_of = splits.set_index("cache_index")["split"]
    assert len(targets) == min(100, int((splits["split"] == "unused").sum())) and len(targets) > 50
    assert set(split_of.loc[targets["cache_index"]]) == {"unused"}  # never a test face
    assert not set(targets["cache_index"]) & set(splits.loc[splits["split"] == "test", "cache_index"])
    assert targets["cache_index"].is_unique
    assert targets["age"].dtype == "float32" and targets["female_prob"].dtype == "float32"
    assert targets["female_prob"].between(0, 1).all() and targets["age"].notna().all()
    assert set(targets["split_id"].astype(str)) == set(splits["split_id"].astype(str))
    teacher = json.loads(targets["teacher"].astype(str).iloc[0])
    transfer = _json(distilled, "transfer_training_info.json")
    assert (teacher["backbone"], teacher["split_id"]) == ("mobilenet_v2", transfer["split_id"])


def test_the_student_is_the_scratch_cnn_reported_as_its_own_model(distilled):
    import keras

    info = _json(distilled, "distilled_training_info.json")
    targets = pd.read_parquet(distilled / "data" / "05_model_input" / "distill_targets.parquet")
    splits = pd.read_parquet(distilled / "data" / "05_model_input" / "face_splits.parquet")
    assert info["model"] == "distilled" and info["epochs_run"] == 2 and "NOT" in info["protocol"]
    assert info["teacher_labelled_faces"] == len(targets)
    assert info["true_labelled_faces"] == int(splits["split"].isin(["train", "val1"]).sum())
    assert info["architecture"] == TINY["scratch"]["architecture"] and info["teacher"]["backbone"] == "mobilenet_v2"
    model = keras.models.load_model(saved(distilled / "data" / "06_models" / "distilled.keras"))
    scratch = keras.models.load_model(saved(distilled / "data" / "06_models" / "scratch.keras"))
    assert model.input_shape == scratch.input_shape and model.count_params() == scratch.count_params()
    history = json.loads(saved(distilled / "data" / "07_model_output" / "distilled_history.json").read_text())
    assert all(0 <= a <= 1 for a in history["gender_accuracy"])


def test_evaluation_judges_the_distilled_model(distilled):
    comparison = _json(distilled, "model_comparison.json")
    assert {"scratch", "transfer", "distilled"} <= {r["model"] for r in comparison["models"]}
    pairs = {(d["first"], d["second"]) for d in comparison["paired_differences"]}
    assert pairs == {("transfer", "scratch"), ("distilled", "scratch"), ("distilled", "transfer"),
                     *(("ensemble", m) for m in ("scratch", "transfer", "distilled"))}  # conf/base's ensemble
    metrics = _json(distilled, "evaluation_metrics.json")
    assert metrics["distilled"]["n"] == 60
    headline = _json(distilled, "test_metrics/distilled.json")
    assert headline["teacher_labelled_faces"] > 0 and headline["model"] == "distilled"
    assert (distilled / "data" / "08_reporting" / "model_cards" / "distilled.md").is_file()
