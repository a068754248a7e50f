"""Kedro datasets the project needs beyond kedro-datasets.

* ``FaceSourceDataset``: UTKFace as published (``.tar.gz``/``.tar``/``.zip`` read in memory, or a
  folder), refusing archive members that try to leave the archive.
* ``NpyDataset``: one NumPy array, written atomically, optionally memory-mapped on load.
* ``KerasModelDataset``: a ``.keras`` model, written atomically so a killed run never leaves a
  half-written model behind.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

DATA_HELP = (
    "Get UTKFace.tar.gz (the 'Aligned & Cropped Faces' archive) and put it at that path, or point "
    "the catalog at your copy: `export UTKFACE_ARCHIVE=/path/to/UTKFace.tar.gz` (a .tar.gz, .zip "
    "or folder), or set `utkface_raw.filepath` in conf/local/catalog.yml."
)


@dataclass
class FaceSource:
    """Files of a face dataset, read into memory: ``members`` are ``(name, bytes)`` pairs and
    ``refused`` are ``(name, reason)`` pairs for members that were never read."""

    origin: str
    members: list[tuple[str, bytes]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def files_seen(self) -> int:
        return len(self.members) + len(self.refused)


def _unsafe_reason(name: str) -> str | None:
    """Why an archive member name is refused, or None when it stays inside the archive."""
    if not name or "\x00" in name:
        return "unsafe_path"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (
        len(name) > 1 and name[1] == ":"
    ):
        return "unsafe_path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "unsafe_path"
    return None


def _read_tar(path: Path, max_bytes: int) -> FaceSource:
    source = FaceSource(origin=str(path))
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            if member.isdir():
                continue
            reason = _unsafe_reason(member.name)
            if reason is None and not member.isfile():
                reason = "link_or_special_member"
            if reason is None and member.size > max_bytes:
                reason = "too_large"
            if reason:
                source.refused.append((member.name, reason))
                continue
            handle = archive.extractfile(member)
            source.members.append((member.name, handle.read() if handle else b""))
    return source


def _read_zip(path: Path, max_bytes: int) -> FaceSource:
    source = FaceSource(origin=str(path))
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            reason = _unsafe_reason(info.filename)
            if reason is None and stat.S_ISLNK(mode):
                reason = "link_or_special_member"
            if reason is None and info.file_size > max_bytes:
                reason = "too_large"
            if reason:
                source.refused.append((info.filename, reason))
                continue
            source.members.append((info.filename, archive.read(info)))
    return source


def _read_folder(path: Path, max_bytes: int) -> FaceSource:
    source = FaceSource(origin=str(path))
    for entry in sorted(path.rglob("*")):
        name = entry.relative_to(path).as_posix()
        if entry.is_symlink():
            source.refused.append((name, "link_or_special_member"))
        elif entry.is_file():
            if entry.stat().st_size > max_bytes:
                source.refused.append((name, "too_large"))
            else:
                source.members.append((name, entry.read_bytes()))
    return source


class FaceSourceDataset(AbstractDataset[None, FaceSource]):
    """Read-only dataset of face image files from a ``.tar(.gz)``, a ``.zip`` or a folder.

    Members are read in memory; nothing is extracted to disk. Members whose path is absolute,
    climbs out with ``..``, or is a link or device are refused and listed in ``refused``.
    """

    def __init__(self, filepath: str, max_member_bytes: int = 20_000_000,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self._max_member_bytes = int(max_member_bytes)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self._filepath.exists()

    def load(self) -> FaceSource:
        path = self._filepath
        if not path.exists():
            raise DatasetError(f"No face data at '{path.resolve()}'. {DATA_HELP}")
        if path.is_dir():
            return _read_folder(path, self._max_member_bytes)
        if zipfile.is_zipfile(path):
            return _read_zip(path, self._max_member_bytes)
        try:
            return _read_tar(path, self._max_member_bytes)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise DatasetError(
                f"'{path.resolve()}' is neither a readable .tar/.tar.gz/.zip archive nor a "
                f"folder ({error}). {DATA_HELP}"
            ) from error

    def save(self, data: None) -> None:
        raise DatasetError("FaceSourceDataset is read-only: the raw data is never written.")


def _atomic_target(path: Path) -> tuple[Path, Path]:
    """A temporary file beside ``path`` (same filesystem, so ``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs should read like any other file
    return Path(tmp), path


class NpyDataset(AbstractDataset[np.ndarray, np.ndarray]):
    """One ``.npy`` array. Saves atomically; ``mmap_mode='r'`` loads without reading it all."""

    def __init__(self, filepath: str, mmap_mode: str | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self._mmap_mode = mmap_mode
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "mmap_mode": self._mmap_mode}

    def _exists(self) -> bool:
        return self._filepath.exists()

    def load(self) -> np.ndarray:
        return np.load(self._filepath, mmap_mode=self._mmap_mode, allow_pickle=False)

    def save(self, data: np.ndarray) -> None:
        tmp, final = _atomic_target(self._filepath)
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, np.asarray(data), allow_pickle=False)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


class KerasModelDataset(AbstractDataset[Any, Any]):
    """A Keras 3 model in the native ``.keras`` format, saved atomically.

    Loads with ``keras.models.load_model``; the project's custom layers are registered
    serialisable, so no ``custom_objects`` are needed once ``age_gender.models`` is imported.
    """

    def __init__(self, filepath: str, compile: bool = False, missing_ok: bool = False,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self._compile = compile
        self._missing_ok = missing_ok
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "compile": self._compile}

    def _exists(self) -> bool:
        return self._filepath.exists()

    def load(self) -> Any:
        import keras

        import age_gender.models  # noqa: F401  (registers the custom layers)

        if not self._filepath.exists():
            if self._missing_ok:
                return None  # an optional model that has not been trained yet
            raise DatasetError(f"No trained model at '{self._filepath.resolve()}': train it first "
                               f"(kedro run --pipeline scratch / transfer).")
        return keras.models.load_model(self._filepath, compile=self._compile)

    def save(self, model: Any) -> None:
        tmp, final = _atomic_target(self._filepath)
        try:
            model.save(tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


class OptionalJSONDataset(AbstractDataset[Any, Any]):
    """A JSON file that may not exist yet: loads ``None`` then (e.g. a search not run yet)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self._filepath.exists()

    def load(self) -> Any:
        import json

        if not self._filepath.exists():
            return None
        return json.loads(self._filepath.read_text())

    def save(self, data: Any) -> None:
        import json

        tmp, final = _atomic_target(self._filepath)
        try:
            tmp.write_text(json.dumps(data, indent=2, default=str))
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


class WorkingDirectoryDataset(AbstractDataset[None, str]):
    """A folder a node works in (checkpoints, tuner trials). Loads as its absolute path, so the
    catalog, not the node, decides where such files live (relative to the project)."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def _exists(self) -> bool:
        return True

    def load(self) -> str:
        self._path.mkdir(parents=True, exist_ok=True)
        return str(self._path.resolve())

    def save(self, data: None) -> None:
        raise DatasetError("A working directory is written by the node that uses it, not saved.")
