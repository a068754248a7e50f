"""Nodes of ``predict``: detect faces (the ingestion's detector), crop them as UTKFace crops are
cropped, predict, and draw the result on each photo."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from age_gender.datasets import FaceSource
from age_gender.faces import GENDERS, crop_like_utkface, decode_face, detect_faces
from age_gender.reporting import flip_average, predict_faces

COLUMNS = ["file", "face", "x", "y", "w", "h", "age", "gender", "female_prob", "gender_prob"]


def _photo(data: bytes, max_pixels: int) -> np.ndarray | str:
    """The full photo as RGB (EXIF rotation applied), or why it cannot be read."""
    from PIL import ImageOps

    checked = decode_face(data, (32,), max_pixels, refuse_constant=False)  # a blank photo: no face
    if checked.reason:
        return f"{checked.reason}: {checked.detail}"
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    return np.asarray(image)


def _annotated_name(name: str, taken: Mapping[str, Any]) -> str:
    """A file name (without ``.jpg``) for the annotated copy of photo ``name`` that no other photo
    of the run has: its path with ``/`` as ``__`` and its own suffix kept (``face.png`` and
    ``face.jpg`` stay apart); a clash left (``a/b.jpg`` and ``a__b.jpg``) gets a hash of the path."""
    key = name.replace("/", "__")
    if key in taken:
        key = f"{key}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return key


def predict_photos(photos: FaceSource, params: Mapping[str, Any], inference: Mapping[str, Any] | None,
                   **models):
    """Predictions table, one annotated JPEG per photo, and a report of photos without faces.
    ``models``: every registered model by name (None when not trained); ``params['model']`` picks one."""
    if params["model"] not in models:
        raise ValueError(f"predict.model must be one of {sorted(models)}, got {params['model']!r}")
    model = models[params["model"]]
    if model is None:
        raise ValueError(f"No trained {params['model']} model: run `kedro run --pipeline {params['model']}` first.")
    size = int(model.input_shape[1])
    rows, annotated = [], {}
    report = {"photos_seen": photos.files_seen, "no_face": [], "unreadable": {},
              "refused": dict(photos.refused), "model": params["model"], "annotated": {}}
    for name, data in sorted(photos.members):
        photo = _photo(data, int(params["max_pixels"]))
        if isinstance(photo, str):
            report["unreadable"][name] = photo
            continue
        boxes = detect_faces(photo, int(params["min_face"]), int(params["min_neighbors"]))
        if not boxes:
            report["no_face"].append(name)
        crops = np.stack([crop_like_utkface(photo, b, float(params["margin"]), size) for b in boxes]) if boxes else None
        ages, female = predict_faces(model, crops, flip_average=flip_average(inference)) if boxes else ([], [])
        image = Image.fromarray(photo)
        draw = ImageDraw.Draw(image)
        for k, (box, age, prob) in enumerate(zip(boxes, ages, female)):
            gender = int(prob >= 0.5)
            rows.append({"file": name, "face": k, "x": box[0], "y": box[1], "w": box[2], "h": box[3],
                         "age": round(float(age), 1), "gender": GENDERS[gender],
                         "female_prob": round(float(prob), 4),
                         "gender_prob": round(float(prob if gender else 1 - prob), 4)})
            x, y, w, h = box
            draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=max(2, w // 60))
            draw.text((x, max(0, y - 12)), f"{age:.0f} {GENDERS[gender]} ({rows[-1]['gender_prob']:.2f})",
                      fill=(255, 40, 40))
        key = _annotated_name(name, annotated)
        annotated[key] = image
        report["annotated"][name] = f"{key}.jpg"  # photo -> its file in annotated_photos/
    report["faces"] = len(rows)
    return pd.DataFrame(rows, columns=COLUMNS), annotated, report
