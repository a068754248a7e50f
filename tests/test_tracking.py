"""Experiment tracking (age_gender.tracking, hooks.TrackingHooks): offline, no server, a SQLite store
in a throw-away project. The rest of the suite runs with AGE_GENDER_TRACKING=off (conftest.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from age_gender import tracking
from tests.conftest import REPO, make_project, run_kedro, saved

# --- what is turned into metrics (fast, no MLflow) ------------------------------------------------


def test_numbers_of_a_report_become_metrics_and_intervals_two_of_them():
    report = {"scratch": {"n": 60, "gender": {"accuracy": 0.75, "accuracy_ci": [0.7, 0.8],
                                              "confusion_matrix": [[1, 2], [3, 4]]},
                          "by_race": {"Black (1)": {"age_mae": 7.5}}, "note": "text", "missing": None,
                          "nan": float("nan")}}
    assert tracking.numeric_leaves(report, "evaluation_metrics") == {
        "evaluation_metrics.scratch.n": 60.0,
        "evaluation_metrics.scratch.gender.accuracy": 0.75,
        "evaluation_metrics.scratch.gender.accuracy_ci_low": 0.7,
        "evaluation_metrics.scratch.gender.accuracy_ci_high": 0.8,
        "evaluation_metrics.scratch.by_race.Black _1_.age_mae": 7.5,  # MLflow refuses ( and )
    }


def test_a_history_of_stages_is_one_series_per_stage_and_the_best_epoch_is_read_from_the_last():
    history = {"head": {"loss": [3.0, 2.0], "val_loss": [3.5, 2.5]},
               "fine_tune": {"loss": [1.0, 0.9, 0.8], "val_loss": [1.2, 1.1, 1.3], "val_age_mae": [9.0, 8.0, 8.5]}}
    series = tracking.history_series(history, "transfer_history")
    assert series["transfer_history.head.val_loss"] == [3.5, 2.5]
    assert series["transfer_history.fine_tune.val_age_mae"] == [9.0, 8.0, 8.5]
    assert tracking.best_epoch_metrics(history, 2, "transfer") == {
        "transfer.best.val_loss": 1.1, "transfer.best.val_age_mae": 8.0}
    # a model that keeps its last epoch's weights (restore_best_weights: false) is logged at that epoch too
    assert tracking.best_epoch_metrics(history, 3, "transfer", "last") == {
        "transfer.last.val_loss": 1.3, "transfer.last.val_age_mae": 8.5}


def test_the_switch_is_on_by_default_and_refuses_a_value_it_does_not_know():
    assert tracking.tracking_enabled({}) is True
    assert tracking.tracking_enabled({"AGE_GENDER_TRACKING": "OFF"}) is False
    with pytest.raises(ValueError, match="AGE_GENDER_TRACKING=on or AGE_GENDER_TRACKING=off"):
        tracking.tracking_enabled({"AGE_GENDER_TRACKING": "maybe"})


def test_the_default_store_is_an_absolute_sqlite_file_in_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking.store_for(tmp_path):
        assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # restored: the next project gets its own
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    with tracking.store_for(tmp_path):
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"


def test_the_git_commit_of_the_checkout_is_read_and_none_outside_one(tmp_path):
    import subprocess

    from tests.conftest import REPO

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    state = tracking.git_state(REPO)
    assert state["mlflow.source.git.commit"] == head and len(head) == 40
    assert state["git_dirty"] in ("true", "false")
    assert tracking.git_state(tmp_path) == {}


def test_hyperband_trials_are_read_from_the_newest_project_of_the_structure(tmp_path):
    def trial(project, trial_id, lr, values, status="COMPLETED"):
        folder = tmp_path / project / f"trial_{trial_id}"
        folder.mkdir(parents=True)
        (tmp_path / project / "oracle.json").write_text("{}")
        (folder / "trial.json").write_text(json.dumps({
            "trial_id": trial_id, "status": status, "score": min(values),
            "hyperparameters": {"values": {"learning_rate": lr, "units": 64}},
            "metrics": {"metrics": {"val_loss": {"direction": "min",
                                                 "observations": [{"value": [v], "step": i} for i, v in enumerate(values)]}}}}))
    trial("transfer_dense-bn_aaaa", "0000", 1e-3, [2.0, 1.5])
    trial("transfer_dense-bn_aaaa", "0001", 1e-4, [2.5, 2.2], status="FAILED")
    trial("transfer_dense-dropout_bbbb", "0000", 1e-2, [9.0])
    found = tracking.hyperband_trials(str(tmp_path), "dense-bn")
    assert [(t["trial_id"], t["status"], t["params"]["learning_rate"], t["metrics"]) for t in found] == [
        ("0000", "COMPLETED", 1e-3, {"val_loss": 1.5, "score": 1.5}),
        ("0001", "FAILED", 1e-4, {"val_loss": 2.2, "score": 2.2})]
    assert tracking.hyperband_trials(str(tmp_path / "nothing"), "dense-bn") == []



def test_a_nodes_parameters_are_one_batch_a_repeated_one_is_accepted_and_a_long_one_follows_the_strategy(
        tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("x"))
    hook = tracking.mlflow_hook()
    hook.run_id, hook.flatten, hook.long_params_strategy = run.info.run_id, True, "tag"
    hook.mlflow_config = type("Config", (), {"tracking": type("T", (), {"run": type("R", (), {"nested": False})})})
    batches = []
    original = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, run_id, **kw: (batches.append(kw), original(self, run_id, **kw)))
    monkeypatch.setattr(mlflow, "log_param", lambda *a, **k: pytest.fail("a parameter was logged on its own"))
    node = type("Node", (), {"name": "n"})()
    inputs = {f"params:p{i}": i for i in range(150)}
    try:
        hook.before_node_run(node=node, catalog=None, is_async=False,
                             inputs={**inputs, "params:group": {"lr": 0.5, "long": "x" * (MAX_PARAM_VAL_LENGTH + 1)},
                                     "faces": object()})
        hook.before_node_run(node=node, catalog=None, is_async=False, inputs={"params:p0": 0, "params:new": "a"})
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
    assert [len(b["params"]) for b in batches] == [100, 51, 2]  # one node: 151 short values in 2 batches
    data = client.get_run(run.info.run_id).data
    assert len(data.params) == 152 and data.params["p7"] == "7" and data.params["group.lr"] == "0.5"
    assert "group.long" not in data.params and data.tags["group.long"] == "x" * (MAX_PARAM_VAL_LENGTH + 1)


# --- real runs through Kedro, twice, then the comparison ---------------------------------------

TINY = {
    "ingestion": {"image_sizes": [32]},
    "split": {"test_size": 60, "subset_size": 300},
    "scratch_training": {"input_size": 32, "epochs": 2, "patience": 2, "batch_size": 32,
                         "width_multiplier": 0.125, "learning_rate": 1e-3},
    "scratch": {"architecture": {"conv_pairs": 2, "dense_layers": 1, "dense_units": 8, "split_point": 1}},
    "evaluation": {"bootstrap": {"resamples": 200}},
}


def _with(**scratch_training):
    return {**TINY, "scratch_training": {**TINY["scratch_training"], **scratch_training}}


def _evaluate_version(root: Path, version: str, names=("scratch_model", "scratch_training_info")):
    """`kedro run --pipeline evaluation --load-versions <name>:<version>,...`"""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root, runtime_params=TINY) as session:
        return session.run(pipeline_names=["evaluation"], load_versions={n: version for n in names})


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, sample_archive):
    """ingestion and split (not tracked), scratch twice with two learning rates, evaluation of the
    newest model, evaluation of the first (--load-versions), then compare_runs, in a throw-away
    project whose working folder is the project (as `kedro run`)."""
    root = make_project(tmp_path_factory.mktemp("tracked"))
    saved = {k: os.environ.get(k) for k in ("UTKFACE_ARCHIVE", "AGE_GENDER_TRACKING", "MLFLOW_TRACKING_URI")}
    cwd = Path.cwd()
    os.environ["UTKFACE_ARCHIVE"] = str(sample_archive)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["AGE_GENDER_TRACKING"] = "on"
    os.chdir(root)
    try:
        run_kedro(root, "ingestion", TINY)
        run_kedro(root, "split", TINY)
        untracked = not (root / "mlflow.db").exists()
        run_kedro(root, "scratch", _with(learning_rate=1e-3))
        run_kedro(root, "scratch", _with(learning_rate=3e-4))
        run_kedro(root, "evaluation", TINY)
        first = sorted((root / "data" / "06_models" / "scratch.keras").iterdir())[0].name
        _evaluate_version(root, first)
        run_kedro(root, "compare_runs")
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return root, untracked


def _runs(root: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("age_gender")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


@pytest.mark.pipeline
def test_pipelines_outside_training_and_evaluation_are_not_tracked(tracked):
    root, untracked = tracked
    assert untracked  # ingestion and split ran with tracking on, yet no store was even created
    client, runs = _runs(root)
    assert [r.info.run_name for r in runs] == ["scratch", "scratch", "evaluation", "evaluation"]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.pipeline
def test_both_training_runs_record_their_own_parameters_metrics_files_and_model(tracked):
    import keras

    root, _ = tracked
    client, runs = _runs(root)
    first, second = runs[0], runs[1]
    assert first.data.params["scratch_training.learning_rate"] == "0.001"
    assert second.data.params["scratch_training.learning_rate"] == "0.0003"
    assert first.data.params["scratch.architecture.conv_pairs"] == "2"
    for run in (first, second):
        assert run.data.tags["kedro_command"] == "kedro run --pipeline=scratch"
        assert run.data.metrics["scratch_training_info.epochs_run"] == 2
        history = client.get_metric_history(run.info.run_id, "scratch_history.val_loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1]  # per epoch
        assert "scratch.best.val_gender_accuracy" in run.data.metrics
        files = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
        assert {"outputs/scratch_history.json", "outputs/scratch_learning_curves.png",
                "outputs/scratch_training_info.json"} <= files
    # each run logged its own copy of the history file: the second run did not overwrite the first's
    histories = [json.loads(Path(client.download_artifacts(r.info.run_id, "outputs/scratch_history.json")).read_text())
                 for r in (first, second)]
    assert histories[0] != histories[1]
    assert histories[1] == json.loads(saved(root / "data" / "07_model_output" / "scratch_history.json").read_text())
    # the model, in MLflow's Keras flavour, loads back and is the second run's model
    model = tracking.load_model(f"runs:/{second.info.run_id}/scratch_model")
    newest = keras.models.load_model(saved(root / "data" / "06_models" / "scratch.keras"))
    assert model.count_params() == newest.count_params()
    for mine, theirs in zip(model.get_weights(), newest.get_weights()):
        assert (mine == theirs).all()


@pytest.mark.pipeline
def test_evaluation_run_records_test_metrics_with_intervals(tracked):
    root, _ = tracked
    client, runs = _runs(root)
    metrics = runs[2].data.metrics
    evaluation = json.loads(Path(client.download_artifacts(runs[2].info.run_id, "outputs/evaluation_metrics.json")).read_text())
    assert metrics["test_metrics.scratch.gender_accuracy"] == pytest.approx(evaluation["scratch"]["gender"]["accuracy"])
    assert metrics["test_metrics.scratch.age_mae_ci_low"] == pytest.approx(evaluation["scratch"]["age"]["mae_ci"][0])
    assert metrics["test_metrics.scratch.age_mae_ci_high"] == pytest.approx(evaluation["scratch"]["age"]["mae_ci"][1])
    files = {a.path for a in client.list_artifacts(runs[2].info.run_id, "outputs")}
    assert "outputs/model_comparison.md" in files and "outputs/test_metrics" in files


@pytest.mark.pipeline
def test_versions_keep_every_run_and_load_versions_evaluates_the_older_model(tracked):
    root, _ = tracked
    _, runs = _runs(root)
    models = sorted((root / "data" / "06_models" / "scratch.keras").iterdir())
    assert len(models) == 2 and all((m / "scratch.keras").is_file() for m in models)  # neither overwritten
    assert len(list((root / "data" / "08_reporting" / "evaluation_metrics.json").iterdir())) == 2
    # the second evaluation judged the first model, with the first model's training info
    first_training, older = runs[0].data.metrics, runs[3].data.metrics
    assert older["test_metrics.scratch.train_seconds"] == first_training["scratch_training_info.train_seconds"]
    assert older["test_metrics.scratch.gender_accuracy"] != runs[2].data.metrics["test_metrics.scratch.gender_accuracy"] \
        or older["test_metrics.scratch.age_mae"] != runs[2].data.metrics["test_metrics.scratch.age_mae"]


@pytest.mark.pipeline
def test_a_model_read_at_another_version_than_its_training_info_is_refused(tracked):
    from age_gender.lineage import ActionableError

    root, _ = tracked
    first = sorted((root / "data" / "06_models" / "scratch.keras").iterdir())[0].name
    with pytest.raises(ActionableError, match="scratch_model would be read at version .* but scratch_training_info"):
        _evaluate_version(root, first, names=("scratch_model",))


@pytest.mark.pipeline
def test_the_comparison_lists_every_run_and_model(tracked):
    root, _ = tracked
    _, runs = _runs(root)
    table = pd.read_csv(root / "data" / "08_reporting" / "run_comparison.csv")
    assert list(table["run_id"]) == [r.info.run_id for r in runs]  # oldest first, one model each here
    assert list(table["model"]) == ["scratch"] * 4
    training, evaluation = table.iloc[:2], table.iloc[2]
    assert training["model_logged"].all() and training["epochs_run"].eq(2).all()
    assert training["test_gender_accuracy"].isna().all()  # training never sees the test split
    assert evaluation["test_age_mae_ci_low"] <= evaluation["test_age_mae"] <= evaluation["test_age_mae_ci_high"]
    markdown = (root / "data" / "08_reporting" / "run_comparison.md").read_text()
    assert all(r.info.run_id[:8] in markdown for r in runs)
    assert (root / "data" / "08_reporting" / "run_comparison.png").stat().st_size > 0


def test_the_comparison_of_an_empty_store_says_what_to_run(tmp_path):
    from kedro.io import DatasetError

    with pytest.raises(DatasetError, match="run a training or evaluation pipeline with tracking on"):
        tracking.TrackedRunsDataset(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}").load()


@pytest.mark.pipeline
def test_a_store_that_cannot_be_used_stops_the_run_before_any_node(tracked, monkeypatch):
    from age_gender.lineage import ActionableError

    root, _ = tracked
    models = sorted((root / "data" / "06_models" / "scratch.keras").iterdir())
    monkeypatch.setenv("AGE_GENDER_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'pyproject.toml' / 'mlflow.db'}")  # under a file
    monkeypatch.chdir(root)
    with pytest.raises(ActionableError, match=r"cannot track this run in MLflow .*AGE_GENDER_TRACKING=off"):
        run_kedro(root, "scratch", TINY)
    assert sorted((root / "data" / "06_models" / "scratch.keras").iterdir()) == models  # nothing trained


def test_outputs_saved_before_versioning_are_moved_into_the_version_layout(tmp_path):
    """scripts/version_outputs.py: a plain model and report become the newest version, loadable."""
    import importlib.util

    from kedro.io import Version

    from age_gender.datasets import AtomicJSONDataset

    root = make_project(tmp_path / "project")
    model = root / "data" / "06_models" / "scratch.keras"
    report = root / "data" / "08_reporting" / "evaluation_metrics.json"
    model.write_bytes(b"model bytes")
    report.write_text('{"scratch": {"n": 3}}')
    unversioned = root / "data" / "08_reporting" / "scratch_search_results.csv"  # not a versioned entry
    unversioned.write_text("name\n")
    spec = importlib.util.spec_from_file_location("version_outputs", REPO / "scripts" / "version_outputs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    moves = script.plan(root)
    assert sorted(p.name for p, _ in moves) == ["evaluation_metrics.json", "scratch.keras"]
    for plain, versioned in moves:
        script.move(plain, versioned)
    assert saved(model).read_bytes() == b"model bytes" and saved(model) != model
    assert AtomicJSONDataset(filepath=str(report), version=Version(None, None)).load() == {"scratch": {"n": 3}}
    assert unversioned.is_file() and script.plan(root) == []
