"""Predictions, core metrics and plots shared by the training and evaluation pipelines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# The study's published numbers (its validation split of a 5,000-image subset).
STUDY_RESULTS = {
    "study_cnn10": {"gender_accuracy": 0.9098, "age_mae": 5.949, "source": "study, CNN 10 (scratch)"},
    "study_xception": {"gender_accuracy": 0.8397, "age_mae": 5.639, "source": "study, Xception (transfer)"},
}


def predict_faces(model, images: np.ndarray, batch_size: int = 256,
                  flip_average: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Predicted age (years) and probability of 'female' for uint8 images.

    ``flip_average`` also predicts the mirror image and averages the two (test-time augmentation
    with the flip the models trained on): one more forward pass for a steadier estimate.
    """
    chunk = max(int(batch_size), 4096 // int(batch_size) * int(batch_size))  # bounded memory

    def run(flip: bool):  # uint8 batches on any Keras backend: the model casts them
        ages, females = [], []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            outputs = model.predict(np.ascontiguousarray(part[:, :, ::-1] if flip else part),
                                    batch_size=batch_size, verbose=0)
            ages.append(np.asarray(outputs["age"], dtype=np.float64).reshape(-1))
            females.append(np.asarray(outputs["gender"], dtype=np.float64).reshape(-1))
        if not ages:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(ages), np.concatenate(females)

    age, female = run(False)
    if flip_average and len(images):
        age_flipped, female_flipped = run(True)
        age, female = (age + age_flipped) / 2, (female + female_flipped) / 2
    return age, female


def flip_average(inference: Mapping[str, Any] | None) -> bool:
    """The ``inference.flip_average`` parameter, checked."""
    value = (inference or {}).get("flip_average", False)
    if not isinstance(value, bool):
        raise ValueError(f"inference.flip_average must be true or false, got {value!r}")
    return value


def prediction_table(rows: pd.DataFrame, age_pred: np.ndarray, female_prob: np.ndarray) -> pd.DataFrame:
    table = rows[[c for c in ("file_name", "cache_index", "age", "gender", "race") if c in rows]].copy()
    table["age_pred"] = age_pred
    table["female_prob"] = female_prob
    table["gender_pred"] = (female_prob >= 0.5).astype(int)
    return table.reset_index(drop=True)


def headline_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    return {
        "gender_accuracy": round(float((predictions["gender_pred"] == predictions["gender"]).mean()), 4),
        "age_mae": round(float((predictions["age_pred"] - predictions["age"]).abs().mean()), 3),
        "n_test": int(len(predictions)),
    }


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
