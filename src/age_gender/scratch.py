"""The CNN-from-scratch family on the shared fit: what the ``scratch`` and ``scratch_search``
pipelines train (each candidate of the search and the final model alike)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from age_gender.models import build_multitask_cnn
from age_gender.training import FaceArrays, FitResult, fit_model, select_split

ARCHITECTURE_KEYS = ("conv_pairs", "dense_layers", "dense_units", "split_point")
BUILDER_KEYS = ("width_multiplier", "batch_norm", "l2", "dropout", "cross_stitch", "pooling")


def architecture_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The four architecture integers of a candidate or ``scratch.architecture`` plus any builder
    option it sets (``cross_stitch``, ``width_multiplier`` ...). Raises ValueError naming what lacks."""
    missing = [k for k in ARCHITECTURE_KEYS if k not in settings]
    if missing:
        raise ValueError(f"architecture {dict(settings)} lacks {missing}")
    return {k: v for k, v in settings.items() if k in ARCHITECTURE_KEYS or k in BUILDER_KEYS}


def choose_architecture(scratch: Mapping[str, Any], winner: Mapping[str, Any] | None) -> dict[str, Any]:
    """The configured ``scratch.architecture``, or the search's winner when ``use_search_winner``
    is set (the rule the ``scratch`` and ``distill`` pipelines share). Raises ValueError naming the
    pipeline to run when the winner is wanted but missing."""
    if scratch.get("use_search_winner"):
        if not winner or "architecture" not in winner:
            raise ValueError("scratch.use_search_winner is true but there is no search result: "
                             "run `kedro run --pipeline scratch_search` first.")
        return architecture_of(winner["architecture"])
    return architecture_of(scratch["architecture"])


def fit_cnn(face_cache: Mapping[str, Any], face_splits: pd.DataFrame, architecture: Mapping[str, Any],
            settings: Mapping[str, Any], device: Mapping[str, Any], train_splits: list[str],
            val_splits: list[str], checkpoint_dir: str | Path, train_data: FaceArrays | None = None,
            extra_identity: Mapping[str, Any] | None = None) -> FitResult:
    """Train one CNN of the study's family (``models.build_multitask_cnn``) on ``train_splits`` at
    ``settings['input_size']`` px, early-stopping on ``val_splits``; builder options come from
    ``settings`` unless ``architecture`` sets them. Resumable (``training.fit_model``).

    ``train_data`` (optional) replaces the rows of ``train_splits`` (e.g. with teacher-labelled
    faces added: ``age_gender.distill``); ``extra_identity`` joins the checkpoint's identity."""
    arch = architecture_of(architecture)
    size = int(settings["input_size"])
    train: FaceArrays = train_data if train_data is not None else select_split(face_cache, face_splits, size,
                                                                               train_splits)
    val = select_split(face_cache, face_splits, size, val_splits)
    options = {**{k: settings[k] for k in BUILDER_KEYS if k in settings}, **arch}

    def build(dtype, augment):
        return build_multitask_cnn(input_size=size, age_mean=float(train.age.mean()),
                                   age_std=float(train.age.std()), dtype=dtype, augmentation=augment,
                                   age_head=age_head["kind"], variance_weight=age_head["variance_weight"],
                                   **options)

    age_head = settings["age_head"]
    identity = {"architecture": options, "age_head": dict(age_head), "train": list(train_splits), "val": list(val_splits),
                **dict(extra_identity or {})}
    return fit_model(build, train, val, settings=settings, device=device, checkpoint_dir=checkpoint_dir,
                     identity=identity, cpu_bfloat16=True)
