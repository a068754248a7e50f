"""Nodes of the ``transfer`` pipeline (machinery: ``age_gender.transfer`` and ``age_gender.training``).

Stage 1 trains two-headed tops on backbone features computed once per split (comparing backbones
and heads takes minutes on a CPU); stage 2 fine-tunes the last layers of the chosen backbone under
the trained top, with augmentation. The test split is judged by the ``evaluation`` pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from age_gender import transfer
from age_gender.lineage import splits_split_id
from age_gender.reporting import plot_learning_curves, plot_val2_scatter
from age_gender.training import check_epochs, fit_model, select_split, training_info


def extract_features(face_cache: Mapping[str, Any], face_splits: pd.DataFrame,
                     params: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Pooled features of every compared backbone per split, stamped with the rows' data key."""
    return transfer.extract_features(face_cache, face_splits, params)


def _val2_row(top, features, provenance, face_splits, backbone: str) -> dict[str, Any]:
    x, labels = transfer.features_for(features, provenance, face_splits, backbone, ["val2"])
    return {f"val2_{k}": v for k, v in transfer.score_head(top, x, labels).items()}


def _fit_on_val1(features, provenance, face_splits, backbone: str, settings: Mapping[str, Any]):
    x, train = transfer.features_for(features, provenance, face_splits, backbone, ["train"])
    x_val, val = transfer.features_for(features, provenance, face_splits, backbone, ["val1"])
    return transfer.fit_head(x, train, x_val, val, **settings)


def compare_backbones(features, provenance: Mapping[str, Any], face_splits: pd.DataFrame,
                      params: Mapping[str, Any]) -> tuple[pd.DataFrame, plt.Figure]:
    """The study's Table 3: the same top on each backbone's frozen features, scored on val2."""
    rows = []
    for name in transfer.backbones_to_compare(params):
        started = time.perf_counter()
        top, history = _fit_on_val1(features, provenance, face_splits, name, transfer.head_settings(params))
        rows.append({"backbone": name, **_val2_row(top, features, provenance, face_splits, name),
                     "pretrained": provenance[name]["pretrained"], "weights": provenance[name]["weights"],
                     "epochs_run": len(history["loss"]), "head_seconds": round(time.perf_counter() - started, 1),
                     "feature_seconds": provenance[name]["seconds"]})
    table = pd.DataFrame(rows).sort_values("val2_gender_accuracy", ascending=False).reset_index(drop=True)
    table["label"] = table["backbone"] + np.where(table["pretrained"], "", " (NOT pretrained)")
    return table, plot_val2_scatter(table, "label", "Backbone comparison, frozen features (study's Table 3)")


def search_heads(features, provenance: Mapping[str, Any], face_splits: pd.DataFrame,
                 params: Mapping[str, Any]) -> tuple[pd.DataFrame, plt.Figure]:
    """The study's Table 4: head orderings of Dense / BatchNorm / Dropout on the chosen backbone."""
    name = params["backbone"]
    rows = []
    for structure in params["head_search"]["structures"]:
        settings = {**transfer.head_settings(params), "structure": structure}
        top, history = _fit_on_val1(features, provenance, face_splits, name, settings)
        rows.append({"structure": structure, **_val2_row(top, features, provenance, face_splits, name),
                     "epochs_run": len(history["loss"])})
    table = pd.DataFrame(rows).sort_values("val2_gender_accuracy", ascending=False).reset_index(drop=True)
    return table, plot_val2_scatter(table, "structure", f"Head structures on {name} features (study's Table 4)")


def tune_head(features, provenance: Mapping[str, Any], face_splits: pd.DataFrame, head_search: pd.DataFrame,
              trials_dir: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperband over learning rate and units of the best head structure (trials in ``trials_dir``,
    resumed on rerun); with ``hyperband.enabled: false``, the configured head."""
    settings = transfer.head_settings(params)
    hyperband = params["hyperband"]
    structure = hyperband.get("structure") or head_search.iloc[0]["structure"]
    if not hyperband.get("enabled", True):
        return {"structure": structure, "units": settings["units"],
                "learning_rate": settings["learning_rate"], "tuned": False}
    name = params["backbone"]
    x, train = transfer.features_for(features, provenance, face_splits, name, ["train"])
    x_val, val = transfer.features_for(features, provenance, face_splits, name, ["val1"])
    return transfer.tune_head(x, train, x_val, val, structure, settings, hyperband, trials_dir, name)


def train_transfer_model(face_cache, face_splits: pd.DataFrame, features, provenance: Mapping[str, Any],
                         best_head: Mapping[str, Any], checkpoints: str, params: Mapping[str, Any],
                         device: Mapping[str, Any]):
    """Final model: the best top trained on cached train+val1 features (early stopping on val2),
    then the last backbone layers fine-tuned under it with augmentation.

    Returns the model, its history {head, fine_tune}, its training info and learning curves."""
    name, fine = params["backbone"], params["fine_tune"]
    check_epochs(fine["epochs"], "transfer.fine_tune.epochs")  # before stage 1's work
    head = {**transfer.head_settings(params), **{k: best_head[k] for k in ("structure", "units", "learning_rate")}}
    started = time.perf_counter()
    x, train_labels = transfer.features_for(features, provenance, face_splits, name, ["train", "val1"])
    x_val, val_labels = transfer.features_for(features, provenance, face_splits, name, ["val2"])
    top, head_history = transfer.fit_head(x, train_labels, x_val, val_labels, **head)
    stage1_seconds = time.perf_counter() - started

    size = int(params["input_size"])
    train = select_split(face_cache, face_splits, size, ["train", "val1"])
    val = select_split(face_cache, face_splits, size, ["val2"])
    unfrozen: list[str] = []
    settings = {**{k: v for k, v in fine.items() if k != "unfreeze_last"}, "seed": params["seed"],
                "loss_weights": params["loss_weights"], "age_loss": params["age_loss"],
                "augmentation": params.get("augmentation")}
    identity = {"backbone": name, "input_size": size, "weights": provenance[name]["weights"],
                "head": head, "unfreeze_last": fine["unfreeze_last"]}
    result = fit_model(transfer.fine_tune_builder(name, params, top, int(fine["unfreeze_last"]), unfrozen),
                       train, val, settings=settings, device=device, checkpoint_dir=checkpoints, identity=identity)
    info = training_info(result, model="transfer", backbone=name, pretrained=bool(provenance[name]["pretrained"]),
                         weights=provenance[name]["weights"], input_size=size, head=dict(best_head),
                         unfrozen_layers=len(unfrozen) or int(fine["unfreeze_last"]),
                         split_id=splits_split_id(face_splits))
    info["train_seconds"] = round(stage1_seconds + result.train_seconds, 1)
    curves = plot_learning_curves(result.history, f"Fine-tuning {name} (last {fine['unfreeze_last']} layers)")
    return result.model, {"head": head_history, "fine_tune": result.history}, info, curves
