"""The metrics of a model's predictions: the one place they are computed.

``model_metrics`` takes a prediction table (``reporting.prediction_table``: one row per face with
``age``, ``gender``, ``race``, ``age_pred``, ``female_prob``, ``gender_pred``) and returns the keys
documented in the README: ``n``, ``gender`` {accuracy, precision, recall, roc_auc,
confusion_matrix [[tn, fp], [fn, tp]] with female as positive}, ``age`` {mae, rmse, within_5,
within_10} in years, ``age_mae_by_band``, ``gender_accuracy_by_gender``, ``by_race``
{race: {n, gender_accuracy, age_mae}}. ``headline`` picks the three numbers every summary shows.

With a ``Bootstrap`` setting, every headline number also carries its 95 % (``confidence``)
bootstrap interval ``[low, high]`` in the same unit: ``gender.accuracy_ci``, ``age.mae_ci``,
``age_mae_by_band_ci``, ``gender_accuracy_by_gender_ci``, ``by_race[race].gender_accuracy_ci`` /
``age_mae_ci``, and the setting itself under ``bootstrap``. Intervals are percentile intervals of
``scipy.stats.bootstrap`` over the test rows (each group resampled within itself), from a
``numpy`` Generator seeded with ``seed`` for every interval, so the same predictions always give
the same intervals. ``paired_difference`` compares two models on the same rows: the difference of
their means and its interval from resampling the rows once for both models (the paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import bootstrap
from sklearn.metrics import confusion_matrix, precision_score, recall_score, roc_auc_score

from age_gender.faces import GENDERS, RACES

AGE_BANDS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 120]


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: ``resamples`` (>= 100) bootstrap resamples of the rows, a two-sided
    ``confidence`` level in (0, 1), the ``seed`` of the ``numpy`` Generator. Defaults: the
    ``evaluation.bootstrap`` parameters of ``conf/base``."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    @classmethod
    def from_params(cls, evaluation: Mapping[str, Any] | None) -> Bootstrap | None:
        """The ``evaluation.bootstrap`` parameter group (None or ``resamples: 0``: no intervals)."""
        params = (evaluation or {}).get("bootstrap")
        if not params or not params.get("resamples"):
            return None
        return cls(int(params["resamples"]), float(params["confidence"]), int(params["seed"]))

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "method": "percentile bootstrap over test rows (scipy.stats.bootstrap)"}


def interval(values: np.ndarray, setting: Bootstrap, digits: int = 4) -> list[float] | None:
    """The ``setting.confidence`` percentile bootstrap interval ``[low, high]`` of the mean of
    ``values`` (1-D, one number per row: 1/0 for a correct gender, absolute error in years ...).
    None for fewer than 2 rows (no interval can be drawn)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    result = bootstrap((values,), np.mean, n_resamples=setting.resamples, confidence_level=setting.confidence,
                       method="percentile", vectorized=True, rng=np.random.default_rng(setting.seed))
    low, high = result.confidence_interval
    return [round(float(low), digits), round(float(high), digits)]


def correct(predictions: pd.DataFrame) -> np.ndarray:
    """1.0 where the predicted gender is right, else 0.0 (float64, one per row)."""
    return (predictions["gender_pred"] == predictions["gender"]).to_numpy(np.float64)


def absolute_error(predictions: pd.DataFrame) -> np.ndarray:
    """|predicted age - age| in years (float64, one per row)."""
    return (predictions["age_pred"] - predictions["age"]).abs().to_numpy(np.float64)


def _group_metrics(part: pd.DataFrame, setting: Bootstrap | None = None) -> dict[str, Any]:
    values = {"n": int(len(part)),
              "gender_accuracy": round(float(correct(part).mean()), 4),
              "age_mae": round(float(absolute_error(part).mean()), 3)}
    if setting is not None:
        values["gender_accuracy_ci"] = interval(correct(part), setting)
        values["age_mae_ci"] = interval(absolute_error(part), setting, 3)
    return values


def model_metrics(predictions: pd.DataFrame, setting: Bootstrap | None = None) -> dict[str, Any]:
    """Every metric of one model's predictions (keys: see the module docstring); with ``setting``
    the headline numbers' bootstrap intervals too (a few seconds for 3,000 rows).

    Raises ValueError on an empty table. ``roc_auc`` is None when only one gender is present;
    ``by_race`` is absent when the table has no ``race`` column; an interval is None for a group
    of one row.
    """
    if predictions.empty:
        raise ValueError("No prediction to score: the split or dataset is empty.")
    truth = predictions["gender"].to_numpy()
    predicted = predictions["gender_pred"].to_numpy()
    prob = predictions["female_prob"].to_numpy()
    error = (predictions["age_pred"] - predictions["age"]).to_numpy()
    bands = pd.cut(predictions["age"], AGE_BANDS, right=False)
    both_classes = len(np.unique(truth)) == 2
    metrics = {
        "n": int(len(predictions)),
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
                            for band, group in predictions.groupby(bands, observed=True)},
        "gender_accuracy_by_gender": {GENDERS[int(g)]: _group_metrics(group)["gender_accuracy"]
                                      for g, group in predictions.groupby("gender")},
    }
    if "race" in predictions:  # race -1: the dataset gives none (not a group)
        metrics["by_race"] = {RACES[int(r)]: _group_metrics(group, setting)
                              for r, group in predictions[predictions["race"] >= 0].groupby("race")}
    if setting is not None:
        metrics["gender"]["accuracy_ci"] = interval(truth == predicted, setting)
        metrics["age"]["mae_ci"] = interval(np.abs(error), setting, 3)
        metrics["age_mae_by_band_ci"] = {str(band): interval(absolute_error(group), setting, 3)
                                         for band, group in predictions.groupby(bands, observed=True)}
        metrics["gender_accuracy_by_gender_ci"] = {GENDERS[int(g)]: interval(correct(group), setting)
                                                   for g, group in predictions.groupby("gender")}
        metrics["bootstrap"] = setting.describe()
    return metrics


