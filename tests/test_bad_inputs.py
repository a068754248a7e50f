"""Bad inputs (issue 11), each built in the test from real archive images: every one is refused
with a one-line error or set aside with a report line, and nothing good is lost."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError
from PIL import Image

from age_gender.datasets import FaceSource, FaceSourceDataset
from age_gender.faces import UTKFACE_NAME, decode_face, parse_utkface_name
from age_gender.pipelines.ingestion.nodes import NoUsableFaces, decode_faces, select_faces
from tests.conftest import REPO, run_kedro, write_tar

PARAMS = {"image_sizes": [32], "max_pixels": 10**6, "workers": 1, "exclude_files": [],
          "min_side": 32, "conflicting_duplicates": "keep_first",
          "face_check": {"enabled": False, "drop_suspects": False, "min_neighbors": 3}}
CASES = REPO.parent / "shared" / "cases"


@pytest.fixture(scope="module")
def faces(archive_members) -> list[tuple[str, bytes]]:
    """20 well-named real faces, distinct images."""
    good, seen = [], set()
    for name, data in archive_members.items():
        if UTKFACE_NAME.fullmatch(name.rsplit("/", 1)[-1]) and data not in seen:
            good.append((name, data))
            seen.add(data)
        if len(good) == 20:
            break
    return good


def _gray(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _ingest(source: FaceSource, **params):
    manifest, images, findings = decode_faces(source, {**PARAMS, **params})
    found = np.ones(len(manifest), dtype=bool)
    return select_faces(manifest, images, found, findings, {**PARAMS, **params})


# --- 3: corrupt archive, known checksum ----------------------------------------------------------


def _flip_middle(path: Path) -> Path:
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle] ^= 0xFF
    raw[middle + 1] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def test_two_flipped_bytes_in_a_tar_gz_fail_as_a_corrupt_archive(tmp_path, faces):
    archive = _flip_middle(write_tar(tmp_path / "faces.tar.gz", dict(faces)))
    with pytest.raises(DatasetError, match=r"faces\.tar\.gz': archive is corrupt") as error:
        FaceSourceDataset(str(archive)).load()
    assert "\n" not in str(error.value)


def test_a_damaged_end_of_gzip_is_caught_by_its_crc(tmp_path, faces):
    """Damage where no member lives (the gzip trailer's CRC): only reading to the end finds it."""
    archive = write_tar(tmp_path / "faces.tar.gz", dict(faces))
    raw = bytearray(archive.read_bytes())
    raw[-6] ^= 0xFF  # inside the CRC-32 of the uncompressed data
    archive.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="archive is corrupt"):
        FaceSourceDataset(str(archive)).load()


def test_a_known_sha256_is_verified(tmp_path, faces):
    import hashlib

    archive = write_tar(tmp_path / "faces.tar.gz", dict(faces))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert len(FaceSourceDataset(str(archive), sha256=digest.upper()).load().members) == 20
    with pytest.raises(DatasetError, match=r"archive is corrupt or not the expected one.*sha256"):
        FaceSourceDataset(str(archive), sha256="0" * 64).load()


# --- 4: deep, blank, tiny and rotated images -----------------------------------------------------


