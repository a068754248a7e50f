"""Predictions and plots shared by the pipelines (metrics: ``age_gender.metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from age_gender.tta import Views  # noqa: E402

# The study's published numbers (its validation split of a 5,000-image subset).
STUDY_RESULTS = {
    "study_cnn10": {"gender_accuracy": 0.9098, "age_mae": 5.949, "source": "study, CNN 10 (scratch)"},
    "study_xception": {"gender_accuracy": 0.8397, "age_mae": 5.639, "source": "study, Xception (transfer)"},
}


def predict_faces(model, images: np.ndarray, batch_size: int = 256,
                  views: Views | bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Predicted age (years, float64, N) and probability of 'female' (float64, N) for uint8
    images (N x S x S x 3, S the model's input size; a memory map is read a batch at a time).

    Plain NumPy batches (no ``tf.data``), so it runs on any Keras backend; the models carry their
    own preprocessing. ``views`` (:class:`age_gender.tta.Views`, test-time augmentation) averages
    each face's views, ``batch_size`` faces' views per step; a bool is ``Views(flip=views)``: the
    face and its mirror image (True) or the face alone (False), as :class:`PhotoPredictor` takes it.
    Raises ValueError (one line) for any other ``views`` (``"false"``, a tuple of zooms, a dict).
    """
    views = Views.of(views)
    runner = views.wrap(model)
    batch_size = max(1, int(batch_size))
    chunk = max(batch_size, 4096 // batch_size * batch_size)  # bounded memory
    ages, females = [], []
    for start in range(0, len(images), chunk):
        outputs = runner.predict(np.ascontiguousarray(images[start:start + chunk]), batch_size=batch_size,
                                 verbose=0)
        ages.append(np.asarray(outputs["age"], dtype=np.float64).reshape(-1))
        females.append(np.asarray(outputs["gender"], dtype=np.float64).reshape(-1))
    if not ages:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ages), np.concatenate(females)


def prediction_table(rows: pd.DataFrame, age_pred: np.ndarray, female_prob: np.ndarray) -> pd.DataFrame:
    table = rows[[c for c in ("file_name", "cache_index", "age", "age_low", "age_high", "gender", "race")
                  if c in rows]].copy()
    table["age_pred"] = age_pred
    table["female_prob"] = female_prob
    table["gender_pred"] = (female_prob >= 0.5).astype(int)
    return table.reset_index(drop=True)


def predict_table(model, rows: pd.DataFrame, images: np.ndarray, inference: Mapping[str, Any] | None,
                  name: str | None = None) -> pd.DataFrame:
    """``prediction_table`` of ``model`` on ``images`` (row i = ``rows`` row i), with the
    ``inference`` parameters (test-time views: ``age_gender.tta``); a ``model`` column when
    ``name`` is given."""
    table = prediction_table(rows, *predict_faces(model, images, views=Views.from_params(inference)))
    return table.assign(model=name) if name is not None else table


def predict_models(models: Mapping[str, Any], faces: Callable[[int], tuple[pd.DataFrame, np.ndarray]],
                   inference: Mapping[str, Any] | None) -> pd.DataFrame:
    """Predictions of every trained model (``models``: name -> Keras model or None when not
    trained yet) on ``faces(size)`` = (rows, uint8 images at the model's input size), stacked
    with a ``model`` column. Raises ValueError when no model is trained."""
    trained = {name: model for name, model in models.items() if model is not None}
    if not trained:
        raise ValueError(f"No trained model to evaluate (looked for {sorted(models)}): run "
                         f"`kedro run --pipeline scratch` and/or `--pipeline transfer` first.")
    tables = []
    for name, model in trained.items():
        rows, images = faces(int(model.input_shape[1]))
        tables.append(predict_table(model, rows, images, inference, name))
    return pd.concat(tables, ignore_index=True)


def active_ensembles(ensembles: Mapping[str, list[str] | None] | None) -> dict[str, list[str]]:
    """``evaluation.ensembles`` without the entries switched off (``null``; none when ``null``)."""
    return {name: list(members) for name, members in (ensembles or {}).items() if members is not None}