def in_age_range(predictions: pd.DataFrame) -> np.ndarray:
    """1.0 where the predicted age falls in the labelled range, else 0.0 (float64, one per row).
    Ranges are whole years, inclusive: ``age_low <= age_pred < age_high + 1`` (29.7 is 29 years
    old, inside ``20-29``)."""
    predicted = predictions["age_pred"].to_numpy(np.float64)
    return ((predicted >= predictions["age_low"].to_numpy(np.float64))
            & (predicted < predictions["age_high"].to_numpy(np.float64) + 1)).astype(np.float64)


def age_range_metrics(predictions: pd.DataFrame, setting: Bootstrap | None = None) -> dict[str, Any]:
    """For a dataset that labels ages as ranges (columns ``age_low``/``age_high``, years): the share
    of predictions inside the range (fraction), with its bootstrap interval when ``setting`` is
    given, and ``n``. This replaces the age MAE, which against a range's midpoint would be
    partly the width of the range. Raises ValueError on an empty table."""
    if predictions.empty:
        raise ValueError("No prediction to score: the split or dataset is empty.")
    hits = in_age_range(predictions)
    values = {"n": int(len(predictions)), "age_in_range_share": round(float(hits.mean()), 4),
              "rule": "age_low <= predicted age < age_high + 1 (whole years)"}
    if setting is not None:
        values["age_in_range_share_ci"] = interval(hits, setting)
    return values


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Gender accuracy (fraction), age MAE (years) and ``n`` from ``model_metrics``'s result, with
    ``gender_accuracy_ci`` and ``age_mae_ci`` when it has intervals."""
    values = {"gender_accuracy": metrics["gender"]["accuracy"], "age_mae": metrics["age"]["mae"],
              "n": metrics["n"]}
    if "accuracy_ci" in metrics["gender"]:
        values.update(gender_accuracy_ci=metrics["gender"]["accuracy_ci"], age_mae_ci=metrics["age"]["mae_ci"])
    return values


def paired_difference(first: pd.DataFrame, second: pd.DataFrame, setting: Bootstrap) -> dict[str, Any]:
    """``first`` minus ``second`` on the same faces: gender accuracy (fraction) and age MAE (years),
    each with the paired bootstrap interval (one resampling of the rows for both models), and
    ``n``. Rows are matched on ``cache_index`` (else ``file_name``).

    Raises ValueError when the two tables do not hold the same faces (the difference would
    compare models on different data)."""
    key = "cache_index" if "cache_index" in first and "cache_index" in second else "file_name"
    a, b = first.sort_values(key, kind="stable"), second.sort_values(key, kind="stable")
    if len(a) != len(b) or not np.array_equal(a[key].to_numpy(), b[key].to_numpy()):
        raise ValueError(f"The two models were scored on different faces ({len(a)} vs {len(b)} rows): "
                         "a paired difference needs the same test rows; rerun evaluation for both models.")
    if len(a) < 2:
        raise ValueError("A paired difference needs at least 2 rows.")
    accuracy = correct(a) - correct(b)
    mae = absolute_error(a) - absolute_error(b)
    return {"n": int(len(a)),
            "gender_accuracy": round(float(accuracy.mean()), 4),
            "gender_accuracy_ci": interval(accuracy, setting),
            "age_mae": round(float(mae.mean()), 3),
            "age_mae_ci": interval(mae, setting, 3)}


def paired_in_range_difference(first: pd.DataFrame, second: pd.DataFrame, setting: Bootstrap) -> dict[str, Any]:
    """``first`` minus ``second`` on the same range-labelled faces: the share of predicted ages
    inside the labelled range (``in_age_range``; a fraction, so +0.05 = 5 points) with its
    paired bootstrap interval. Rows matched as in ``paired_difference``; raises ValueError when
    the two tables do not hold the same faces."""
    key = "cache_index" if "cache_index" in first and "cache_index" in second else "file_name"
    a, b = first.sort_values(key, kind="stable"), second.sort_values(key, kind="stable")
    if len(a) != len(b) or not np.array_equal(a[key].to_numpy(), b[key].to_numpy()):
        raise ValueError(f"The two models were scored on different faces ({len(a)} vs {len(b)} rows): "
                         "a paired difference needs the same test rows; rerun evaluation for both models.")
    difference = in_age_range(a) - in_age_range(b)
    return {"age_in_range_share": round(float(difference.mean()), 4),
            "age_in_range_share_ci": interval(difference, setting)}
