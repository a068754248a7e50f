"""Nodes of ``scratch_search``: one independent node per grid slot, then a selection node."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from age_gender.pipelines.scratch.nodes import ARCHITECTURE_KEYS, fit_cnn  # noqa: E402
from age_gender.reporting import flip_average, headline_metrics, predict_faces, prediction_table  # noqa: E402
from age_gender.training import select_split  # noqa: E402

logger = logging.getLogger(__name__)


def active_candidates(search: Mapping[str, Any]) -> list[dict[str, Any]]:
    grid = list(search["grid"])
    limit = search.get("max_candidates")
    names = [c.get("name") for c in grid]
    if len(set(names)) != len(names) or None in names:
        raise ValueError("scratch_search.grid entries need unique names")
    return grid if limit in (None, "all") else grid[: int(limit)]


def train_candidate(face_cache, face_splits: pd.DataFrame, checkpoints: str, search: Mapping[str, Any],
                    training: Mapping[str, Any], device: Mapping[str, Any],
                    inference: Mapping[str, Any] | None = None, *, slot: int) -> dict[str, Any]:
    """Train grid entry ``slot`` on train (early stopping on val1) and score it on val2.

    A slot past the grid (or ``max_candidates``) reports ``skipped``; a candidate whose training
    fails reports ``failed`` with the error, so one bad entry never sinks the search.
    """
    candidates = active_candidates(search)
    if slot >= len(candidates):
        return {"slot": slot, "status": "skipped"}
    candidate = dict(candidates[slot])
    name = candidate.pop("name")
    settings = {**training, **search.get("training", {})}
    try:
        result, _ = fit_cnn(face_cache, face_splits, candidate, settings, device, ["train"], ["val1"],
                            Path(checkpoints) / name)
        data = select_split(face_cache, face_splits, int(settings["input_size"]), ["val2"])
        scores = headline_metrics(prediction_table(data.rows, *predict_faces(result.model, data.images,
                                                                           flip_average=flip_average(inference))))
    except (ValueError, RuntimeError, KeyError, ArithmeticError) as error:
        logger.warning("Candidate %s failed: %s", name, error)
        return {"slot": slot, "name": name, "status": "failed", "error": f"{type(error).__name__}: {error}",
                **{k: candidate.get(k) for k in ARCHITECTURE_KEYS}}
    if not all(map(pd.notna, scores.values())):
        return {"slot": slot, "name": name, "status": "failed", "error": "non-finite scores",
                **{k: candidate.get(k) for k in ARCHITECTURE_KEYS}}
    return {"slot": slot, "name": name, "status": "ok", **candidate,
            "val2_gender_accuracy": scores["gender_accuracy"], "val2_age_mae": scores["age_mae"],
            "n_val2": scores["n_test"], "epochs_run": result.epochs_run,
            "train_seconds": round(result.train_seconds, 1),
            "parameters": int(result.model.count_params())}


def select_architecture(search: Mapping[str, Any], *results: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any], plt.Figure]:
    """Rank the candidates and pick the best balance of both tasks.

    Rule: rank by val2 gender accuracy (higher is better) and by val2 age MAE (lower is better);
    the winner has the lowest sum of the two ranks; ties go to the lower MAE, then to fewer
    parameters. Failed candidates are listed but never chosen.
    """
    table = pd.DataFrame([r for r in results if r["status"] != "skipped"])
    if table.empty:
        raise ValueError("scratch_search ran no candidate: check scratch_search.grid and max_candidates")
    ok = table[table["status"] == "ok"].copy()
    if ok.empty:
        raise RuntimeError(f"Every scratch_search candidate failed: {table[['name', 'error']].to_dict('records')}")
    ok["rank_gender"] = ok["val2_gender_accuracy"].rank(ascending=False, method="min")
    ok["rank_age"] = ok["val2_age_mae"].rank(ascending=True, method="min")
    ok["rank_sum"] = ok["rank_gender"] + ok["rank_age"]
    ok = ok.sort_values(["rank_sum", "val2_age_mae", "parameters"])
    best = ok.iloc[0]
    table = table.merge(ok[["name", "rank_gender", "rank_age", "rank_sum"]], on="name", how="left")
    table = table.sort_values(["rank_sum", "name"], na_position="last").reset_index(drop=True)
    architecture = {k: int(best[k]) for k in ARCHITECTURE_KEYS}
    for key in ("cross_stitch", "width_multiplier", "pooling"):
        if key in best and pd.notna(best[key]):
            architecture[key] = best[key]
    winner = {"name": best["name"], "architecture": architecture,
              "val2_gender_accuracy": float(best["val2_gender_accuracy"]),
              "val2_age_mae": float(best["val2_age_mae"]),
              "rule": "lowest rank(gender accuracy) + rank(age MAE) on val2; ties: lower MAE, fewer parameters",
              "candidates": int(len(ok)), "failed": int((table["status"] == "failed").sum())}
    logger.info("Scratch search winner: %s", winner)

    figure, axis = plt.subplots(figsize=(7, 5))
    axis.scatter(ok["val2_age_mae"], ok["val2_gender_accuracy"], s=40)
    for row in ok.itertuples():
        axis.annotate(row.name, (row.val2_age_mae, row.val2_gender_accuracy), fontsize=8,
                      xytext=(3, 3), textcoords="offset points")
    axis.scatter([best["val2_age_mae"]], [best["val2_gender_accuracy"]], s=160, facecolors="none",
                 edgecolors="red", label=f"chosen: {best['name']}")
    axis.set_xlabel("val2 age MAE (years, lower is better)")
    axis.set_ylabel("val2 gender accuracy (higher is better)")
    axis.set_title("CNN architecture search (study's Table 2 grid)")
    axis.legend()
    figure.tight_layout()
    return table, winner, figure