def ensemble_predictions(predictions: pd.DataFrame, ensembles: Mapping[str, list[str] | None] | None
                         ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``predictions`` (``predict_models``' table) with one more model per ensemble: on every face,
    the mean of its members' ``age_pred`` (years) and ``female_prob``, ``gender_pred`` from that
    mean at 0.5 (equal weights, nothing fitted on the test rows; Dietterich 2000, "Ensemble methods
    in machine learning"). ``ensembles``: name -> member model names (``None``: switched off). An ensemble with a member
    absent from ``predictions`` (not judged in this run, or not trained) is left out; returns the
    table and the ensembles kept. Raises ValueError when the members were not scored on the same
    faces (rows are matched by ``cache_index``, else ``file_name``, as ``metrics.paired_difference``)."""
    kept: dict[str, list[str]] = {}
    tables = [predictions]
    present = set(predictions["model"].unique()) if len(predictions) else set()
    key = "cache_index" if "cache_index" in predictions else "file_name"
    for name, members in active_ensembles(ensembles).items():
        if not set(members) <= present:
            continue
        parts = [predictions[predictions["model"] == member].set_index(key) for member in members]
        first = parts[0]
        if any(not part.index.is_unique or len(part) != len(first)
               or not part.index.sort_values().equals(first.index.sort_values()) for part in parts):
            raise ValueError(f"The members of ensemble {name} ({', '.join(members)}) were not scored on the "
                             "same faces: rerun `kedro run --pipeline evaluation`.")
        table = first.copy()
        table["age_pred"] = np.mean([part["age_pred"].reindex(first.index).to_numpy() for part in parts], axis=0)
        table["female_prob"] = np.mean([part["female_prob"].reindex(first.index).to_numpy() for part in parts], axis=0)
        table["gender_pred"] = (table["female_prob"] >= 0.5).astype(int)
        tables.append(table.reset_index().assign(model=name)[list(predictions.columns)])
        kept[name] = list(members)
    return pd.concat(tables, ignore_index=True), kept


def ensemble_training_info(members: list[str], training_info: Mapping[str, Mapping[str, Any] | None]
                           ) -> dict[str, Any] | None:
    """How an ensemble was made, from its members' training info (None when a member has none:
    not trained): the members, the split id they share (None when they differ, which
    ``lineage.check_trained_on`` then refuses), their summed ``train_seconds`` and whether any
    was pretrained or stopped by its time budget."""
    infos = [training_info.get(member) for member in members]
    if any(info is None for info in infos):
        return None
    splits = {info.get("split_id") for info in infos}
    seconds = [info.get("train_seconds") for info in infos]
    return {"ensemble_of": list(members), "pipeline": "evaluation",
            "input_size": ", ".join(f"{info.get('input_size')} ({m})" for m, info in zip(members, infos)),
            "split_id": splits.pop() if len(splits) == 1 else None,
            "train_seconds": round(sum(seconds), 1) if all(s is not None for s in seconds) else None,
            "pretrained": any(bool(info.get("pretrained")) for info in infos),
            "out_of_time": any(bool(info.get("out_of_time")) for info in infos)}


def with_ensemble_info(training_info: Mapping[str, Mapping[str, Any] | None],
                       evaluation: Mapping[str, Any] | None, judged) -> dict[str, Mapping[str, Any] | None]:
    """``training_info`` (model -> its ``{model}_training_info``) with an entry
    (``ensemble_training_info``) for every ensemble of ``evaluation.ensembles`` among ``judged``
    (the model names with metrics)."""
    ensembles = active_ensembles((evaluation or {}).get("ensembles"))
    return {**training_info, **{name: ensemble_training_info(members, training_info)
                                for name, members in ensembles.items() if name in judged}}


def plot_learning_curves(history: dict[str, list[float]], title: str) -> plt.Figure:
    """The study's Figures 4-5 (and 8-9): loss and accuracy / MAE per epoch, per task."""
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [("gender_loss", "gender loss"), ("gender_accuracy", "gender accuracy"),
              ("age_loss", "age loss"), ("age_mae", "age MAE (years)")]
    for axis, (key, label) in zip(axes.ravel(), panels):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                axis.plot(range(1, len(values) + 1), values, style,
                          label="validation" if prefix else "train")
        axis.set_title(label)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_val2_scatter(table: pd.DataFrame, label: str, title: str, chosen: str | None = None) -> plt.Figure:
    """Candidates by val2 age MAE (x) and gender accuracy (y), annotated with column ``label``;
    ``chosen`` (a ``label`` value) is ringed in red."""
    figure, axis = plt.subplots(figsize=(7, 5))
    axis.scatter(table["val2_age_mae"], table["val2_gender_accuracy"], s=40)
    for row in table.itertuples():
        axis.annotate(str(getattr(row, label)), (row.val2_age_mae, row.val2_gender_accuracy),
                      fontsize=8, xytext=(3, 3), textcoords="offset points")
    if chosen is not None:
        best = table[table[label] == chosen]
        axis.scatter(best["val2_age_mae"], best["val2_gender_accuracy"], s=160, facecolors="none",
                     edgecolors="red", label=f"chosen: {chosen}")
        axis.legend()
    axis.set_xlabel("val2 age MAE (years, lower is better)")
    axis.set_ylabel("val2 gender accuracy (higher is better)")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value
