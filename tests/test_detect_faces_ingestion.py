"""Ingestion of whole photos (issue #15, ``ingestion.detect_faces``): real archive crops pasted
into larger scenes (the predict tests' helpers) are found and cut as ``predict`` cuts them before
they enter the face cache; a scene without a face, or with two, is set aside with its reason."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from age_gender.datasets import FaceSourceDataset
from age_gender.lineage import ingestion_id
from age_gender.params import ParameterError, validate_group
from age_gender.pipelines.ingestion.nodes import decode_faces, select_faces
from tests.conftest import REPO
from tests.test_predict import _faces, _place, _scene

BASE = yaml.safe_load((REPO / "conf" / "base" / "parameters_ingestion.yml").read_text())["ingestion"]
PARAMS = {**BASE, "image_sizes": [64], "workers": 1, "face_check": {**BASE["face_check"], "enabled": False},
          "detect_faces": {**BASE["detect_faces"], "enabled": True}}


def _name(i: int, age: int = 30) -> str:
    return f"{age}_{i % 2}_0_20170109{i:09d}.jpg"  # UTKFace-named photos: the labels come from the names


def _central_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (0-255) of the central half of two 64 px crops."""
    return float(np.abs(a.astype(float) - b.astype(float))[16:48, 16:48].mean())


def test_whole_photos_are_cut_as_predict_cuts_them_and_faceless_ones_set_aside(archive_members, tmp_path):
    rng = np.random.default_rng(5)
    faces = _faces(archive_members, 8, step=3)
    originals = {}
    for i, face in enumerate(faces):  # one face each, 90-199 px, anywhere in a 640x480 scene
        photo, _ = _place(face, rng)
        Image.fromarray(photo).save(tmp_path / _name(i), quality=95)
        originals[_name(i)] = np.asarray(Image.fromarray(face).resize((64, 64), Image.BILINEAR))
    Image.fromarray(_scene(rng)).save(tmp_path / _name(20), quality=95)  # no face
    two = _scene(rng)
    two[60:220, 40:200] = np.asarray(Image.fromarray(faces[0]).resize((160, 160)))
    two[200:350, 400:550] = np.asarray(Image.fromarray(faces[1]).resize((150, 150)))
    Image.fromarray(two).save(tmp_path / _name(21), quality=95)  # two faces: which one is labelled?

    manifest, images, findings = decode_faces(FaceSourceDataset(filepath=str(tmp_path)).load(), PARAMS)
    final, cache, report = select_faces(manifest, images, np.ones(len(manifest), bool), findings, PARAMS)

    assert report["set_aside"] == {"no_face_found": [_name(20)], "several_faces": [_name(21)]}
    assert report["details"][_name(20)] == "mtcnn found no face in the 640x480 photo"
    assert report["details"][_name(21)].startswith("mtcnn found 2 faces in the 640x480 photo")
    assert report["detect_faces"]["enabled"] and report["detect_faces"]["faces_cut"] == 8
    assert report["kept"] + report["set_aside_total"] == report["files_seen"] == 10
    assert not report["converted"]  # a 640x480 photo cut by the detector is not reported as centre-cropped
    errors, baseline, correlations = [], [], []
    for row in final.itertuples():
        crop = cache["64px"][row.Index]
        errors.append(_central_error(crop, originals[row.file_name]))
        correlations.append(np.corrcoef(crop[16:48, 16:48].ravel(), originals[row.file_name][16:48, 16:48].ravel())[0, 1])
        photo = np.asarray(Image.open(tmp_path / row.file_name).convert("RGB"))
        centre = np.asarray(Image.fromarray(photo[:, 80:560]).resize((64, 64), Image.BILINEAR))
        baseline.append(_central_error(centre, originals[row.file_name]))  # what ingestion did without it
        assert row.face_crop.startswith("mtcnn cx=")
    # measured (seed 5): 3-17 grey levels from the original crop; the centre crop of the scene 55-80
    # measured (seed 5, 8 faces): 3.2-25.7 grey levels from the original crop (median 15.6),
    # correlation 0.71-0.99 (median 0.90); the scene's centre crop (no detection) 52-81 grey levels
    assert np.median(errors) < 20 and max(errors) < 30 and max(errors) < 0.6 * min(baseline)
    assert np.median(correlations) > 0.85 and min(correlations) > 0.6
    # where the faces were cut is part of the ingestion's identity: a consumer of an ingestion of
    # the same files taken as crops refuses this one
    assert ingestion_id(final, [64]) != ingestion_id(final.drop(columns="face_crop"), [64])


def test_detect_faces_settings_are_validated():
    validate_group("ingestion", PARAMS)
    with pytest.raises(ParameterError, match=r"ingestion\.detect_faces\.detector must be one of 'mtcnn', 'haar'"):
        validate_group("ingestion", {**PARAMS, "detect_faces": {**PARAMS["detect_faces"], "detector": "dlib"}})
    with pytest.raises(ParameterError, match="min_face"):
        validate_group("ingestion", {**PARAMS, "detect_faces": {**PARAMS["detect_faces"], "min_face": 5}})
