"""Nodes of the fairness report and the model cards (machinery: ``age_gender.fairness``). Kept
apart from the headline-metric nodes: they read the same ``evaluation_predictions``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from age_gender.fairness import fairness_heatmap, fairness_report, model_card
from age_gender.lineage import check_trained_on, splits_ingestion_id, splits_split_id
from age_gender.metrics import Bootstrap
from age_gender.reporting import with_ensemble_info


def _fairness_params(evaluation: Mapping[str, Any] | None) -> tuple[list[int], int]:
    params = (evaluation or {}).get("fairness") or {}
    return list(params.get("age_bands", [0, 13, 20, 40, 60, 70])), int(params.get("min_count", 30))


def compute_fairness(predictions: pd.DataFrame, evaluation: Mapping[str, Any] | None
                     ) -> tuple[dict[str, Any], plt.Figure]:
    """Per model: ``fairness.fairness_report`` of its predictions (race x gender x age band cells,
    groups, worst groups, gaps, children, elderly; intervals from ``evaluation.bootstrap``, bands
    and ``min_count`` from ``evaluation.fairness``), and the heat-map of every model's cells."""
    setting = Bootstrap.from_params(evaluation)
    bands, min_count = _fairness_params(evaluation)
    reports = {name: fairness_report(part, setting, bands, min_count)
               for name, part in predictions.groupby("model", sort=False)}
    return reports, fairness_heatmap(reports)


def write_model_cards(metrics: Mapping[str, Any], fairness: Mapping[str, Any], face_splits: pd.DataFrame,
                      predict_report: Mapping[str, Any] | None, evaluation: Mapping[str, Any] | None = None,
                      **training_info: Mapping[str, Any] | None) -> dict[str, str]:
    """One Markdown model card per evaluated model and ensemble (``fairness.model_card``): {model:
    text}, saved as ``model_cards/{model}.md``. Refuses (``LineageError``) a model trained on
    another split table."""
    training_info = with_ensemble_info(training_info, evaluation, metrics)
    data = {"ingestion_id": splits_ingestion_id(face_splits), "split_id": splits_split_id(face_splits),
            "split_sizes": {str(k): int(v) for k, v in face_splits["split"].value_counts(sort=False).items()}}
    cards = {}
    for name, values in metrics.items():
        info = training_info.get(name)
        check_trained_on(face_splits, name, info)
        cards[name] = model_card(name, values, fairness[name], info, data, predict_report)
    return cards
