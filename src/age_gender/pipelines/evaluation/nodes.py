"""Nodes of the ``evaluation`` pipeline (the judging nodes are reused by ``evaluate_external``):
the only place where a model meets the test split. The models judged are named by
``evaluation.models`` (read when the pipeline is created) and arrive as keyword arguments; metrics come from
``age_gender.metrics.model_metrics`` (keys documented there and in the README), each headline
number with its bootstrap interval (``evaluation.bootstrap`` parameters).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from age_gender.faces import GENDERS
from age_gender.metrics import (
    Bootstrap,
    headline,
    model_metrics,
    paired_difference,
    paired_in_range_difference,
)
from age_gender.reporting import (
    STUDY_RESULTS,
    active_ensembles,
    ensemble_predictions,
    predict_models,
    with_ensemble_info,
)
from age_gender.training import cached_images, select_split
from age_gender.tta import Views


def predict_test_split(face_cache, face_splits: pd.DataFrame, inference: Mapping[str, Any] | None,
                       **models) -> pd.DataFrame:
    """Every trained model's predictions on the held-out test split (each at its input size)."""
    def faces(size: int):
        test = select_split(face_cache, face_splits, size, ["test"])
        return test.rows, test.images

    return predict_models(models, faces, inference)


def add_ensembles(predictions: pd.DataFrame, evaluation: Mapping[str, Any] | None) -> pd.DataFrame:
    """The models' test predictions with one more model per ``evaluation.ensembles`` entry whose
    members were all judged: the mean of their age and P(female) on each face
    (``reporting.ensemble_predictions``); judged, compared and paired like any model."""
    ensembles = active_ensembles((evaluation or {}).get("ensembles"))
    table, kept = ensemble_predictions(predictions, ensembles)
    left_out = sorted(set(ensembles) - set(kept))
    if left_out:
        logging.getLogger(__name__).info("Ensemble(s) %s left out: not every member was judged in this run "
                                         "(evaluation.models, or a model not trained yet).", ", ".join(left_out))
    return table


def compute_metrics(predictions: pd.DataFrame, evaluation: Mapping[str, Any] | None) -> dict[str, Any]:
    """``model_metrics`` per model, with bootstrap intervals: {model name: metrics}. Where the
    dataset labels ages as ranges (``age_low`` < ``age_high``), also ``age_in_range``
    (``metrics.age_range_metrics``: share of predicted ages inside the range, its interval)."""
    from age_gender.metrics import age_range_metrics  # (own line: a hunk apart from other changes)

    setting = Bootstrap.from_params(evaluation)
    metrics = {name: model_metrics(part, setting) for name, part in predictions.groupby("model", sort=False)}
    for name, part in predictions.groupby("model", sort=False):
        # a dataset labelling ages as ranges: its MAE is against the midpoints, this is the measure
        if "age_low" in part and bool((part["age_low"] != part["age_high"]).any()):
            metrics[name]["age_in_range"] = age_range_metrics(part, setting)
    return metrics


