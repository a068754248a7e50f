"""Nodes of the ``evaluation`` pipeline (reused by ``evaluate_external``).

Metric keys (stable, documented in the README): per model, ``gender`` {accuracy, precision,
recall, roc_auc, confusion_matrix [[tn, fp], [fn, tp]] with female as positive}, ``age`` {mae,
rmse, within_5, within_10}, ``age_mae_by_band``, ``gender_accuracy_by_gender``, ``by_race``
{race: {n, gender_accuracy, age_mae}}, plus ``n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_score, recall_score, roc_auc_score  # noqa: E402

from age_gender.faces import GENDERS, RACES  # noqa: E402
from age_gender.reporting import STUDY_RESULTS, flip_average, predict_faces, prediction_table  # noqa: E402
from age_gender.training import cached_images  # noqa: E402

AGE_BANDS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 120]


def test_rows(face_splits: pd.DataFrame) -> pd.DataFrame:
    """The held-out test split: the rows every model is judged on."""
    rows = face_splits[face_splits["split"] == "test"].sort_values("cache_index").reset_index(drop=True)
    if rows.empty:
        raise ValueError("The test split is empty: check split.test_size and rerun the split pipeline.")
    return rows


def all_rows(face_manifest: pd.DataFrame) -> pd.DataFrame:
    """Every kept image of an external dataset (nothing of it was trained on)."""
    if face_manifest.empty:
        raise ValueError("The external dataset has no usable image: see its ingestion report.")
    return face_manifest.assign(cache_index=np.arange(len(face_manifest)))[
        ["file_name", "cache_index", "age", "gender", "race"]]


def predict_models(face_cache, rows: pd.DataFrame, scratch_model, transfer_model,
                   inference: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Predictions of every trained model on ``rows`` (models not trained yet are skipped)."""
    models = {"scratch": scratch_model, "transfer": transfer_model}
    models = {name: model for name, model in models.items() if model is not None}
    if not models:
        raise ValueError("No trained model to evaluate: run `kedro run --pipeline scratch` and/or "
                         "`--pipeline transfer` first.")
    tables = []
    for name, model in models.items():
        size = int(model.input_shape[1])
        images = cached_images(face_cache, size)[rows["cache_index"].to_numpy()]
        table = prediction_table(rows, *predict_faces(model, images, flip_average=flip_average(inference)))
        tables.append(table.assign(model=name))
    return pd.concat(tables, ignore_index=True)


def _group_metrics(part: pd.DataFrame) -> dict[str, Any]:
    return {"n": int(len(part)),
            "gender_accuracy": round(float((part["gender_pred"] == part["gender"]).mean()), 4),
            "age_mae": round(float((part["age_pred"] - part["age"]).abs().mean()), 3)}


def model_metrics(part: pd.DataFrame) -> dict[str, Any]:
    """Every metric of one model's predictions (see the module docstring for the keys)."""
    truth, predicted, prob = part["gender"].to_numpy(), part["gender_pred"].to_numpy(), part["female_prob"].to_numpy()
    error = (part["age_pred"] - part["age"]).to_numpy()
    bands = pd.cut(part["age"], AGE_BANDS, right=False)
    both_classes = len(np.unique(truth)) == 2
    return {
        "n": int(len(part)),
        "gender": {
            "accuracy": round(float((truth == predicted).mean()), 4),
            "precision": round(float(precision_score(truth, predicted, zero_division=0)), 4),
            "recall": round(float(recall_score(truth, predicted, zero_division=0)), 4),
            "roc_auc": round(float(roc_auc_score(truth, prob)), 4) if both_classes else None,
            "confusion_matrix": confusion_matrix(truth, predicted, labels=[0, 1]).tolist(),
        },
        "age": {
            "mae": round(float(np.abs(error).mean()), 3),
            "rmse": round(float(np.sqrt((error ** 2).mean())), 3),
            "within_5": round(float((np.abs(error) <= 5).mean()), 4),
            "within_10": round(float((np.abs(error) <= 10).mean()), 4),
        },
        "age_mae_by_band": {str(band): _group_metrics(group)["age_mae"]
                            for band, group in part.groupby(bands, observed=True)},
        "gender_accuracy_by_gender": {GENDERS[int(g)]: _group_metrics(group)["gender_accuracy"]
                                      for g, group in part.groupby("gender")},
        "by_race": {RACES[int(r)]: _group_metrics(group) for r, group in part.groupby("race")},
    }


def compute_metrics(predictions: pd.DataFrame) -> dict[str, Any]:
    return {name: model_metrics(part) for name, part in predictions.groupby("model")}


def comparison(metrics: Mapping[str, Any], scratch_info, transfer_info) -> tuple[dict[str, Any], str, plt.Figure]:
    """All models side by side with the study's published numbers (JSON, Markdown, plot)."""
    info = {"scratch": scratch_info or {}, "transfer": transfer_info or {}}
    rows = []
    for name, values in metrics.items():
        rows.append({"model": name, "gender_accuracy": values["gender"]["accuracy"],
                     "age_mae": values["age"]["mae"], "n": values["n"],
                     "train_seconds": info.get(name, {}).get("train_seconds"),
                     "pretrained": info.get(name, {}).get("pretrained"),
                     "source": f"this project, {name}" + (f" ({info[name]['backbone']})" if info.get(name, {}).get("backbone") else "")})
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
        races = values["by_race"]
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
    images = cached_images(face_cache, max(int(k.removesuffix("px")) for k in face_cache))
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
