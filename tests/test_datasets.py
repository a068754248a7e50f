import io
import os
import tarfile
import zipfile

import numpy as np
import pytest
from kedro.io import DatasetError

from age_gender.datasets import FaceSourceDataset, KerasModelDataset, NpyDataset


def _hostile_tar(path, good: bytes):
    with tarfile.open(path, "w:gz") as archive:
        for name in ("UTKFace/1_0_0_20170109142408075.jpg.chip.jpg", "../escape.jpg",
                     "/etc/evil.jpg", "UTKFace/../../up.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(good)
            archive.addfile(info, io.BytesIO(good))
        link = tarfile.TarInfo("UTKFace/link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
        hard = tarfile.TarInfo("UTKFace/hard.jpg")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "../../etc/shadow"
        archive.addfile(hard)
    return path


def test_hostile_tar_members_are_refused_and_never_written(tmp_path, archive_members):
    good = next(iter(archive_members.values()))
    workdir = tmp_path / "work"
    workdir.mkdir()
    archive = _hostile_tar(tmp_path / "bad.tar.gz", good)
    before = set(os.listdir(tmp_path))
    source = FaceSourceDataset(str(archive)).load()
    assert [name for name, _ in source.members] == ["UTKFace/1_0_0_20170109142408075.jpg.chip.jpg"]
    assert dict(source.refused) == {
        "../escape.jpg": "unsafe_path", "/etc/evil.jpg": "unsafe_path",
        "UTKFace/../../up.jpg": "unsafe_path", "UTKFace/link.jpg": "link_or_special_member",
        "UTKFace/hard.jpg": "link_or_special_member"}
    assert source.files_seen == 6
    assert set(os.listdir(tmp_path)) == before and not list(workdir.iterdir())


def test_zip_and_folder_sources_read_the_same_files(tmp_path, archive_members):
    picked = dict(list(archive_members.items())[:5])
    with zipfile.ZipFile(tmp_path / "faces.zip", "w") as archive:
        for name, data in picked.items():
            archive.writestr(name, data)
        archive.writestr("../outside.jpg", b"x")
    folder = tmp_path / "folder"
    for name, data in picked.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "UTKFace" / "link.jpg").symlink_to("/etc/passwd")
    from_zip = FaceSourceDataset(str(tmp_path / "faces.zip")).load()
    from_dir = FaceSourceDataset(str(folder)).load()
    assert sorted(from_zip.members) == sorted(from_dir.members) == sorted(picked.items())
    assert from_zip.refused == [("../outside.jpg", "unsafe_path")]
    assert from_dir.refused == [("UTKFace/link.jpg", "link_or_special_member")]


def test_missing_archive_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match=r"No face data at .*nowhere\.tar\.gz.*UTKFACE_ARCHIVE"):
        FaceSourceDataset(str(tmp_path / "nowhere.tar.gz")).load()


def test_not_an_archive_is_a_clear_error(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(DatasetError, match="neither a readable"):
        FaceSourceDataset(str(tmp_path / "junk.tar.gz")).load()


def test_npy_dataset_round_trip_is_atomic(tmp_path):
    dataset = NpyDataset(str(tmp_path / "a" / "x.npy"), mmap_mode="r")
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    dataset.save(array)
    assert np.array_equal(dataset.load(), array)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.npy"]
    with pytest.raises(DatasetError, match="Object arrays"):
        dataset.save(np.array([object()], dtype=object))
    assert np.array_equal(dataset.load(), array)  # the failed save left the old file intact
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.npy"]


def test_truncated_model_file_is_named_as_damaged(tmp_path):
    """A .keras file cut short (a copy interrupted, a full disk elsewhere) is named as damaged with
    the fix, where Keras itself says "File not found" about a file that is there."""
    import keras

    path = tmp_path / "m.keras"
    KerasModelDataset(str(path)).save(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"m\.keras' is not a readable \.keras model \(damaged.*--load-versions"):
        KerasModelDataset(str(path)).load()


def test_one_image_file_is_a_source_of_one_member(tmp_path):
    """`predict` (and any entry) may point at a single photo; an archive keeps its magic-byte reader."""
    from PIL import Image

    photo = tmp_path / "holiday.jpg"
    Image.new("RGB", (40, 30), (200, 120, 90)).save(photo)
    source = FaceSourceDataset(str(photo)).load()
    assert [name for name, _ in source.members] == ["holiday.jpg"] and source.members[0][1] == photo.read_bytes()
    assert not source.refused
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(DatasetError, match=r"neither a readable .tar/.tar.gz/.zip archive nor a folder .*, nor an "
                                           r"image by its name \(\.jpg, "):
        FaceSourceDataset(str(notes)).load()


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    """`--params photos=pipe.jpg` on a named pipe: one line, never a read that blocks forever
    (the alarm turns a regression into a failure instead of a hung suite)."""
    import signal

    def hung(*_):
        raise AssertionError("loading a FIFO blocked")

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(DatasetError, match=r"pipe\.jpg' is a FIFO \(named pipe\), not a file or folder of faces"):
            FaceSourceDataset(str(fifo), sha256="0" * 64).load()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