def paired_differences(predictions: pd.DataFrame, evaluation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """For every pair of evaluated models (later minus earlier in ``evaluation.models`` order, e.g.
    transfer - scratch) on the same test rows: the difference in gender accuracy (fraction) and age MAE
    (years) with its paired bootstrap interval (``metrics.paired_difference``). Empty with one
    model, or when intervals are switched off (``evaluation.bootstrap.resamples: 0``)."""
    setting = Bootstrap.from_params(evaluation)
    parts = dict(tuple(predictions.groupby("model", sort=False)))
    names = list(parts)
    if setting is None:
        return []
    ranges = _age_ranges(predictions)
    differences = []
    for i, second in enumerate(names):
        for first in names[i + 1:]:
            values = paired_difference(parts[first], parts[second], setting)
            if ranges:  # the MAE is against range midpoints: named so, and the in-range share added
                values = {("age_midpoint_mae" + k[len("age_mae"):] if k.startswith("age_mae") else k): v
                          for k, v in values.items()}
                values.update(age_labels="ranges", **paired_in_range_difference(parts[first], parts[second], setting))
            differences.append({"first": first, "second": second, **values})
    return differences


def _age_ranges(predictions: pd.DataFrame) -> bool:
    """Does the dataset label (some) ages as ranges (``age_low`` < ``age_high``)?"""
    return "age_low" in predictions and bool((predictions["age_low"] != predictions["age_high"]).any())


def headlines(metrics: Mapping[str, Any], inference: Mapping[str, Any] | None = None,
              evaluation: Mapping[str, Any] | None = None,
              **training_info: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per evaluated model: gender accuracy, age MAE, n (``metrics.headline``) with how it trained
    (``{model}_training_info``; for an ensemble of ``evaluation.ensembles``, its members and their
    summed training time) and, given the run's ``inference`` parameters, the test-time views
    its predictions averaged (``test_time_augmentation``, ``Views.describe``); saved as
    ``test_metrics/{model}.json``."""
    views = {"test_time_augmentation": Views.from_params(inference).describe()} if inference is not None else {}
    training_info = with_ensemble_info(training_info, evaluation, metrics)
    return {name: {"model": name, **headline(values), **_range_headline(values), **views,
                   **{k: v for k, v in (training_info.get(name) or {}).items() if k != "model"}}
            for name, values in metrics.items()}


def _range_headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """For a dataset labelling ages as ranges: ``age_labels: ranges``, the share of predictions
    inside the range (fraction) and its interval; ``age_mae`` is then against the midpoints
    (``age_mae_against``). Empty for whole-year labels."""
    ranged = metrics.get("age_in_range")
    if not ranged:
        return {}
    return {"age_labels": "ranges", "age_mae_against": "range midpoints (not an age MAE)",
            "age_in_range_share": ranged["age_in_range_share"],
            "age_in_range_share_ci": ranged.get("age_in_range_share_ci")}


def _with_interval(value: float, ci: list[float] | None, scale: float, digits: int, unit: str = "",
                   sign: bool = False) -> str:
    form = f"{'+' if sign else ''}.{digits}f"
    text = f"{value * scale:{form}}{unit}"
    if ci:
        text += f" [{ci[0] * scale:{form}}, {ci[1] * scale:{form}}]"
    return text


def comparison(test_metrics: Mapping[str, Any], paired: list[Mapping[str, Any]] | None = None
               ) -> tuple[dict[str, Any], str, plt.Figure]:
    """All models side by side with the study's published numbers (JSON, Markdown, plot with 95 %
    interval error bars), and the paired differences between this project's models.

    Where the test data labels ages as ranges (a headline with ``age_labels: ranges``), a model's
    age column is the share of its predictions inside the labelled range (%, with its interval),
    never an "age MAE": the MAE against the range midpoints is kept in the JSON as
    ``age_midpoint_mae`` only, and the text says so.

    Rows follow the ``evaluation.models`` order the paired differences were computed in (a
    partitioned ``test_metrics`` loads by name), models without a pair last, by name."""
    paired = list(paired or [])
    order = list(dict.fromkeys(name for d in paired for name in (d["second"], d["first"])))
    rows = []
    for name, values in sorted(test_metrics.items(),
                               key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0])):
        value = values() if callable(values) else values
        ranged = value.get("age_labels") == "ranges"
        row = {"model": name, "gender_accuracy": value["gender_accuracy"],
               "gender_accuracy_ci": value.get("gender_accuracy_ci"), "age_labels": "ranges" if ranged else "years",
               "age_mae": None if ranged else value["age_mae"],
               "age_mae_ci": None if ranged else value.get("age_mae_ci"), "n": value["n"],
               "train_seconds": value.get("train_seconds"), "pretrained": value.get("pretrained"),
               "out_of_time": value.get("out_of_time"), "test_time_augmentation": value.get("test_time_augmentation"),
               "source": f"this project, {name}" + (f" ({value['backbone']})" if value.get("backbone") else "")
               + (f" (mean of {', '.join(value['ensemble_of'])})" if value.get("ensemble_of") else "")}
        if ranged:
            row.update(age_in_range_share=value["age_in_range_share"],
                       age_in_range_share_ci=value.get("age_in_range_share_ci"),
                       age_midpoint_mae=value["age_mae"], age_midpoint_mae_ci=value.get("age_mae_ci"))
        rows.append(row)
    ranges = any(r["age_labels"] == "ranges" for r in rows)
    for name, values in STUDY_RESULTS.items():
        rows.append({"model": name, "gender_accuracy": values["gender_accuracy"], "gender_accuracy_ci": None,
                     "age_labels": "years", "age_mae": values["age_mae"], "age_mae_ci": None, "n": 499,
                     "train_seconds": None, "pretrained": None, "out_of_time": None, "source": values["source"]})

    def age_cell(r: Mapping[str, Any]) -> str:
        if r["age_labels"] == "ranges":
            return (f"{_with_interval(r['age_in_range_share'], r['age_in_range_share_ci'], 100, 2)} % "
                    "inside the labelled range")
        text = _with_interval(r["age_mae"], r["age_mae_ci"], 1, 3)
        return f"MAE {text} years" if ranges else text

    age_header = ("age: MAE (years) or, for range labels, % of predictions inside the range [95 % CI]"
                  if ranges else "age MAE (years) [95 % CI]")
    lines = [f"| model | gender accuracy (%) [95 % CI] | {age_header} | n | source |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']}{' (stopped by its time budget)' if r['out_of_time'] else ''} "
              f"| {_with_interval(r['gender_accuracy'], r['gender_accuracy_ci'], 100, 2)} "
              f"| {age_cell(r)} | {r['n']} | {r['source']} |"
              for r in rows]
    markdown = "\n".join(lines) + "\n\nStudy numbers are on its own 499-image validation split; this " \
        "project's are on its held-out test split (n above), drawn first and never trained or early-stopped on. " \
        "Intervals: 95 % percentile bootstrap over the test rows.\n"
    views = next((r["test_time_augmentation"] for r in rows if r.get("test_time_augmentation")), None)
    if views:
        markdown += (f"Each face predicted as the mean over {views['views']} test-time views (inference: "
                     f"flip_average {str(views['flip_average']).lower()}, zooms {views['zooms']}, "
                     f"shift {views['shift']}).\n")
    if ranges:
        markdown += ("\nThis test data labels ages as ranges, so no age MAE is given for this project's models: "
                     "the age column is the share of predictions with age_low <= predicted age < age_high + 1 "
                     "(evaluation_metrics.json: age_in_range). An MAE against the range midpoints would partly "
                     "measure the width of the ranges; it is kept in model_comparison.json as age_midpoint_mae "
                     "only. The study's MAE is on UTKFace's whole-year ages and is not comparable.\n")
    if paired:
        markdown += "\nPaired differences on the same test rows (one resampling for both models):\n\n"
        markdown += "".join(
            f"- {d['first']} - {d['second']}: gender accuracy "
            f"{_with_interval(d['gender_accuracy'], d['gender_accuracy_ci'], 100, 2, ' points', True)}, "
            + (f"share inside the labelled age range "
               f"{_with_interval(d['age_in_range_share'], d['age_in_range_share_ci'], 100, 2, ' points', True)}"
               if d.get("age_labels") == "ranges" else
               f"age MAE {_with_interval(d['age_mae'], d['age_mae_ci'], 1, 3, ' years', True)}")
            + f" (n {d['n']})\n"
            for d in paired)
    late = [r["model"] for r in rows if r["out_of_time"]]
    if late:
        markdown += (f"\nWARNING: {', '.join(late)} stopped on its wall-clock budget before its scheduled "
                     "epochs (out_of_time); its numbers depend on how busy the machine was.\n")
    return {"models": rows, "paired_differences": paired}, markdown, _comparison_plot(rows)


def _comparison_plot(rows: list[dict[str, Any]]) -> plt.Figure:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    ranges = any(r["age_labels"] == "ranges" for r in rows)
    panels = [(axes[0], "gender_accuracy", "gender accuracy (higher is better)", rows)]
    if ranges:  # the age panel shows what the table shows: the in-range share (no study number)
        panels.append((axes[1], "age_in_range_share", "share of ages inside the labelled range (higher is better)",
                       [r for r in rows if r["age_labels"] == "ranges"]))
    else:
        panels.append((axes[1], "age_mae", "age MAE, years (lower is better)", rows))
    for axis, key, title, shown in panels:
        names = [r["model"] for r in shown]
        colors = ["tab:blue" if not n.startswith("study") else "tab:gray" for n in names]
        values = np.array([r[key] for r in shown], dtype=float)
        cis = [r[f"{key}_ci"] or [r[key], r[key]] for r in shown]
        errors = np.array([[v - ci[0] for v, ci in zip(values, cis)], [ci[1] - v for v, ci in zip(values, cis)]])
        axis.barh(names, values, color=colors, xerr=errors, capsize=4)
        axis.set_title(title)
    axes[0].set_xlim(0.5, 1.0)
    figure.suptitle("test split, 95 % bootstrap intervals (study: published numbers, no interval)", fontsize=9)
    figure.tight_layout()
    return figure


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
