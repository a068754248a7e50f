"""The metrics of a model's predictions: the one place they are computed.

``model_metrics`` takes a prediction table (``reporting.prediction_table``: one row per face with
``age``, ``gender``, ``race``, ``age_pred``, ``female_prob``, ``gender_pred``) and returns the keys
documented in the README: ``n``, ``gender`` {accuracy, precision, recall, roc_auc,
confusion_matrix [[tn, fp], [fn, tp]] with female as positive}, ``age`` {mae, rmse, within_5,
within_10} in years, ``age_mae_by_band``, ``gender_accuracy_by_gender``, ``by_race``
{race: {n, gender_accuracy, age_mae}}. ``headline`` picks the three numbers every summary shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_score, recall_score, roc_auc_score

from age_gender.faces import GENDERS, RACES

AGE_BANDS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 120]


def _group_metrics(part: pd.DataFrame) -> dict[str, Any]:
    return {"n": int(len(part)),
            "gender_accuracy": round(float((part["gender_pred"] == part["gender"]).mean()), 4),
            "age_mae": round(float((part["age_pred"] - part["age"]).abs().mean()), 3)}


def model_metrics(predictions: pd.DataFrame) -> dict[str, Any]:
    """Every metric of one model's predictions (keys: see the module docstring).

    Raises ValueError on an empty table. ``roc_auc`` is None when only one gender is present;
    ``by_race`` is absent when the table has no ``race`` column.
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
    if "race" in predictions:
        metrics["by_race"] = {RACES[int(r)]: _group_metrics(group) for r, group in predictions.groupby("race")}
    return metrics


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Gender accuracy (fraction), age MAE (years) and ``n`` from ``model_metrics``'s result."""
    return {"gender_accuracy": metrics["gender"]["accuracy"], "age_mae": metrics["age"]["mae"],
            "n": metrics["n"]}
