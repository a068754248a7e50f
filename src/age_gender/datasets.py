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


# --- atomic outputs ------------------------------------------------------------------------------
# kedro-datasets writes straight into the target file, so a run killed while saving leaves it
# empty or half-written and the previous file is gone. The variants below save to a temporary
# sibling (same folder, so same filesystem) and ``os.replace`` it over the target: a kill leaves
# the old file or the new one, never a broken one. Remote filesystems (s3://, gs://...) and
# versioned datasets keep the library's own save (object stores replace objects whole).


class _AtomicSave:
    """Mixin for a kedro-datasets file dataset: save to a temporary sibling, then rename."""

    _atomic_path: PurePosixPath | None = None

    def _get_save_path(self) -> PurePosixPath:
        if self._atomic_path is not None:
            return self._atomic_path
        return super()._get_save_path()

    def save(self, data: Any) -> None:
        if getattr(self, "_protocol", "file") != "file" or getattr(self, "_version", None):
            super().save(data)
            return
        tmp, final = _atomic_target(Path(str(self._filepath)))
        self._atomic_path = PurePosixPath(tmp.as_posix())
        try:
            super().save(data)
            os.replace(tmp, final)
        finally:
            self._atomic_path = None
            tmp.unlink(missing_ok=True)
        self._invalidate_cache()
        # temporaries of earlier saves that were killed before their rename
        for stale in final.parent.glob(f".{final.stem}.{'?' * 8}{final.suffix}"):
            stale.unlink(missing_ok=True)


def _kedro_dataset(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(f"kedro_datasets.{module}"), name)


class AtomicParquetDataset(_AtomicSave, _kedro_dataset("pandas", "ParquetDataset")):
    """``pandas.ParquetDataset`` (same arguments) whose save is atomic on a local filesystem.
    ``partition_cols`` (a folder) is not supported atomically: use the plain dataset for that."""

    def save(self, data: Any) -> None:
        if self._save_args.get("partition_cols"):
            raise DatasetError("AtomicParquetDataset writes one file; partition_cols is not "
                               "supported: use pandas.ParquetDataset")
        super().save(data)


class AtomicCSVDataset(_AtomicSave, _kedro_dataset("pandas", "CSVDataset")):
    """``pandas.CSVDataset`` (same arguments) whose save is atomic on a local filesystem."""


class AtomicJSONDataset(_AtomicSave, _kedro_dataset("json", "JSONDataset")):
    """``json.JSONDataset`` (same arguments) whose save is atomic on a local filesystem."""


class AtomicTextDataset(_AtomicSave, _kedro_dataset("text", "TextDataset")):
    """``text.TextDataset`` (same arguments) whose save is atomic on a local filesystem."""


class AtomicImageDataset(_AtomicSave, _kedro_dataset("pillow", "ImageDataset")):
    """``pillow.ImageDataset`` (same arguments) whose save is atomic on a local filesystem."""


class AtomicMatplotlibDataset(_AtomicSave, _kedro_dataset("matplotlib", "MatplotlibDataset")):
    """``matplotlib.MatplotlibDataset`` (same arguments) saving one figure atomically. A list or
    dict of figures (a folder of files) is refused: give each figure its own entry."""

    def save(self, data: Any) -> None:
        if isinstance(data, list | dict):
            raise DatasetError("AtomicMatplotlibDataset saves one figure per file; got a "
                               f"{type(data).__name__} of figures")
        super().save(data)


# --- folders swapped in whole ------------------------------------------------------------------


def _remove(path: Path) -> None:
    import shutil

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


class SwappedFolderDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A folder of partitions (``{name}{filename_suffix}`` files) saved and replaced in whole.

    ``save({name: data})`` writes every partition with ``dataset`` into a new hidden sibling
    folder ``.{folder}.<random>``, then atomically points ``path`` (a symbolic link) at it and
    only then deletes the previous folder: a run killed at any moment leaves the old set of
    partitions or the new one, complete. A plain folder at ``path`` (the older layout) is moved
    aside, not deleted, before the first swap. ``load()`` gives ``{name: loader}`` (call the
    loader for the data), like ``partitions.PartitionedDataset``; hidden files (temporary files
    of an interrupted write) are never partitions. POSIX filesystems only (symbolic links).
    """

    def __init__(self, path: str, dataset: str | dict[str, Any], filename_suffix: str = "",
                 metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self._dataset_config = {"type": dataset} if isinstance(dataset, str) else dict(dataset)
        self._suffix = filename_suffix
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "dataset": self._dataset_config.get("type"),
                "filename_suffix": self._suffix}

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _partition(self, folder: Path, name: str) -> AbstractDataset:
        return AbstractDataset.from_config(
            name, {**self._dataset_config, "filepath": str(folder / f"{name}{self._suffix}")})

    def _names(self, folder: Path) -> list[str]:
        return sorted(p.name[: len(p.name) - len(self._suffix)] for p in folder.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.name.endswith(self._suffix))

    def _load_from(self, folder: Path) -> dict[str, Any]:
        """Loaders bound to one generation (the link's target), so a swap by another run
        between ``load()`` and a loader's call never mixes two generations."""
        return {name: self._partition(folder, name).load for name in self._names(folder)}

    def load(self) -> dict[str, Any]:
        if not self._path.is_dir():
            raise DatasetError(f"Nothing at '{self._path}': run the pipeline that writes it first.")
        return self._load_from(self._path.resolve())

    def _write_extra(self, folder: Path, data: Any) -> None:
        """Hook for subclasses: more files to write into the new folder before the swap."""

    def save(self, data: dict[str, Any]) -> None:
        import tempfile

        parent = self._path.parent
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{self._path.name}.", dir=parent))
        try:
            os.chmod(folder, 0o755)
            for name, value in data.items():
                if not name or name.startswith(".") or "/" in name or "\\" in name:
                    raise DatasetError(f"Bad partition name {name!r}")
                self._partition(folder, name).save(value() if callable(value) else value)
            self._write_extra(folder, data)
            self._swap_in(folder)
        except BaseException:
            _remove(folder)
            raise

    def _swap_in(self, folder: Path) -> None:
        import tempfile

        parent, path = self._path.parent, self._path
        previous = (parent / os.readlink(path)) if path.is_symlink() else None
        if path.exists() and not path.is_symlink():  # older layout: a plain folder; move aside
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.legacy-", dir=parent))
            os.replace(path, aside / path.name)
            previous = aside
        link = parent / f".{path.name}.link-{folder.name}"
        _remove(link)
        os.symlink(folder.name, link)
        os.replace(link, path)  # the one atomic step
        if previous is not None and previous.resolve() != folder.resolve():
            _remove(previous)
        for stale in parent.glob(f".{path.name}.*"):  # leftovers of interrupted runs
            if stale.resolve() != folder.resolve():
                _remove(stale)


class FaceCacheDataset(SwappedFolderDataset):
    """The decoded-image cache: one uint8 ``.npy`` (N x S x S x 3) per working size (``64px``...)
    plus ``identity.json`` (the ingestion id, row count and sizes), swapped in whole.

    Loads as a :class:`age_gender.lineage.FaceCache` (``{"64px": loader, ...}`` with ``identity``;
    ``identity`` is None for a cache written before identities were recorded). Saves a
    ``FaceCache`` (from ``lineage.stamp_cache``); a mapping without identity is refused.
    """

    def __init__(self, path: str, mmap_mode: str | None = "r",
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(path, {"type": "age_gender.datasets.NpyDataset", "mmap_mode": mmap_mode},
                         ".npy", metadata)

    def load(self) -> Any:
        import json

        from age_gender.lineage import IDENTITY_FILE, FaceCache

        if not self._path.is_dir():
            raise DatasetError(f"No image cache at '{self._path}': run "
                               f"`kedro run --pipeline ingestion` first.")
        folder = self._path.resolve()
        identity_file = folder / IDENTITY_FILE
        identity = json.loads(identity_file.read_text()) if identity_file.is_file() else None
        return FaceCache(self._load_from(folder), identity)

    def _write_extra(self, folder: Path, data: Any) -> None:
        import json

        from age_gender.lineage import IDENTITY_FILE

        identity = getattr(data, "identity", None)
        if identity is None:
            raise DatasetError("FaceCacheDataset saves a FaceCache with its ingestion identity "
                               "(age_gender.lineage.stamp_cache), not a plain mapping.")
        (folder / IDENTITY_FILE).write_text(json.dumps(identity, indent=2))
