"""Nodes of the ``transfer`` pipeline.

Stage 1 trains two-headed tops on backbone features computed once per split (so comparing
backbones and heads takes minutes on a CPU); stage 2 fine-tunes the last layers of the chosen
backbone under the trained top, with augmentation, and tests the result once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from age_gender.reporting import (  # noqa: E402
    flip_average,
    headline_metrics,
    plot_learning_curves,
    predict_faces,
    prediction_table,
)
from age_gender.training import (  # noqa: E402
    augmentation,
    budget_seconds,
    compile_multitask,
    data_key,
    device_setup,
    dtype_policy,
    fingerprint,
    learning_rate_schedule,
    make_dataset,
    resumable_fit,
    run_scope,
    select_split,
    set_seeds,
)

logger = logging.getLogger(__name__)

FEATURE_SPLITS = ("train", "val1", "val2")  # the test split is scored once, from images, by the final model


def _backbones_to_compare(params: Mapping[str, Any]) -> list[str]:
    names = list(dict.fromkeys([*params.get("compare", []), params["backbone"]]))
    from age_gender.models import BACKBONES

    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        raise ValueError(f"transfer: unknown backbone(s) {unknown}; known: {sorted(BACKBONES)}")
    return names


def _weights_for(name: str, params: Mapping[str, Any]) -> tuple[str | None, bool]:
    from age_gender.models import resolve_weights

    return resolve_weights(name, (params.get("backbone_weights") or {}).get(name, "imagenet"),
                           bool(params.get("allow_random_init", False)))


def _feature_extractor(name: str, params: Mapping[str, Any]):
    from age_gender.models import build_backbone
    from age_gender.models.heads import build_feature_extractor

    weights, pretrained = _weights_for(name, params)
    size = int(params["input_size"])
    backbone = build_backbone(name, size, weights)
    return build_feature_extractor(name, backbone, size), backbone, weights, pretrained


def extract_features(face_cache, face_splits: pd.DataFrame, params: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Pooled features of every compared backbone for each split, computed once.

    Returns arrays keyed ``{backbone}__{split}`` (float32, N x D) and, per backbone, where its
    weights came from and whether it is pretrained (random weights are reported as such).
    """
    set_seeds(int(params["seed"]))
    features, provenance = {}, {}
    size = int(params["input_size"])
    for name in _backbones_to_compare(params):
        started = time.perf_counter()
        extractor, _, weights, pretrained = _feature_extractor(name, params)
        for split in FEATURE_SPLITS:
            data = select_split(face_cache, face_splits, size, [split])
            import tensorflow as tf

            dataset = tf.data.Dataset.from_tensor_slices(data.images).batch(64).map(
                lambda x: tf.cast(x, tf.float32))
            features[f"{name}__{split}"] = extractor.predict(dataset, verbose=0).astype(np.float32)
        provenance[name] = {"weights": weights or "random", "pretrained": pretrained,
                            "feature_dim": int(extractor.output_shape[-1]),
                            "seconds": round(time.perf_counter() - started, 1)}
        if not pretrained:
            logger.warning("Backbone %s runs with RANDOM weights: results are not transfer learning", name)
        logger.info("Features of %s: %s", name, provenance[name])
    return features, provenance


