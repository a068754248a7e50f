"""Nodes of the ``evaluation`` pipeline (the judging nodes are reused by ``evaluate_external``):
the only place where a model meets the test split. Every model is registered by name
(``pipeline.MODELS``) and arrives as a keyword argument; metrics come from
``age_gender.metrics.model_metrics`` (keys documented there and in the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from age_gender.faces import GENDERS
from age_gender.metrics import headline, model_metrics
from age_gender.reporting import STUDY_RESULTS, predict_models
from age_gender.training import cached_images, select_split


def predict_test_split(face_cache, face_splits: pd.DataFrame, inference: Mapping[str, Any] | None,
                       **models) -> pd.DataFrame:
    """Every trained model's predictions on the held-out test split (each at its input size)."""
    def faces(size: int):
        test = select_split(face_cache, face_splits, size, ["test"])
        return test.rows, test.images

    return predict_models(models, faces, inference)


def compute_metrics(predictions: pd.DataFrame) -> dict[str, Any]:
    """``model_metrics`` per model: {model name: metrics}."""
    return {name: model_metrics(part) for name, part in predictions.groupby("model", sort=False)}


def headlines(metrics: Mapping[str, Any], **training_info: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per evaluated model: gender accuracy, age MAE, n (``metrics.headline``) with how it trained
    (``{model}_training_info``), saved as ``test_metrics/{model}.json``."""
    return {name: {"model": name, **headline(values), **{k: v for k, v in (training_info.get(name) or {}).items()
                                                          if k != "model"}}
            for name, values in metrics.items()}


def comparison(test_metrics: Mapping[str, Any]) -> tuple[dict[str, Any], str, plt.Figure]:
    """All models side by side with the study's published numbers (JSON, Markdown, plot)."""
    rows = []
    for name, values in test_metrics.items():
        value = values() if callable(values) else values
        rows.append({"model": name, "gender_accuracy": value["gender_accuracy"], "age_mae": value["age_mae"],
                     "n": value["n"], "train_seconds": value.get("train_seconds"), "pretrained": value.get("pretrained"),
                     "source": f"this project, {name}" + (f" ({value['backbone']})" if value.get("backbone") else "")})
    for name, values in STUDY_RESULTS.items():
        rows.append({"model": name, "gender_accuracy": values["gender_accuracy"], "age_mae": values["age_mae"],
                     "n": 499, "train_seconds": None, "pretrained": None, "source": values["source"]})
    lines = ["| model | gender accuracy | age MAE (years) | n | source |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['gender_accuracy'] * 100:.2f} % | {r['age_mae']:.3f} | {r['n']} | {r['source']} |"
              for r in rows]
    markdown = "\n".join(lines) + "\n\nStudy numbers are on its own 499-image validation split; this " \
        "project's are on its held-out test split, drawn outside the 5,000-image training subset.\n"
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["model"] for r in rows]
    colors = ["tab:blue" if not n.startswith("study") else "tab:gray" for n in names]
    axes[0].barh(names, [r["gender_accuracy"] for r in rows], color=colors)
    axes[0].set_xlim(0.5, 1.0)
    axes[0].set_title("gender accuracy (higher is better)")
    axes[1].barh(names, [r["age_mae"] for r in rows], color=colors)
    axes[1].set_title("age MAE, years (lower is better)")
    figure.tight_layout()
    return {"models": rows}, markdown, figure


def plot_age_predictions(predictions: pd.DataFrame) -> plt.Figure:
    models = sorted(predictions["model"].unique())
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5), squeeze=False)
    for axis, name in zip(axes[0], models):
        part = predictions[predictions["model"] == name]
        axis.scatter(part["age"], part["age_pred"], s=6, alpha=0.5)
        axis.plot([0, 100], [0, 100], "k--", linewidth=1)
        axis.set_xlabel("true age")
        axis.set_ylabel("predicted age")
        axis.set_title(f"{name}: MAE {(part['age_pred'] - part['age']).abs().mean():.2f}")
    figure.tight_layout()
    return figure


def plot_error_by_band(metrics: Mapping[str, Any]) -> plt.Figure:
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, values in metrics.items():
        bands = values["age_mae_by_band"]
        axes[0].plot(list(bands), list(bands.values()), marker="o", label=name)
        races = values.get("by_race", {})
        axes[1].plot(list(races), [r["gender_accuracy"] for r in races.values()], marker="o", label=name)
    axes[0].set_title("age MAE by true age band")
    axes[0].tick_params(axis="x", rotation=45)
    axes[1].set_title("gender accuracy by race group")
    for axis in axes:
        axis.legend()
    figure.tight_layout()
    return figure


def plot_confusion(metrics: Mapping[str, Any]) -> plt.Figure:
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.8), squeeze=False)
    for axis, (name, values) in zip(axes[0], metrics.items()):
        matrix = np.array(values["gender"]["confusion_matrix"])
        axis.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            axis.text(j, i, str(count), ha="center", va="center")
        axis.set_xticks([0, 1], GENDERS)
        axis.set_yticks([0, 1], GENDERS)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{name}: gender")
    figure.tight_layout()
    return figure


def plot_gallery(predictions: pd.DataFrame, face_cache, per_kind: int = 6) -> plt.Figure:
    """The study's Figures 10-11: good and bad predictions with true and predicted labels."""
    models = sorted(predictions["model"].unique())
    images = cached_images(face_cache, max(int(k.removesuffix("px")) for k in face_cache if k.endswith("px")))
    figure, axes = plt.subplots(2 * len(models), per_kind, figsize=(2 * per_kind, 4.6 * len(models)), squeeze=False)
    for m, name in enumerate(models):
        part = predictions[predictions["model"] == name].copy()
        part["score"] = (part["age_pred"] - part["age"]).abs() + 20 * (part["gender_pred"] != part["gender"])
        part = part.sort_values("score")
        for row_offset, (kind, chosen) in enumerate((("good", part.head(per_kind)), ("bad", part.tail(per_kind)))):
            for k, axis in enumerate(axes[2 * m + row_offset]):
                axis.axis("off")
                if k >= len(chosen):
                    continue
                r = chosen.iloc[k]
                axis.imshow(images[int(r["cache_index"])])
                axis.set_title(f"{name} {kind}\ntrue {int(r['age'])} {GENDERS[int(r['gender'])][0].upper()}"
                               f" / pred {r['age_pred']:.0f} {GENDERS[int(r['gender_pred'])][0].upper()}",
                               fontsize=8, color="green" if kind == "good" else "red")
    figure.tight_layout()
    return figure