@pytest.mark.parametrize("kind", ["png16", "tiff_int32", "tiff_float"])
def test_deep_images_are_scaled_by_their_own_range(faces, kind):
    gray = _gray(faces[0][1])
    if kind == "png16":
        image = Image.fromarray((gray * 257).astype(np.uint16))
        data = _encode(image, "PNG")
    elif kind == "tiff_int32":
        image = Image.fromarray((gray * 1000 - 50_000).astype(np.int32))
        data = _encode(image, "TIFF")
    else:
        image = Image.fromarray((gray / 255 * 3.5 - 1).astype(np.float32))
        data = _encode(image, "TIFF")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I", "F")
    result = decode_face(data, (64,), 10**7)
    assert result.reason is None, result.detail
    face = result.arrays[64][..., 0].astype(np.float64)
    expected = decode_face(_encode(Image.fromarray(gray.astype(np.uint8)), "PNG"), (64,), 10**7).arrays[64][..., 0]
    assert face.std() > 20  # never a blank face
    assert np.corrcoef(face.ravel(), expected.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("image, reason", [
    (Image.new("I;16", (64, 64), 40_000), "constant_image"),
    (Image.new("RGB", (64, 64), (255, 255, 255)), "constant_image"),
    (Image.fromarray(np.full((64, 64), np.nan, np.float32)), "unsupported_mode"),
])
def test_blank_or_unconvertible_images_are_set_aside(image, reason):
    result = decode_face(_encode(image, "TIFF"), (32,), 10**7)
    assert result.arrays is None and result.reason == reason


def test_images_below_the_minimum_side_are_set_aside(faces):
    face = Image.open(io.BytesIO(faces[0][1]))
    for side, reason in ((1, "too_small"), (31, "too_small"), (32, None)):
        data = _encode(face.resize((side, side)), "PNG")
        assert decode_face(data, (64,), 10**7, min_side=32).reason == reason


def test_exif_rotated_jpeg_is_turned_upright(faces):
    upright = Image.open(io.BytesIO(faces[0][1]))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    with_tag = decode_face(_encode(stored, "JPEG", exif=exif, quality=95), (64,), 10**7).arrays[64]
    without = decode_face(_encode(stored, "JPEG", quality=95), (64,), 10**7).arrays[64]
    reference = decode_face(_encode(upright, "JPEG", quality=95), (64,), 10**7).arrays[64]
    error = np.abs(with_tag.astype(int) - reference).mean()
    assert error < 3 and np.abs(without.astype(int) - reference).mean() > 5 * error


def test_deep_tiny_and_blank_files_get_report_lines_and_the_rest_is_kept(faces):
    gray = _gray(faces[0][1])
    members = list(faces[1:]) + [
        ("UTKFace/30_0_0_20170109142408001.jpg.chip.jpg", _encode(Image.fromarray((gray * 257).astype(np.uint16)), "PNG")),
        ("UTKFace/30_0_0_20170109142408002.jpg.chip.jpg", _encode(Image.new("RGB", (1, 1)), "PNG")),
        ("UTKFace/30_0_0_20170109142408003.jpg.chip.jpg", _encode(Image.new("L", (80, 80), 0), "PNG")),
    ]
    final, cache, report = _ingest(FaceSource("test", members=members))
    assert report["set_aside"] == {"constant_image": ["UTKFace/30_0_0_20170109142408003.jpg.chip.jpg"],
                                   "too_small": ["UTKFace/30_0_0_20170109142408002.jpg.chip.jpg"]}
    assert report["kept"] == 20 and "I;16" in report["converted"]["UTKFace/30_0_0_20170109142408001.jpg.chip.jpg"]
    assert all(np.ptp(cache["32px"][i]) > 0 for i in range(len(final)))


# --- 5: labels --------------------------------------------------------------------------------


def test_labels_must_be_ascii_digits_over_the_whole_name(faces):
    arabic = "UTKFace/\u0662\u0665_0_0_20170109142408001.jpg.chip.jpg"
    newline = "UTKFace/25_0_0_20170109142408002.jpg.chip.jpg\n"
    huge = "UTKFace/" + "9" * 4301 + "_0_0_20170109142408003.jpg.chip.jpg"
    old = "UTKFace/130_0_0_20170109142408004.jpg.chip.jpg"
    data = faces[0][1]
    members = list(faces[1:]) + [(n, data) for n in (arabic, newline, huge, old)]
    final, _, report = _ingest(FaceSource("test", members=members))
    assert report["set_aside"] == {"malformed_name": sorted([arabic, newline]),
                                   "implausible_age": sorted([huge, old])}
    assert "ASCII" in report["details"][arabic] and "4301 digits" in report["details"][huge]
    assert report["kept"] == 19 and list(final["member"]) == sorted(n for n, _ in faces[1:])
    assert parse_utkface_name("9" * 5000 + "_0_0_20170109142408003.jpg.chip.jpg").kind == "implausible_age"


# --- 6: the same name twice ---------------------------------------------------------------------


def test_one_name_twice_with_different_images_keeps_neither(tmp_path, faces):
    twice = "UTKFace/26_1_2_20170116174525125.jpg.chip.jpg"
    same = "UTKFace/27_1_2_20170116174525126.jpg.chip.jpg"
    with tarfile.open(tmp_path / "faces.tar.gz", "w:gz") as archive:
        for name, data in [*faces[2:], (twice, faces[0][1]), (twice, faces[1][1]),
                           (same, faces[0][1]), (same, faces[0][1])]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    source = FaceSourceDataset(str(tmp_path / "faces.tar.gz")).load()
    final, _, report = _ingest(source)
    assert report["set_aside"]["duplicate_name"] == [twice, twice]
    assert "different contents" in report["details"][twice]
    assert twice not in set(final["member"]) and list(final["member"]).count(same) == 1
    assert report["kept"] == 19 and final["file_name"].is_unique


# --- 7: empty folder, no usable face -----------------------------------------------------------


def test_an_empty_folder_names_the_path_and_the_setting(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"No files at all in '.*empty'.*UTKFACE_ARCHIVE"):
        FaceSourceDataset(str(tmp_path / "empty")).load()


def test_no_usable_face_is_an_error_naming_the_input(tmp_path, faces):
    folder = tmp_path / "faces"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a face")
    (folder / "1_0_0_20170109142408075.jpg.chip.jpg").write_bytes(faces[0][1][:300])
    source = FaceSourceDataset(str(folder), help="Set EXTERNAL_FACES.").load()
    with pytest.raises(NoUsableFaces, match=r"No usable face in '.*faces' \(1 not_an_image_name, "
                                            r"1 unreadable_image\); nothing was saved\. Set EXTERNAL_FACES"):
        decode_faces(source, PARAMS)


@pytest.mark.parametrize("entry, runtime, fix", [
    ("utkface_raw", {}, "UTKFACE_ARCHIVE"),
    ("external_raw", {"external_faces": "EMPTY"}, "EXTERNAL_FACES"),
    ("photos_raw", {"photos": "EMPTY"}, "PREDICT_PHOTOS"),
])
def test_each_raw_input_names_its_own_setting(tmp_path, monkeypatch, entry, runtime, fix):
    from kedro.io import DataCatalog

    from age_gender.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(tmp_path / "empty"))
    runtime = {k: str(tmp_path / "empty") for k in runtime}
    loader = CONFIG_LOADER_CLASS(str(REPO / "conf"), runtime_params=runtime, **CONFIG_LOADER_ARGS)
    catalog = DataCatalog.from_config(loader["catalog"])
    assert fix in catalog.get(entry).help
    with pytest.raises(DatasetError, match=rf"No files at all in '.*empty'.*{fix}"):
        catalog.load(entry)


