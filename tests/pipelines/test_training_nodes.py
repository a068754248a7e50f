"""Nodes and wiring of the training pipelines on small in-memory data: the search's ranking rule
and candidate pipelines, the refusal of a fit that trains nothing, transfer features stamped with
their rows, and evaluation of models registered by name."""

import numpy as np
import pandas as pd
import pytest

from age_gender import transfer
from age_gender.models import build_multitask_cnn
from age_gender.pipelines.evaluation.nodes import (
    compute_metrics,
    headlines,
    paired_differences,
    predict_test_split,
)
from age_gender.pipelines.scratch.nodes import train_scratch_model
from age_gender.pipelines.scratch_search import pipeline as search_pipeline
from age_gender.pipelines.scratch_search.nodes import (
    active_candidates,
    rank_candidates,
    select_architecture,
)
from age_gender.training import NothingTrainedError, data_key, split_rows

ARCH = {"conv_pairs": 2, "dense_layers": 1, "dense_units": 8, "split_point": 1}


def _ok(accuracy, mae, parameters=100, **extra):
    return {"status": "ok", **ARCH, "val2_gender_accuracy": accuracy, "val2_age_mae": mae,
            "parameters": parameters, **extra}


def test_winner_has_the_lowest_rank_sum_and_failed_candidates_are_never_chosen():
    results = {"acc": _ok(0.90, 9.0), "mae": _ok(0.70, 5.0), "both": _ok(0.85, 6.0),
               "broken": {"status": "failed", "error": "ValueError: x", **ARCH}}
    table, best = rank_candidates(results)
    # ranks: acc 1+3, mae 3+1, both 2+2: all sum to 4; ties go to the lower MAE
    assert best["name"] == "mae"
    assert list(table["name"]) == ["mae", "both", "acc", "broken"]
    assert table.loc[table["name"] == "broken", "rank_sum"].isna().all()


def test_rank_ties_go_to_lower_mae_then_fewer_parameters():
    _, best = rank_candidates({"big": _ok(0.8, 6.0, 500), "small": _ok(0.8, 6.0, 50), "worse": _ok(0.7, 7.0)})
    assert best["name"] == "small"
    _, best = rank_candidates({"x": _ok(0.9, 7.0), "y": _ok(0.8, 6.0), "z": _ok(0.7, 8.0)})
    assert best["name"] == "y"  # x: 1+2, y: 2+1 -> tie at 3, lower MAE wins


def test_every_candidate_failing_is_an_error():
    with pytest.raises(RuntimeError, match="Every scratch_search candidate failed"):
        rank_candidates({"a": {"status": "failed", "error": "boom", **ARCH}})


def test_select_architecture_returns_a_json_ready_winner():
    search = {"max_candidates": None, "grid": {"a": ARCH, "b": ARCH}}
    table, winner, figure = select_architecture(search, a=_ok(0.9, 5.0, cross_stitch="dense"), b=_ok(0.8, 6.0))
    assert winner["name"] == "a" and winner["architecture"] == {**ARCH, "cross_stitch": "dense"}
    assert winner["candidates"] == 2 and winner["failed"] == 0 and len(table) == 2
    with pytest.raises(ValueError, match="node set is fixed"):
        select_architecture({**search, "max_candidates": 1}, a=_ok(0.9, 5.0), b=_ok(0.8, 6.0))


def test_active_candidates_follow_the_grid_order_and_the_cap():
    grid = {"c": ARCH, "a": ARCH, "b": ARCH}
    assert active_candidates({"grid": grid, "max_candidates": 2}) == ["c", "a"]
    assert active_candidates({"grid": grid, "max_candidates": "all"}) == ["c", "a", "b"]
    with pytest.raises(ValueError, match="mapping of candidate name"):
        active_candidates({"grid": [{"name": "a", **ARCH}], "max_candidates": 1})
    with pytest.raises(ValueError, match="max_candidates"):
        active_candidates({"grid": grid, "max_candidates": 0})


def test_one_namespaced_pipeline_per_candidate(monkeypatch):
    grid = {"cnn10": ARCH, "cnn06": ARCH, "extra": ARCH}
    monkeypatch.setattr(search_pipeline, "parameters",
                        lambda: {"scratch_search": {"max_candidates": 2, "grid": grid, "training": {}}})
    pipeline = search_pipeline.create_pipeline()
    assert {n.name for n in pipeline.nodes} == {"scratch_search.cnn10.train_candidate",
                                                "scratch_search.cnn06.train_candidate", "select_architecture"}
    assert "params:scratch_search.grid.cnn10" in pipeline.inputs()
    assert {"scratch_search.cnn10.search_result", "scratch_search.cnn06.search_result"} <= set(pipeline.all_outputs())
    assert "scratch_search.cnn10.checkpoints" in pipeline.inputs()


