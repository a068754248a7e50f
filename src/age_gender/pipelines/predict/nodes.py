"""Nodes of ``predict``: find the faces in every photo, cut them as UTKFace crops are cut,
predict them in batches, and draw the result on each photo (machinery: ``age_gender.photos``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import pandas as pd

from age_gender.datasets import FaceSource
from age_gender.detection import measured_detection
from age_gender.photos import (
    COLUMNS,
    DetectSettings,
    PhotoPredictor,
    annotate,
    predict_stream,
    reader,
)
from age_gender.tta import Views

logger = logging.getLogger(__name__)


def annotated_name(name: str, taken: set[str]) -> str:
    """A file name (without ``.jpg``) for the annotated copy of photo ``name`` that no other name
    in ``taken`` has, even on a case-insensitive file system: its path with ``/`` as ``__`` and its
    own suffix kept (``face.png`` and ``face.jpg`` stay apart); a clash left (``a/b.jpg`` and
    ``a__b.jpg``, ``A.jpg`` and ``a.jpg``) gets the first hex digits of the path's sha256."""
    key = name.replace("/", "__")
    digest = hashlib.sha256(name.encode()).hexdigest()
    length = 8
    while key.casefold() in taken:
        key = f"{name.replace('/', '__')}-{digest[:length]}"
        length += 4
    taken.add(key.casefold())
    return key


def _annotated(read, rows):
    return annotate(read(), rows)


def predict_photos(photos: FaceSource, params: Mapping[str, Any], inference: Mapping[str, Any] | None,
                   **models):
    """Predictions table, one annotated JPEG per photo, and a report of photos without faces or
    unreadable. ``models``: every registered model by name (None when not trained);
    ``params['model']`` picks one."""
    if params["model"] not in models:
        raise ValueError(f"predict.model must be one of {sorted(models)}, got {params['model']!r}")
    model = models[params["model"]]
    if model is None:
        raise ValueError(f"No trained {params['model']} model: run `kedro run --pipeline {params['model']}` first.")
    predictor = PhotoPredictor(model, DetectSettings.from_params(params), Views.from_params(inference))
    max_bytes = int(float(params["max_file_mb"]) * 1_000_000)
    readers = {name: reader(data, int(params["max_pixels"]), max_bytes) for name, data in sorted(photos.members)}
    rows, annotated, taken = [], {}, set()
    report = {"photos_seen": photos.files_seen, "no_face": [], "unreadable": {},
              "refused": dict(photos.refused), "model": params["model"], "detector": params["detector"],
              "found_by_race_measured": measured_detection(params["detector"]),
              "test_time_augmentation": predictor.views.describe(), "annotated": {}}
    for result in predict_stream(predictor, readers.items(), int(params["batch_size"]), len(readers), progress=True):
        if result.problem:
            report["unreadable"][result.name] = result.problem
            continue
        if not result.rows:
            report["no_face"].append(result.name)
        rows.extend({"file": result.name, **row} for row in result.rows)
        key = annotated_name(result.name, taken)
        # drawn when saved (decoded again then): no batch of full-size photos stays in memory
        annotated[key] = partial(_annotated, readers[result.name], result.rows)
        report["annotated"][result.name] = f"{key}.jpg"  # photo -> its file in annotated_photos/
    report["faces"] = len(rows)
    left_out = {"without a face": len(report["no_face"]), "unreadable": len(report["unreadable"]),
                "refused": len(report["refused"])}
    if any(left_out.values()):  # said on the console too, not only inside predict_report.json
        logger.warning("WARNING: %d face(s) in %d photo(s); %s: see predict_report.json", len(rows),
                       len(report["annotated"]), ", ".join(f"{n} {what}" for what, n in left_out.items() if n))
    return pd.DataFrame(rows, columns=COLUMNS), annotated, report
