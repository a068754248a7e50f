"""Nodes of ``evaluate_external``: predictions of every trained model on every kept image of
another UTKFace-named dataset (nothing of it was trained on)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from age_gender.reporting import predict_models
from age_gender.training import cached_images


def predict_all_faces(face_cache, face_manifest: pd.DataFrame, inference: Mapping[str, Any] | None,
                      **models) -> pd.DataFrame:
    """Every trained model's predictions on every kept face (row i = cache row i)."""
    if face_manifest.empty:
        raise ValueError("The external dataset has no usable image: see its ingestion report.")
    rows = face_manifest.assign(cache_index=np.arange(len(face_manifest)))[
        ["file_name", "cache_index", "age", "gender", "race"]]
    return predict_models(models, lambda size: (rows, cached_images(face_cache, size)), inference)
