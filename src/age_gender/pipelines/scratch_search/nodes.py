"""Nodes of ``scratch_search``: one ``train_candidate`` per grid candidate (its own namespaced
pipeline), then ``select_architecture``. Machinery: ``age_gender.scratch``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from age_gender.metrics import headline, model_metrics
from age_gender.reporting import plot_val2_scatter, predict_table
from age_gender.scratch import ARCHITECTURE_KEYS, architecture_of, fit_cnn
from age_gender.training import select_split

logger = logging.getLogger(__name__)

RULE = "lowest rank(gender accuracy) + rank(age MAE) on val2; ties: lower MAE, fewer parameters"


def active_candidates(search: Mapping[str, Any]) -> list[str]:
    """Names of the grid candidates that run: the first ``max_candidates`` (null or "all": every
    one) of the ``grid`` mapping, in its order. Raises ValueError for a grid that is not a
    non-empty mapping of name -> settings, or a bad ``max_candidates``."""
    grid = search.get("grid")
    if not isinstance(grid, Mapping) or not grid or not all(isinstance(v, Mapping) for v in grid.values()):
        raise ValueError("scratch_search.grid must be a non-empty mapping of candidate name -> settings, "
                         f"got {type(grid).__name__}")
    limit = search.get("max_candidates")
    names = [str(n) for n in grid]
    if limit in (None, "all"):
        return names
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"scratch_search.max_candidates must be an integer >= 1, null or 'all', got {limit!r}")
    return names[:limit]


def train_candidate(face_cache, face_splits: pd.DataFrame, checkpoints: str, candidate: Mapping[str, Any],
                    training: Mapping[str, Any], search_training: Mapping[str, Any] | None,
                    device: Mapping[str, Any], inference: Mapping[str, Any] | None) -> dict[str, Any]:
    """Train one candidate on train (early stopping on val1) and score it on val2 (model selection;
    the test split stays for ``evaluation``). A candidate whose training fails reports ``failed``
    with the error, so one bad entry never sinks the search."""
    settings = {**training, **(search_training or {})}
    described = {k: candidate.get(k) for k in ARCHITECTURE_KEYS}
    try:
        result = fit_cnn(face_cache, face_splits, candidate, settings, device, ["train"], ["val1"], checkpoints)
        val2 = select_split(face_cache, face_splits, int(settings["input_size"]), ["val2"])
        scores = headline(model_metrics(predict_table(result.model, val2.rows, val2.images, inference)))
    except (ValueError, RuntimeError, KeyError, ArithmeticError) as error:
        logger.warning("Candidate %s failed: %s", dict(candidate), error)
        return {"status": "failed", "error": f"{type(error).__name__}: {error}", **described}
    if not all(map(pd.notna, scores.values())):
        return {"status": "failed", "error": "non-finite scores", **described}
    return {"status": "ok", **architecture_of(candidate),
            "val2_gender_accuracy": scores["gender_accuracy"], "val2_age_mae": scores["age_mae"],
            "n_val2": scores["n"], "epochs_run": result.epochs_run, "out_of_time": result.out_of_time,
            "train_seconds": round(result.train_seconds, 1), "parameters": int(result.model.count_params())}


def rank_candidates(results: Mapping[str, Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.Series]:
    """Every candidate's row (``name`` first) with its ranks, best first, and the winner's row.

    Rule: rank by val2 gender accuracy (higher is better) and by val2 age MAE (lower is better),
    ties sharing the lower rank; the winner has the lowest sum of the two ranks; ties go to the
    lower MAE, then to fewer parameters. Failed candidates are listed last, never chosen."""
    table = pd.DataFrame([{"name": name, **result} for name, result in results.items()])
    if table.empty:
        raise ValueError("scratch_search ran no candidate: check scratch_search.grid and max_candidates")
    ok = table[table["status"] == "ok"].copy()
    if ok.empty:
        raise RuntimeError(f"Every scratch_search candidate failed: {table[['name', 'error']].to_dict('records')}")
    ok["rank_gender"] = ok["val2_gender_accuracy"].rank(ascending=False, method="min")
    ok["rank_age"] = ok["val2_age_mae"].rank(ascending=True, method="min")
    ok["rank_sum"] = ok["rank_gender"] + ok["rank_age"]
    ok = ok.sort_values(["rank_sum", "val2_age_mae", "parameters"])
    table = table.merge(ok[["name", "rank_gender", "rank_age", "rank_sum"]], on="name", how="left")
    table = table.sort_values(["rank_sum", "val2_age_mae", "parameters", "name"], na_position="last")
    return table.reset_index(drop=True), ok.iloc[0]


def select_architecture(search: Mapping[str, Any], **results: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any], plt.Figure]:
    """Rank the candidates (``rank_candidates``) and pick the best balance of both tasks: the
    results table, the winner (name, architecture, val2 scores, rule) and a scatter plot."""
    expected = active_candidates(search)
    if sorted(expected) != sorted(results):
        raise ValueError(f"scratch_search runs candidates {sorted(results)} but the parameters now name "
                         f"{sorted(expected)}: the node set is fixed when the pipeline is created; change "
                         f"the grid in conf/, not with --params.")
    table, best = rank_candidates(results)
    architecture = {k: int(best[k]) for k in ARCHITECTURE_KEYS}
    for key in ("cross_stitch", "width_multiplier", "pooling", "batch_norm", "l2", "dropout"):
        if key in best and pd.notna(best[key]):
            architecture[key] = best[key].item() if hasattr(best[key], "item") else best[key]
    ok = table[table["status"] == "ok"]
    winner = {"name": best["name"], "architecture": architecture,
              "val2_gender_accuracy": float(best["val2_gender_accuracy"]),
              "val2_age_mae": float(best["val2_age_mae"]), "rule": RULE,
              "candidates": int(len(ok)), "failed": int((table["status"] == "failed").sum())}
    logger.info("Scratch search winner: %s", winner)
    figure = plot_val2_scatter(ok, "name", "CNN architecture search (study's Table 2 grid)", chosen=best["name"])
    return table, winner, figure