def _labels(face_splits: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rows = face_splits[face_splits["split"] == split].sort_values("cache_index").reset_index(drop=True)
    return rows["age"].to_numpy(np.float32), rows["gender"].to_numpy(np.float32), rows


def _feature_arrays(features: Mapping[str, Any], name: str, split: str) -> np.ndarray:
    key = f"{name}__{split}"
    if key not in features:
        raise ValueError(f"No cached features {key}; rerun extract_features with this backbone.")
    value = features[key]
    return np.asarray(value() if callable(value) else value)


def fit_head(features: Mapping[str, Any], face_splits: pd.DataFrame, backbone: str, *, structure: str,
             units: int, dropout: float, learning_rate: float, epochs: int, patience: int,
             batch_size: int, loss_weights: Mapping[str, float], age_loss: str, seed: int,
             train_splits=("train",), val_split: str = "val1"):
    """Train a two-headed top on cached features; returns (top, history dict)."""
    import keras

    from age_gender.models import build_two_headed_top

    set_seeds(seed)
    x_train = np.concatenate([_feature_arrays(features, backbone, s) for s in train_splits])
    label_parts = [_labels(face_splits, s) for s in train_splits]
    age = np.concatenate([p[0] for p in label_parts])
    gender = np.concatenate([p[1] for p in label_parts])
    x_val = _feature_arrays(features, backbone, val_split)
    age_val, gender_val, _ = _labels(face_splits, val_split)
    top = build_two_headed_top(x_train.shape[1], structure, int(units), float(dropout),
                               age_mean=float(age.mean()), age_std=float(age.std()))
    compile_multitask(top, float(learning_rate), loss_weights, age_loss)
    history = top.fit(
        x_train, {"age": age[:, None], "gender": gender[:, None]}, batch_size=int(batch_size),
        epochs=int(epochs), shuffle=True, verbose=0,
        validation_data=(x_val, {"age": age_val[:, None], "gender": gender_val[:, None]}),
        callbacks=[keras.callbacks.EarlyStopping(patience=int(patience), restore_best_weights=True),
                   keras.callbacks.TerminateOnNaN()])
    return top, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def _score_head(top, features, face_splits, backbone: str, split: str = "val2") -> dict[str, float]:
    x = _feature_arrays(features, backbone, split)
    _, _, rows = _labels(face_splits, split)
    outputs = top.predict(x, verbose=0)
    table = prediction_table(rows, np.asarray(outputs["age"]).ravel(), np.asarray(outputs["gender"]).ravel())
    return headline_metrics(table)


def _head_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    head = params["head"]
    return {"structure": head["structure"], "units": head["units"], "dropout": head["dropout"],
            "learning_rate": head["learning_rate"], "epochs": head["epochs"], "patience": head["patience"],
            "batch_size": head["batch_size"], "loss_weights": params["loss_weights"],
            "age_loss": params["age_loss"], "seed": int(params["seed"])}


def _scatter(table: pd.DataFrame, label: str, title: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(7, 5))
    axis.scatter(table["val2_age_mae"], table["val2_gender_accuracy"], s=40)
    for row in table.itertuples():
        axis.annotate(str(getattr(row, label)), (row.val2_age_mae, row.val2_gender_accuracy),
                      fontsize=8, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("val2 age MAE (years, lower is better)")
    axis.set_ylabel("val2 gender accuracy (higher is better)")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def compare_backbones(features, face_splits: pd.DataFrame, provenance: Mapping[str, Any],
                      params: Mapping[str, Any]) -> tuple[pd.DataFrame, plt.Figure]:
    """The study's Table 3: the same top on each backbone's frozen features, scored on val2."""
    rows = []
    for name in _backbones_to_compare(params):
        started = time.perf_counter()
        top, history = fit_head(features, face_splits, name, **_head_settings(params))
        rows.append({"backbone": name, **{f"val2_{k}": v for k, v in _score_head(top, features, face_splits, name).items()},
                     "pretrained": provenance[name]["pretrained"], "weights": provenance[name]["weights"],
                     "epochs_run": len(history["loss"]), "head_seconds": round(time.perf_counter() - started, 1),
                     "feature_seconds": provenance[name]["seconds"]})
    table = pd.DataFrame(rows).sort_values("val2_gender_accuracy", ascending=False).reset_index(drop=True)
    table["label"] = table["backbone"] + np.where(table["pretrained"], "", " (NOT pretrained)")
    return table, _scatter(table, "label", "Backbone comparison, frozen features (study's Table 3)")


def search_heads(features, face_splits: pd.DataFrame, params: Mapping[str, Any]) -> tuple[pd.DataFrame, plt.Figure]:
    """The study's Table 4: head orderings of Dense / BatchNorm / Dropout on the chosen backbone."""
    name = params["backbone"]
    rows = []
    for structure in params["head_search"]["structures"]:
        settings = {**_head_settings(params), "structure": structure}
        top, history = fit_head(features, face_splits, name, **settings)
        rows.append({"structure": structure, **{f"val2_{k}": v for k, v in _score_head(top, features, face_splits, name).items()},
                     "epochs_run": len(history["loss"])})
    table = pd.DataFrame(rows).sort_values("val2_gender_accuracy", ascending=False).reset_index(drop=True)
    return table, _scatter(table, "structure", f"Head structures on {name} features (study's Table 4)")


def tune_head(features, face_splits: pd.DataFrame, head_search: pd.DataFrame, trials_dir: str,
              params: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperband (keras-tuner) over learning rate and dense units of the best head structure.

    Trials live in ``trials_dir`` (the ``hyperband_trials`` catalog entry); rerunning resumes
    instead of starting over.
    """
    import keras
    import keras_tuner

    from age_gender.models import build_two_headed_top

    settings = _head_settings(params)
    structure = params["hyperband"].get("structure") or head_search.iloc[0]["structure"]
    hb = params["hyperband"]
    if not hb.get("enabled", True):
        return {"structure": structure, "units": settings["units"],
                "learning_rate": settings["learning_rate"], "tuned": False}
    name = params["backbone"]
    x_train = _feature_arrays(features, name, "train")
    age, gender, _ = _labels(face_splits, "train")
    x_val = _feature_arrays(features, name, "val1")
    age_val, gender_val, _ = _labels(face_splits, "val1")

    def build(hp):
        top = build_two_headed_top(
            x_train.shape[1], structure, hp.Int("units", hb["units_min"], hb["units_max"], step=hb["units_step"]),
            settings["dropout"], age_mean=float(age.mean()), age_std=float(age.std()))
        compile_multitask(top, hp.Float("learning_rate", hb["lr_min"], hb["lr_max"], sampling="log"),
                          settings["loss_weights"], settings["age_loss"])
        return top

    tuner = keras_tuner.Hyperband(
        build, objective=keras_tuner.Objective("val_loss", "min"), max_epochs=int(hb["max_epochs"]),
        factor=int(hb["factor"]), hyperband_iterations=1, seed=int(params["seed"]),
        directory=str(Path(trials_dir)), overwrite=False,
        # one folder per search set-up: a rerun of the same set-up resumes, a changed one starts anew
        project_name=f"{name}_{structure}_{fingerprint({'hb': dict(hb), 'head': settings, 'n': len(age)})}")
    started = time.perf_counter()
    tuner.search(x_train, {"age": age[:, None], "gender": gender[:, None]},
                 validation_data=(x_val, {"age": age_val[:, None], "gender": gender_val[:, None]}),
                 batch_size=settings["batch_size"], verbose=0,
                 callbacks=[keras.callbacks.EarlyStopping(patience=settings["patience"])])
    best = tuner.get_best_hyperparameters(1)[0]
    trials = len(tuner.oracle.trials)
    result = {"structure": structure, "units": int(best.get("units")),
              "learning_rate": float(best.get("learning_rate")), "tuned": True, "trials": trials,
              "seconds": round(time.perf_counter() - started, 1)}
    logger.info("Hyperband best of %d trials: %s", trials, result)
    return result


def _unfreeze_last(backbone, count: int) -> list[str]:
    """Make the last ``count`` weighted layers trainable (batch norm stays frozen)."""
    import keras

    backbone.trainable = True
    weighted = [layer for layer in backbone.layers if layer.weights]
    for layer in backbone.layers:
        layer.trainable = False
    chosen = [layer for layer in weighted if not isinstance(layer, keras.layers.BatchNormalization)]
    chosen = chosen[-count:] if count > 0 else []
    for layer in chosen:
        layer.trainable = True
    return [layer.name for layer in chosen]


def train_transfer_model(face_cache, face_splits: pd.DataFrame, features, provenance: Mapping[str, Any],
                         best_head: Mapping[str, Any], checkpoints: str, params: Mapping[str, Any],
                         device: Mapping[str, Any], inference: Mapping[str, Any] | None = None):
    """Final model: top trained on cached train+val1 features, then the last layers of the
    backbone fine-tuned with augmentation (early stopping on val2), tested once on test.

    Every batch-norm layer, in the backbone and in the top, stays in inference mode while
    fine-tuning, so training and inference see the same normalisation."""

    from age_gender.models import build_transfer_model

    name = params["backbone"]
    seed = int(params["seed"])
    settings = {**_head_settings(params), "structure": best_head["structure"], "units": best_head["units"],
                "learning_rate": best_head["learning_rate"]}
    started = time.perf_counter()
    top, head_history = fit_head(features, face_splits, name, **settings, train_splits=("train", "val1"),
                                 val_split="val2")
    stage1_seconds = time.perf_counter() - started
    fine = params["fine_tune"]
    size = int(params["input_size"])
    train = select_split(face_cache, face_splits, size, ["train", "val1"])
    val = select_split(face_cache, face_splits, size, ["val2"])
    strategy, dtype, _ = device_setup(device)
    batch = int(fine["batch_size"]) * strategy.num_replicas_in_sync
    train_ds = make_dataset(train, batch, shuffle=True, seed=seed,
                            augment=augmentation(params.get("augmentation"), seed))
    val_ds = make_dataset(val, batch, shuffle=False, seed=seed)
    unfrozen: list[str] = []

    def build():
        import keras

        with dtype_policy(dtype):  # the backbone computes in bfloat16 where that pays; the top stays float32
            extractor, backbone, _, _ = _feature_extractor(name, params)
        unfrozen[:] = _unfreeze_last(backbone, int(fine["unfreeze_last"]))
        for layer in top.layers:  # the top's batch norm, too, keeps the statistics of stage 1
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        return build_transfer_model(extractor, top)

    def compile_model(model):
        per_epoch = -(-len(train) // batch)
        rate = learning_rate_schedule(float(fine["learning_rate"]), fine.get("lr_schedule"),
                                      int(fine["epochs"]) * per_epoch,
                                      round(float(fine.get("warmup_epochs", 0)) * per_epoch))
        compile_multitask(model, rate, params["loss_weights"], params["age_loss"],
                          device.get("jit_compile", False))

    schedule = {k: v for k, v in fine.items() if k != "time_budget_minutes"}  # a new budget resumes
    config = {"backbone": name, "params": {**params, "fine_tune": schedule}, "head": dict(best_head), "dtype": dtype,
              "data": data_key(train.rows, val.rows)}
    set_seeds(seed)
    with run_scope(strategy):
        result = resumable_fit(build, compile_model, train_ds, val_ds, epochs=int(fine["epochs"]),
                               patience=int(fine["patience"]), min_delta=float(fine["min_delta"]),
                               checkpoint_dir=checkpoints, config=config,
                               time_budget_s=budget_seconds(fine.get("time_budget_minutes")))
    test = select_split(face_cache, face_splits, size, ["test"])
    predictions = prediction_table(test.rows, *predict_faces(result.model, test.images,
                                                             flip_average=flip_average(inference)))
    metrics = {**headline_metrics(predictions),
               "train_seconds": round(stage1_seconds + result.train_seconds, 1),
               "model": "transfer", "backbone": name, "pretrained": bool(provenance[name]["pretrained"]),
               "weights": provenance[name]["weights"], "input_size": size, "head": dict(best_head),
               "unfrozen_layers": len(unfrozen) or int(fine["unfreeze_last"]),
               "fine_tune_epochs_run": result.epochs_run, "out_of_time": result.out_of_time, "best_epoch": result.best_epoch + 1,
               "parameters": int(result.model.count_params()),
               "resumed_from_epoch": result.resumed_from_epoch}
    history = {"head": head_history, "fine_tune": result.history}
    logger.info("Transfer model on test: gender accuracy %.4f, age MAE %.3f (n=%d, %.0f s)",
                metrics["gender_accuracy"], metrics["age_mae"], metrics["n_test"], metrics["train_seconds"])
    curves = plot_learning_curves(result.history, f"Fine-tuning {name} (last {fine['unfreeze_last']} layers)")
    return result.model, history, metrics, predictions, curves
