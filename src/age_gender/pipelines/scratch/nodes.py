"""Nodes of the ``scratch`` pipeline (machinery: ``age_gender.scratch``, ``age_gender.training``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from age_gender.lineage import splits_split_id
from age_gender.reporting import plot_learning_curves
from age_gender.scratch import choose_architecture, fit_cnn
from age_gender.training import training_info


def train_scratch_model(face_cache: Mapping[str, Any], face_splits: pd.DataFrame,
                        winner: Mapping[str, Any] | None, checkpoints: str, scratch: Mapping[str, Any],
                        training: Mapping[str, Any], device: Mapping[str, Any]):
    """Retrain the chosen CNN on train+val1, early-stopping on val2 (which no model trained on).

    Returns the model, its history, its training info and learning curves (the test split is
    judged by the ``evaluation`` pipeline)."""
    architecture = choose_architecture(scratch, winner)
    settings = {**training, **(scratch.get("training") or {})}
    result = fit_cnn(face_cache, face_splits, architecture, settings, device, ["train", "val1"], ["val2"], checkpoints)
    info = training_info(result, model="scratch", architecture=architecture, input_size=int(settings["input_size"]),
                         split_id=splits_split_id(face_splits))
    curves = plot_learning_curves(result.history, f"CNN from scratch {architecture}")
    return result.model, result.history, info, curves
