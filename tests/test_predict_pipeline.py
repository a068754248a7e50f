"""``kedro run --pipeline predict`` end to end on photos made of real UTKFace crops: colliding
names keep one annotation each, a 16-bit grayscale photo is read (not white), the per-file cap is
the parameter ``predict.max_file_mb``."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from age_gender.faces import parse_utkface_name
from tests.conftest import make_project, run_kedro

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def project(tmp_path_factory, archive_members):
    """A project with an (untrained) 32 px scratch model and a folder of awkward photos."""
    from age_gender.models import build_multitask_cnn

    root = make_project(tmp_path_factory.mktemp("project"))
    version = root / "data" / "06_models" / "scratch.keras" / "2026-01-01T00.00.00.000Z"  # versioned entry
    version.mkdir(parents=True)
    build_multitask_cnn(input_size=32, conv_pairs=2, dense_layers=1, dense_units=8,
                        width_multiplier=0.125).save(version / "scratch.keras")
    faces = [Image.open(io.BytesIO(data)).convert("RGB") for name, data in sorted(archive_members.items())
             if not isinstance(parse_utkface_name(name), str)][::17][:4]
    photos = root / "photos"
    (photos / "a").mkdir(parents=True)
    for index, name in enumerate(["portrait.jpg", "portrait.png", "a/b.jpg", "a__b.jpg"]):
        picture = Image.new("RGB", (480, 360), (90, 140, 200))
        picture.paste(faces[index].resize((150, 150)), (40 + 60 * index, 100))
        picture.save(photos / name)
    gray = np.asarray(faces[0].convert("L").resize((160, 160)), dtype=np.uint16) * 40 + 5000  # 5000-15200
    deep = np.full((360, 480), 9000, dtype=np.uint16)
    deep[100:260, 160:320] = gray
    Image.fromarray(deep).save(photos / "deep.png")
    assert Image.open(photos / "deep.png").mode.startswith("I")
    return root


def _run(project, **predict):
    params = {"photos": str(project / "photos"), "predict": {"model": "scratch", **predict}}
    run_kedro(project, "predict", params)
    report = json.loads((project / "data" / "08_reporting" / "predict_report.json").read_text())
    table = pd.read_csv(project / "data" / "07_model_output" / "photo_predictions.csv")
    return report, table


def test_every_photo_keeps_its_own_annotation_and_16_bit_gray_is_read(project):
    report, table = _run(project)
    names = {"portrait.jpg", "portrait.png", "a/b.jpg", "a__b.jpg", "deep.png"}
    assert report["photos_seen"] == 5 and report["unreadable"] == {} and report["no_face"] == []
    assert set(table["file"]) == names
    files = set(report["annotated"].values())
    assert len(files) == 5
    annotated = project / "data" / "07_model_output" / "annotated_photos"
    assert {p.name for p in annotated.iterdir()} == files
    assert report["detector"] == "mtcnn" and report["found_by_race_measured"]["largest_gap"] >= 0
    # the views the ages were averaged over (conf/base's inference), as export_info.json says them
    assert report["test_time_augmentation"] == {"flip_average": True, "zooms": [1.05, 1.1], "shift": 0.0, "views": 6}


def test_the_file_size_cap_is_the_parameter(project):
    import logging

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("age_gender.pipelines.predict.nodes")
    logger.addHandler(handler)
    try:
        report, table = _run(project, max_file_mb=0.002)  # 2 kB: every photo here is larger
    finally:
        logger.removeHandler(handler)
    assert set(report["unreadable"]) == {"portrait.jpg", "portrait.png", "a/b.jpg", "a__b.jpg", "deep.png"}
    assert all(v.startswith("too_large:") for v in report["unreadable"].values()) and table.empty
    # an empty result is said on the console, not only inside the report
    assert "WARNING: 0 face(s) in 0 photo(s); 5 unreadable: see predict_report.json" in lines