# --- 8: Windows zips, exclude_files entries that match nothing ---------------------------------


def test_windows_zip_names_are_normalised_and_unmatched_exclusions_reported(tmp_path, faces, caplog):
    with zipfile.ZipFile(tmp_path / "faces.zip", "w") as archive:
        for name, data in faces:
            archive.writestr(name.replace("/", "\\"), data)
    source = FaceSourceDataset(str(tmp_path / "faces.zip")).load()
    assert sorted(n for n, _ in source.members) == sorted(n for n, _ in faces)
    target = faces[3][0].rsplit("/", 1)[-1]
    final, _, report = _ingest(source, exclude_files=[target, "UTKFace\\" + faces[4][0][8:], "typo.jpg"])
    assert report["set_aside"]["excluded_by_list"] == sorted([faces[3][0], faces[4][0]])
    assert report["exclude_files_unmatched"] == ["typo.jpg"] and "typo.jpg" in caplog.text
    assert report["kept"] == 18 and not final["file_name"].str.contains("\\\\", regex=False).any()


# --- denial of service: names never read, caps -------------------------------------------------


def test_names_no_image_has_are_never_read_and_caps_refuse_the_rest(tmp_path, faces):
    zeros = bytes(5_000_000)
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(20):
            archive.writestr(f"UTKFace/padding_{i}.bin", zeros)
        for name, data in faces[:3]:
            archive.writestr(name, data)
    source = FaceSourceDataset(str(tmp_path / "bomb.zip"), max_total_bytes=1_000_000).load()
    assert len(source.members) == 3 and len(source.refused) == 20
    assert {reason for _, reason in source.refused} == {"not_an_image_name"}

    with zipfile.ZipFile(tmp_path / "zeros.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(20):
            archive.writestr(f"UTKFace/{i}_0_0_20170109142408075.jpg.chip.jpg", zeros)
    with pytest.raises(DatasetError, match=r"zeros\.zip' holds more than 12000000 bytes.*max_total_bytes"):
        FaceSourceDataset(str(tmp_path / "zeros.zip"), max_total_bytes=12_000_000).load()
    with pytest.raises(DatasetError, match=r"zeros\.zip' has more than 10 members.*max_members"):
        FaceSourceDataset(str(tmp_path / "zeros.zip"), max_members=10).load()
    # a tar's sizes are only known as it streams: it is refused at the member that passes the cap
    tar = write_tar(tmp_path / "zeros.tar.gz", {f"UTKFace/{i}_0_0_20170109142408075.jpg.chip.jpg": zeros
                                               for i in range(4)})
    with pytest.raises(DatasetError, match=r"zeros\.tar\.gz' holds more than 12000000 bytes"):
        FaceSourceDataset(str(tar), max_total_bytes=12_000_000).load()
    with pytest.raises(DatasetError, match=r"zeros\.tar\.gz' has more than 3 members"):
        FaceSourceDataset(str(tar), max_members=3).load()


def test_the_real_archive_is_well_inside_the_default_caps(utkface_archive):
    defaults = FaceSourceDataset(str(utkface_archive))
    with tarfile.open(utkface_archive) as archive:
        sizes = [m.size for m in archive if m.isfile()]
    assert len(sizes) * 5 < defaults._max_members and sum(sizes) * 5 < defaults._max_total_bytes


# --- unreadable zip members --------------------------------------------------------------------


def _patch_encrypted(path: Path, name: str) -> None:
    """Set the 'encrypted' flag (bit 0) of one member in its local and its central header."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        entry = archive.start_dir  # the central directory: 46 fixed bytes + name + extra + comment
    raw[info.header_offset + 6] |= 0x01
    while raw[entry + 46:entry + 46 + len(name)] != name.encode():
        lengths = [int.from_bytes(raw[entry + k:entry + k + 2], "little") for k in (28, 30, 32)]
        entry += 46 + sum(lengths)
    raw[entry + 8] |= 0x01
    path.write_bytes(bytes(raw))


def test_bad_crc_and_encrypted_zip_members_are_set_aside_and_the_run_goes_on(tmp_path, faces):
    path = tmp_path / "faces.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in faces:
            archive.writestr(name, data)
    bad_crc, encrypted = faces[5][0], faces[6][0]
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(bad_crc).header_offset + 30 + len(bad_crc) + 500
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    _patch_encrypted(path, encrypted)
    source = FaceSourceDataset(str(path)).load()
    assert dict(source.refused) == {bad_crc: "unreadable_member", encrypted: "unreadable_member"}
    assert "CRC" in source.details[bad_crc] and "encrypted" in source.details[encrypted]
    final, _, report = _ingest(source)
    assert report["kept"] == 18 and "CRC" in report["details"][bad_crc]


def test_a_deflate64_member_is_set_aside_and_the_other_19_kept():
    source = FaceSourceDataset(str(CASES / "deflate64.zip")).load()
    member = "UTKFace/12_1_0_20170109201611941.jpg.chip.jpg"
    assert source.refused == [(member, "unreadable_member")]
    assert "compression" in source.details[member] and len(source.members) == 19


# --- reader by magic bytes, special files, ~ ----------------------------------------------------


def test_a_tar_ending_in_a_zip_is_read_as_a_tar(tmp_path, faces):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        for name, data in faces[:3]:
            archive.writestr(name, data)
    with tarfile.open(tmp_path / "faces.tar", "w") as archive:
        for name, data in [*faces, ("UTKFace/extra.zip", inner.getvalue())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    source = FaceSourceDataset(str(tmp_path / "faces.tar")).load()
    assert sorted(source.members) == sorted(faces)
    assert source.refused == [("UTKFace/extra.zip", "not_an_image_name")]
    shutil.copy(tmp_path / "faces.tar", tmp_path / "faces.zip")  # the name says zip: still a tar
    assert len(FaceSourceDataset(str(tmp_path / "faces.zip")).load().members) == 20


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_a_face_is_refused_not_opened(tmp_path, faces):
    folder = tmp_path / "faces"
    folder.mkdir()
    for name, data in faces[:5]:
        (folder / name.rsplit("/", 1)[-1]).write_bytes(data)
    os.mkfifo(folder / "1_0_0_20170109142408075.jpg.chip.jpg")
    source = FaceSourceDataset(str(folder)).load()  # opening the FIFO would block here
    assert source.refused == [("1_0_0_20170109142408075.jpg.chip.jpg", "link_or_special_member")]
    assert len(source.members) == 5


def test_a_home_relative_path_is_expanded(tmp_path, faces, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_tar(tmp_path / "faces.tar.gz", dict(faces))
    assert len(FaceSourceDataset("~/faces.tar.gz").load().members) == 20


# --- through Kedro: a failed ingestion keeps the previous outputs ------------------------------


@pytest.mark.pipeline
def test_corrupt_archive_or_empty_folder_leave_the_previous_ingestion_intact(kedro_project, tmp_path,
                                                                          faces, monkeypatch):
    good = write_tar(tmp_path / "good.tar.gz", dict(faces))
    params = {"ingestion": {"image_sizes": [32]}}
    monkeypatch.setenv("UTKFACE_ARCHIVE", str(good))
    run_kedro(kedro_project, "ingestion", params)
    outputs = sorted(p for p in (kedro_project / "data").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in outputs}
    assert json.loads((kedro_project / "data" / "08_reporting" / "ingestion_report.json").read_text())["kept"] == 20

    corrupt = _flip_middle(write_tar(tmp_path / "corrupt.tar.gz", dict(faces)))
    (tmp_path / "empty").mkdir()
    for raw, message in ((corrupt, "archive is corrupt"), (tmp_path / "empty", "No files at all")):
        monkeypatch.setenv("UTKFACE_ARCHIVE", str(raw))
        with pytest.raises(DatasetError, match=message):
            run_kedro(kedro_project, "ingestion", params)
        after = sorted(p for p in (kedro_project / "data").rglob("*") if p.is_file())
        assert after == outputs and all(p.read_bytes() == before[p] for p in outputs)
    assert len(pd.read_parquet(kedro_project / "data" / "03_primary" / "face_manifest.parquet")) == 20
