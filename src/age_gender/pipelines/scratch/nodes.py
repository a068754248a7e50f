"""Nodes of the ``scratch`` pipeline, and ``fit_cnn``, which the search shares."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from age_gender.reporting import (
    flip_average,
    headline_metrics,
    plot_learning_curves,
    predict_faces,
    prediction_table,
)
from age_gender.training import (
    FitResult,
    augmentation,
    budget_seconds,
    compile_multitask,
    data_key,
    device_setup,
    learning_rate_schedule,
    make_dataset,
    resumable_fit,
    run_scope,
    select_split,
    set_seeds,
)

logger = logging.getLogger(__name__)

ARCHITECTURE_KEYS = ("conv_pairs", "dense_layers", "dense_units", "split_point")
BUILDER_KEYS = ("width_multiplier", "batch_norm", "l2", "dropout", "cross_stitch", "pooling")


def fit_cnn(face_cache: Mapping[str, Any], face_splits: pd.DataFrame, architecture: Mapping[str, Any],
            training: Mapping[str, Any], device: Mapping[str, Any], train_splits: list[str],
            val_splits: list[str], checkpoint_dir: str | Path) -> tuple[FitResult, Any]:
    """Train one CNN of the study's family on ``train_splits``, early-stopping on ``val_splits``."""
    from age_gender.models import build_multitask_cnn

    missing = [k for k in ARCHITECTURE_KEYS if k not in architecture]
    if missing:
        raise ValueError(f"architecture {dict(architecture)} lacks {missing}")
    size = int(training["input_size"])
    train = select_split(face_cache, face_splits, size, train_splits)
    val = select_split(face_cache, face_splits, size, val_splits)
    seed = int(training["seed"])
    set_seeds(seed)
    strategy, dtype, _ = device_setup(device, cpu_bfloat16=True)
    batch = int(training["batch_size"]) * strategy.num_replicas_in_sync
    train_ds = make_dataset(train, batch, shuffle=True, seed=seed,
                            augment=augmentation(training.get("augmentation"), seed))
    val_ds = make_dataset(val, batch, shuffle=False, seed=seed)
    arch = {k: architecture[k] for k in ARCHITECTURE_KEYS}
    options = {k: training[k] for k in BUILDER_KEYS if k in training}
    options.update({k: v for k, v in architecture.items() if k in BUILDER_KEYS})

    def build():
        return build_multitask_cnn(input_size=size, age_mean=float(train.age.mean()),
                                   age_std=float(train.age.std()), dtype=dtype, **arch, **options)

    def compile_model(model):
        per_epoch = -(-len(train) // batch)
        rate = learning_rate_schedule(float(training["learning_rate"]), training.get("lr_schedule"),
                                      int(training["epochs"]) * per_epoch,
                                      round(float(training.get("warmup_epochs", 0)) * per_epoch))
        compile_multitask(model, rate, training["loss_weights"],
                          training.get("age_loss", "huber"), device.get("jit_compile", False))

    config = {"architecture": arch, "options": options, "training": {k: v for k, v in training.items() if k != "time_budget_minutes"},
              "train": train_splits, "val": val_splits, "data": data_key(train.rows, val.rows),
              "dtype": dtype}
    with run_scope(strategy):
        result = resumable_fit(build, compile_model, train_ds, val_ds,
                               epochs=int(training["epochs"]), patience=int(training["patience"]),
                               min_delta=float(training["min_delta"]),
                               checkpoint_dir=checkpoint_dir, config=config,
                               time_budget_s=budget_seconds(training.get("time_budget_minutes")))
    return result, val


def choose_architecture(scratch: Mapping[str, Any], winner: Mapping[str, Any] | None) -> dict[str, Any]:
    """The configured architecture, or the search's winner when ``use_search_winner`` is set."""
    if scratch.get("use_search_winner"):
        if not winner or "architecture" not in winner:
            raise ValueError("scratch.use_search_winner is true but there is no search result: "
                             "run `kedro run --pipeline scratch_search` first.")
        return dict(winner["architecture"])
    return dict(scratch["architecture"])


def train_scratch_model(face_cache: Mapping[str, Any], face_splits: pd.DataFrame,
                        winner: Mapping[str, Any] | None, checkpoints: str, scratch: Mapping[str, Any],
                        training: Mapping[str, Any], device: Mapping[str, Any],
                        inference: Mapping[str, Any] | None = None):
    """Retrain the chosen CNN on train+val1 (early stopping on val2, which no model trained on)
    and score it once on the held-out test split."""
    architecture = choose_architecture(scratch, winner)
    result, _ = fit_cnn(face_cache, face_splits, architecture, {**training, **scratch.get("training", {})},
                        device, ["train", "val1"], ["val2"], checkpoints)
    test = select_split(face_cache, face_splits, int(training["input_size"]), ["test"])
    predictions = prediction_table(test.rows, *predict_faces(result.model, test.images,
                                                                    flip_average=flip_average(inference)))
    metrics = {**headline_metrics(predictions), "train_seconds": round(result.train_seconds, 1),
               "model": "scratch", "architecture": architecture, "input_size": int(training["input_size"]),
               "epochs_run": result.epochs_run, "best_epoch": result.best_epoch + 1,
               "stopped_early": result.stopped_early, "out_of_time": result.out_of_time, "parameters": int(result.model.count_params()),
               "resumed_from_epoch": result.resumed_from_epoch}
    logger.info("Scratch model on test: gender accuracy %.4f, age MAE %.3f (n=%d, %.0f s)",
                metrics["gender_accuracy"], metrics["age_mae"], metrics["n_test"], metrics["train_seconds"])
    curves = plot_learning_curves(result.history, f"CNN from scratch {architecture}")
    return result.model, result.history, metrics, predictions, curves
