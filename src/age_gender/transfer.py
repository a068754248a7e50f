"""Transfer-learning machinery: pooled backbone features computed once per split (stamped with
the data key of the rows they came from), two-headed tops fitted on them, Hyperband over the top,
and the fine-tuning model whose last backbone layers are unfrozen.

Feature arrays are float32, N x D (D the backbone's pooled width), row i = row i of
``training.split_rows(face_splits, [split])``. Labels: age in years, gender 1 = female.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pandas as pd

from age_gender.metrics import headline, model_metrics
from age_gender.models import (
    BACKBONES,
    build_backbone,
    build_transfer_model,
    build_two_headed_top,
    resolve_weights,
    unfreeze_last,
)
from age_gender.models.heads import build_feature_extractor
from age_gender.reporting import prediction_table
from age_gender.training import (
    FaceArrays,
    check_epochs,
    compile_multitask,
    data_key,
    dtype_policy,
    fingerprint,
    select_split,
    set_seeds,
    split_rows,
)

logger = logging.getLogger(__name__)

FEATURE_SPLITS = ("train", "val1", "val2")  # the test split is scored once, from images, in evaluation


def backbones_to_compare(params: Mapping[str, Any]) -> list[str]:
    """``transfer.compare`` plus ``transfer.backbone``, in order, each once; unknown names raise."""
    names = list(dict.fromkeys([*params.get("compare", []), params["backbone"]]))
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        raise ValueError(f"transfer: unknown backbone(s) {unknown}; known: {sorted(BACKBONES)}")
    return names


def feature_extractor(name: str, params: Mapping[str, Any]):
    """(extractor, backbone, weights, pretrained): the backbone ``name`` at ``input_size`` with its
    weights from ``backbone_weights`` and its own preprocessing; the extractor maps uint8-valued
    float32 images to pooled features."""
    weights, pretrained = resolve_weights(name, (params.get("backbone_weights") or {}).get(name, "imagenet"),
                                          bool(params.get("allow_random_init", False)))
    size = int(params["input_size"])
    backbone = build_backbone(name, size, weights)
    return build_feature_extractor(name, backbone, size), backbone, weights, pretrained


def predict_features(extractor, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Features (float32, N x D) of uint8 images (N x S x S x 3), in NumPy batches."""
    parts = [np.asarray(extractor.predict_on_batch(np.asarray(images[i:i + batch_size], dtype=np.float32)))
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def extract_features(face_cache: Mapping[str, Any], face_splits: pd.DataFrame,
                     params: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Features of every compared backbone for each of ``FEATURE_SPLITS``, keyed
    ``{backbone}__{split}``, and per backbone its provenance: weights, ``pretrained``,
    ``feature_dim``, ``seconds`` and ``data_keys`` {split: ``training.data_key`` of the rows}."""
    set_seeds(int(params["seed"]))
    size = int(params["input_size"])
    data = {split: select_split(face_cache, face_splits, size, [split]) for split in FEATURE_SPLITS}
    features, provenance = {}, {}
    for name in backbones_to_compare(params):
        started = time.perf_counter()
        extractor, _, weights, pretrained = feature_extractor(name, params)
        for split, arrays in data.items():
            features[f"{name}__{split}"] = predict_features(extractor, arrays.images)
        provenance[name] = {"weights": weights or "random", "pretrained": pretrained,
                            "feature_dim": int(extractor.output_shape[-1]),
                            "seconds": round(time.perf_counter() - started, 1),
                            "data_keys": {split: data_key(arrays.rows) for split, arrays in data.items()}}
        if not pretrained:
            logger.warning("Backbone %s runs with RANDOM weights: results are not transfer learning", name)
        logger.info("Features of %s: %s", name, provenance[name])
    return features, provenance


def features_for(features: Mapping[str, Any], provenance: Mapping[str, Any], face_splits: pd.DataFrame,
                 backbone: str, splits: tuple[str, ...] | list[str]) -> tuple[np.ndarray, FaceArrays]:
    """Cached features of ``backbone`` for ``splits`` (concatenated in that order) with the rows and
    labels they belong to (``FaceArrays`` without images).

    Refuses, with one line naming the fix, features missing or computed from other rows than the
    current ``face_splits`` holds (a new split or ingestion since extraction)."""
    xs, parts = [], []
    for split in splits:
        key = f"{backbone}__{split}"
        stamp = (provenance.get(backbone) or {}).get("data_keys", {}).get(split)
        rows = split_rows(face_splits, [split])
        if key not in features or stamp is None:
            raise ValueError(f"No cached {key} features: rerun `kedro run --pipeline transfer` "
                             f"(extract_features) with this backbone.")
        if stamp != data_key(rows):
            raise ValueError(f"Cached {key} features were computed from other rows (data key {stamp} vs "
                             f"{data_key(rows)}): rerun `kedro run --pipeline transfer` (extract_features).")
        value = features[key]
        x = np.asarray(value() if callable(value) else value)
        if len(x) != len(rows):
            raise ValueError(f"Cached {key} features have {len(x)} rows, the split {len(rows)}: rerun "
                             f"`kedro run --pipeline transfer` (extract_features).")
        xs.append(x)
        parts.append(rows)
    rows = pd.concat(parts, ignore_index=True)
    labels = FaceArrays(np.zeros((len(rows), 0), np.uint8), rows["age"].to_numpy(np.float32),
                        rows["gender"].to_numpy(np.float32), rows)
    return np.concatenate(xs), labels


def head_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``fit_head`` from the ``transfer`` parameters."""
    head = params["head"]
    return {"structure": head["structure"], "units": head["units"], "dropout": head["dropout"],
            "learning_rate": head["learning_rate"], "epochs": head["epochs"], "patience": head["patience"],
            "batch_size": head["batch_size"], "loss_weights": params["loss_weights"],
            "age_loss": params["age_loss"], "age_head": dict(params["age_head"]), "seed": int(params["seed"])}


def _targets(labels: FaceArrays) -> dict[str, np.ndarray]:
    return {"age": labels.age[:, None], "gender": labels.gender[:, None]}


def fit_head(x_train: np.ndarray, train: FaceArrays, x_val: np.ndarray, val: FaceArrays, *, structure: str,
             units: int, dropout: float, learning_rate: float, epochs: int, patience: int, batch_size: int,
             loss_weights: Mapping[str, float], age_loss: str, age_head: Mapping[str, Any], seed: int):
    """Train a two-headed top on features, early-stopping on ``val`` (best weights restored).

    Returns (top, history {metric: [float per epoch]}); raises NothingTrainedError for epochs < 1."""
    check_epochs(epochs, "transfer.head.epochs")
    set_seeds(seed)
    top = build_two_headed_top(x_train.shape[1], structure, int(units), float(dropout),
                               age_mean=float(train.age.mean()), age_std=float(train.age.std()),
                               age_head=age_head["kind"], variance_weight=float(age_head["variance_weight"]))
    compile_multitask(top, float(learning_rate), loss_weights, age_loss)
    history = top.fit(
        x_train, _targets(train), batch_size=int(batch_size), epochs=int(epochs), shuffle=True, verbose=0,
        validation_data=(x_val, _targets(val)),
        callbacks=[keras.callbacks.EarlyStopping(patience=int(patience), restore_best_weights=True),
                   keras.callbacks.TerminateOnNaN()])
    return top, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def score_head(top, x: np.ndarray, labels: FaceArrays) -> dict[str, Any]:
    """``metrics.headline`` of a top's predictions on features ``x`` (for model selection)."""
    outputs = top.predict(x, verbose=0)
    table = prediction_table(labels.rows, np.asarray(outputs["age"]).ravel(), np.asarray(outputs["gender"]).ravel())
    return headline(model_metrics(table))


def tune_head(x_train: np.ndarray, train: FaceArrays, x_val: np.ndarray, val: FaceArrays, structure: str,
              settings: Mapping[str, Any], hyperband: Mapping[str, Any], trials_dir: str | Path,
              project: str) -> dict[str, Any]:
    """Hyperband (keras-tuner) over dense units and learning rate of a head ``structure``.

    Trials live in ``trials_dir``/``project``-fingerprint; the same set-up resumes, a changed one
    starts anew. Returns {structure, units, learning_rate, tuned, trials, seconds}."""
    hb = hyperband

    def build(hp):
        top = build_two_headed_top(
            x_train.shape[1], structure, hp.Int("units", hb["units_min"], hb["units_max"], step=hb["units_step"]),
            settings["dropout"], age_mean=float(train.age.mean()), age_std=float(train.age.std()),
            age_head=settings["age_head"]["kind"], variance_weight=float(settings["age_head"]["variance_weight"]))
        compile_multitask(top, hp.Float("learning_rate", hb["lr_min"], hb["lr_max"], sampling="log"),
                          settings["loss_weights"], settings["age_loss"])
        return top

    tuner = keras_tuner.Hyperband(
        build, objective=keras_tuner.Objective("val_loss", "min"), max_epochs=int(hb["max_epochs"]),
        factor=int(hb["factor"]), hyperband_iterations=1, seed=int(settings["seed"]),
        directory=str(Path(trials_dir)), overwrite=False,
        project_name=f"{project}_{structure}_{fingerprint({'hb': dict(hb), 'head': dict(settings), 'data': data_key(train.rows, val.rows)})}")
    started = time.perf_counter()
    tuner.search(x_train, _targets(train), validation_data=(x_val, _targets(val)),
                 batch_size=settings["batch_size"], verbose=0,
                 callbacks=[keras.callbacks.EarlyStopping(patience=settings["patience"])])
    best = tuner.get_best_hyperparameters(1)[0]
    result = {"structure": structure, "units": int(best.get("units")),
              "learning_rate": float(best.get("learning_rate")), "tuned": True,
              "trials": len(tuner.oracle.trials), "seconds": round(time.perf_counter() - started, 1)}
    logger.info("Hyperband best: %s", result)
    return result


def fine_tune_builder(name: str, params: Mapping[str, Any], top, unfreeze: int,
                      unfrozen: list[str]) -> Callable[[str | None, Any], Any]:
    """A ``build(dtype, augment)`` for ``training.fit_model``: backbone ``name`` (computing in ``dtype``)
    under the trained ``top``, its last ``unfreeze`` weighted layers trainable; every batch-norm
    layer, the top's too, stays in inference mode. The unfrozen layer names go into ``unfrozen``."""
    def build(dtype: str | None, augment=None):
        with dtype_policy(dtype):  # the backbone computes in bfloat16 where that pays; the top stays float32
            extractor, backbone, _, _ = feature_extractor(name, params)
        unfrozen[:] = unfreeze_last(backbone, unfreeze)
        for layer in top.layers:  # the top's batch norm keeps the statistics of stage 1
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        return build_transfer_model(extractor, top, augment)

    return build