# --- in-memory cache and splits -----------------------------------------------------------------

def _faces(n=48, size=16, seed=0):
    rng = np.random.default_rng(seed)
    splits = np.array(["train", "val1", "val2", "test"])[np.arange(n) % 4]
    table = pd.DataFrame({"file_name": [f"{i}.jpg" for i in range(n)], "cache_index": np.arange(n)[::-1].copy(),
                          "age": rng.integers(1, 90, n), "gender": rng.integers(0, 2, n), "race": rng.integers(0, 5, n),
                          "split": splits})
    cache = {f"{size}px": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
             "24px": rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8)}
    return cache, table


def test_split_rows_are_in_cache_order():
    _, table = _faces()
    rows = split_rows(table, ["test"])
    assert rows["cache_index"].is_monotonic_increasing and set(rows["split"]) == {"test"}
    with pytest.raises(ValueError, match="rerun|run `kedro run --pipeline split`"):
        split_rows(table, ["nope"])


def test_a_fit_of_zero_epochs_is_refused_before_any_work(tmp_path):
    cache, table = _faces()
    training = {"input_size": 16, "width_multiplier": 0.125, "batch_size": 8, "learning_rate": 1e-3,
                "lr_schedule": "constant", "loss_weights": {"age": 0.1, "gender": 1.0}, "age_loss": "huber",
                "age_head": {"kind": "regression", "variance_weight": 0.0},
                "epochs": 0, "patience": 1, "min_delta": 0.0, "seed": 1, "augmentation": None}
    with pytest.raises(NothingTrainedError, match="epochs must be an integer >= 1, got 0: a fit of no epoch"):
        train_scratch_model(cache, table, None, str(tmp_path / "ckpt"), {"architecture": ARCH}, training, {})
    assert not any((tmp_path / "ckpt").glob("*.keras"))


def test_transfer_features_computed_from_other_rows_are_refused():
    _, table = _faces()
    features = {f"m__{s}": np.zeros((len(split_rows(table, [s])), 4), np.float32) for s in ("train", "val1")}
    provenance = {"m": {"data_keys": {s: data_key(split_rows(table, [s])) for s in ("train", "val1")}}}
    x, labels = transfer.features_for(features, provenance, table, "m", ["train", "val1"])
    assert x.shape == (24, 4) and list(labels.rows["split"]) == ["train"] * 12 + ["val1"] * 12
    relabelled = table.assign(age=table["age"] + (table["split"] == "train"))  # a new split / ingestion
    with pytest.raises(ValueError, match=r"other rows .*rerun `kedro run --pipeline transfer` \(extract_features\)"):
        transfer.features_for(features, provenance, relabelled, "m", ["train"])
    with pytest.raises(ValueError, match="No cached m__val2 features"):
        transfer.features_for(features, provenance, table, "m", ["val2"])


def test_evaluation_judges_every_registered_model_by_name():
    cache, table = _faces()
    small = build_multitask_cnn(input_size=16, conv_pairs=1, dense_layers=1, dense_units=4, width_multiplier=0.125,
                                split_point=1)
    other = build_multitask_cnn(input_size=24, conv_pairs=1, dense_layers=1, dense_units=4, width_multiplier=0.125,
                                split_point=1)
    predictions = predict_test_split(cache, table, {"flip_average": True}, first=small, second=None, third=other)
    assert list(predictions["model"].unique()) == ["first", "third"]  # "second" is not trained
    metrics = compute_metrics(predictions, {"bootstrap": {"resamples": 200, "confidence": 0.95, "seed": 0}})
    assert metrics["third"]["n"] == 12 and len(metrics["third"]["gender"]["accuracy_ci"]) == 2
    (pair,) = paired_differences(predictions, {"bootstrap": {"resamples": 200, "confidence": 0.95, "seed": 0}})
    assert (pair["first"], pair["second"], pair["n"]) == ("third", "first", 12)
    summary = headlines(metrics, first={"model": "first", "train_seconds": 3.0}, third=None)
    assert summary["first"]["train_seconds"] == 3.0 and summary["third"]["n"] == 12
    with pytest.raises(ValueError, match="No trained model"):
        predict_test_split(cache, table, None, first=None)
