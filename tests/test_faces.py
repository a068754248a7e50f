import io

import numpy as np
import pytest
from PIL import Image

from age_gender.faces import (
    FaceLabel,
    crops_with_faces,
    decode_face,
    decode_many,
    parse_utkface_name,
)


def test_parse_good_name():
    assert parse_utkface_name("UTKFace/26_1_2_20170116174525125.jpg.chip.jpg") == FaceLabel(
        26, 1, 2, "20170116174525125")


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("39_1_20170116174525125.jpg.chip.jpg", "3 underscore-separated fields"),
        ("24_0_1_20170116220224657 .jpg.chip.jpg", "not 17 digits"),
        ("55_0_0_20170116232725357jpg.chip.jpg", "not 17 digits"),
        ("14_0_0_2017011022340900.jpg.chip.jpg", "not 17 digits"),
        ("28_1_2_201701161846515488.jpg.chip.jpg", "not 17 digits"),
        ("26_2_0_20170116174525125.jpg.chip.jpg", "gender field '2'"),
        ("26_1_7_20170116174525125.jpg.chip.jpg", "race field '7'"),
        ("x_1_0_20170116174525125.jpg.chip.jpg", "not a whole number"),
        ("130_1_0_20170116174525125.jpg.chip.jpg", "above 116"),
        ("26_1_0_20170116174525125.jpeg", "does not end"),
        ("26_1_0_20170116174525125.JPG", "does not end"),
        ("26_1_0_20170116174525125.jpg.png", "not 17 digits"),
    ],
)
def test_parse_refuses_malformed_names_with_reason(name, fragment):
    reason = parse_utkface_name(name)
    assert isinstance(reason, str) and fragment in reason


@pytest.mark.parametrize("name, kind", [
    ("\u0662\u0665_1_0_20170116174525125.jpg.chip.jpg", "malformed_name"),  # Arabic-Indic 25
    ("25_1_0_20170116174525125.jpg.chip.jpg\n", "malformed_name"),
    ("25_1_0_2017011617452512\uff15.jpg.chip.jpg", "malformed_name"),  # a full-width 5
    ("117_1_0_20170116174525125.jpg.chip.jpg", "implausible_age"),
    ("1" + "0" * 4300 + "_1_0_20170116174525125.jpg.chip.jpg", "implausible_age"),
])
def test_labels_are_ascii_whole_names_and_never_raise(name, kind):
    refusal = parse_utkface_name(name)
    assert isinstance(refusal, str) and refusal.kind == kind and len(refusal) < 200


def test_leading_zeros_and_the_oldest_age_parse():
    assert parse_utkface_name("007_0_0_20170116174525125.jpg.chip.jpg").age == 7
    assert parse_utkface_name("116_0_0_20170116174525125.jpg.chip.jpg").age == 116


def test_all_eight_malformed_archive_names_are_refused(archive_members):
    refused = [n for n in archive_members if isinstance(parse_utkface_name(n), str)]
    assert len(refused) == 8


def _real_jpeg(archive_members) -> bytes:
    return next(data for name, data in archive_members.items()
                if not isinstance(parse_utkface_name(name), str))


def _reencode(data: bytes, mode: str, fmt: str, size=None) -> bytes:
    image = Image.open(io.BytesIO(data)).convert(mode)
    if size:
        image = image.resize(size)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_decode_real_jpeg_at_each_size(archive_members):
    result = decode_face(_real_jpeg(archive_members), (64, 128), max_pixels=10**7)
    assert result.reason is None and (result.width, result.height, result.mode) == (200, 200, "RGB")
    assert result.arrays[64].shape == (64, 64, 3) and result.arrays[128].shape == (128, 128, 3)
    assert result.arrays[64].dtype == np.uint8 and result.arrays[128].std() > 10


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"),
                                       ("CMYK", "JPEG"), ("P", "PNG"), ("RGB", "BMP")])
def test_decode_converts_odd_modes_to_rgb(archive_members, mode, fmt):
    result = decode_face(_reencode(_real_jpeg(archive_members), mode, fmt), (64,), 10**7)
    assert result.reason is None and result.mode == mode
    assert result.arrays[64].shape == (64, 64, 3)


def test_decode_center_crops_odd_sizes(archive_members):
    data = _reencode(_real_jpeg(archive_members), "RGB", "JPEG", size=(300, 180))
    result = decode_face(data, (64,), 10**7)
    assert (result.width, result.height) == (300, 180) and result.arrays[64].shape == (64, 64, 3)


@pytest.mark.parametrize("cut, reason", [(0, "empty_file"), (500, "unreadable_image"),
                                         (20, "unreadable_image")])
def test_decode_sets_aside_empty_and_truncated(archive_members, cut, reason):
    data = _real_jpeg(archive_members)[:cut]
    result = decode_face(data, (64,), 10**7)
    assert result.arrays is None and result.reason == reason and result.detail


def test_decode_names_a_non_image_without_pillows_buffer_text():
    result = decode_face(b"shopping list: eggs, milk\n", (64,), 10**7)
    assert result.reason == "unreadable_image"
    assert result.detail == "not an image format Pillow can read" and "BytesIO" not in result.detail


def test_decode_sets_aside_decompression_bomb():
    image = Image.new("L", (6000, 6000))
    out = io.BytesIO()
    image.save(out, format="PNG")
    result = decode_face(out.getvalue(), (64,), max_pixels=10**6)
    assert result.reason == "decompression_bomb" and "6000x6000" in result.detail


def test_decode_many_in_processes_matches_serial(archive_members):
    blobs = list(archive_members.values())[:300]
    serial = decode_many(blobs, (64,), 10**7, workers=1)
    parallel = decode_many(blobs, (64,), 10**7, workers=2)
    assert [r.reason for r in serial] == [r.reason for r in parallel]
    assert all(np.array_equal(a.arrays[64], b.arrays[64]) for a, b in zip(serial, parallel) if a.arrays)


def test_face_detector_finds_faces_in_real_crops_and_not_in_noise(archive_members):
    crops = np.stack([decode_face(d, (64,), 10**7).arrays[64] for n, d in archive_members.items()
                      if not isinstance(parse_utkface_name(n), str)][:60])
    noise = np.random.default_rng(0).integers(0, 255, size=(20, 64, 64, 3), dtype=np.uint8)
    assert crops_with_faces(crops).mean() > 0.85
    assert crops_with_faces(noise).mean() < 0.1


def test_crop_pads_with_edge_pixels_where_it_leaves_the_photo():
    from age_gender.detection import Face, crop_face

    photo = np.full((100, 150, 3), 7, dtype=np.uint8)
    crop = crop_face(photo, Face((0.0, 0.0, 40.0, 40.0)), size=32, margin=0.4)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8 and (crop == 7).all()
