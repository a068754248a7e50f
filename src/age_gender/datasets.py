"""Kedro datasets the project needs beyond kedro-datasets.

* ``FaceSourceDataset``: UTKFace as published (``.tar.gz``/``.tar``/``.zip`` read in memory, or a
  folder), refusing archive members that try to leave the archive, unreadable members, corrupt
  archives and inputs past its size caps.
* ``NpyDataset``: one NumPy array, written atomically, optionally memory-mapped on load.
* ``KerasModelDataset``: a ``.keras`` model, written atomically so a killed run never leaves a
  half-written model behind.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
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

#: Names a face image can have (lower case). Any other member is listed, never read.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", ".jfif")
_CHUNK = 1 << 20


@dataclass
class FaceSource:
    """Files of a face dataset, read into memory.

    ``members`` are ``(name, bytes)`` pairs, names always with ``/`` separators; ``refused`` are
    ``(name, reason)`` pairs for members that were never (or could not be) read, with a detail
    line per name in ``details``; ``help`` says which setting points at this input.
    """

    origin: str
    members: list[tuple[str, bytes]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    help: str = DATA_HELP

    @property
    def files_seen(self) -> int:
        return len(self.members) + len(self.refused)

    def refuse(self, name: str, reason: str, detail: str = "") -> None:
        self.refused.append((name, reason))
        if detail:
            self.details[name] = detail


@dataclass
class _Limits:
    """Caps on what one source may make us read: bytes per member, bytes in all, member count."""

    member_bytes: int
    total_bytes: int
    members: int
    origin: str
    read: int = 0
    seen: int = 0

    def count(self, members: int = 1) -> None:
        self.seen += members
        if self.seen > self.members:
            raise DatasetError(
                f"'{self.origin}' has more than {self.members} members; refused without reading "
                f"further. If it really is a face dataset, raise `max_members` of its catalog entry.")

    def take(self, size: int) -> None:
        self.read += size
        if self.read > self.total_bytes:
            raise DatasetError(
                f"'{self.origin}' holds more than {self.total_bytes} bytes of images; refused "
                f"without reading further. If it really is a face dataset, raise "
                f"`max_total_bytes` of its catalog entry.")


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


def _name_reason(name: str) -> str | None:
    """Why a member is not read at all (unsafe path, or a name no image has), or None."""
    return _unsafe_reason(name) or (
        None if name.lower().endswith(IMAGE_SUFFIXES) else "not_an_image_name")


def _normalise(name: str) -> str:
    """Member names with ``/`` separators (zips made on Windows store ``UTKFace\\<name>``)."""
    return name.replace("\\", "/")


def _read_stream(handle: Any, size: int) -> bytes:
    """Read a member in chunks, so a codec or CRC error surfaces on the member it belongs to."""
    data = bytearray()
    while chunk := handle.read(_CHUNK):
        data += chunk
        if len(data) > size:  # more bytes than the header claimed
            raise OSError(f"member holds more than the {size} bytes its header says")
    return bytes(data)


_CORRUPT = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


def _read_tar(path: Path, limits: _Limits, mode: str) -> FaceSource:
    source = FaceSource(origin=str(path))
    with tarfile.open(path, mode=mode) as archive:
        for member in archive:
            if member.isdir():
                continue
            limits.count()
            name = _normalise(member.name)
            reason = _name_reason(member.name)
            if reason is None and not member.isfile():
                reason = "link_or_special_member"
            if reason is None and member.size > limits.member_bytes:
                reason = "too_large"
            if reason:
                source.refuse(name, reason)
                continue
            limits.take(member.size)
            handle = archive.extractfile(member)
            source.members.append((name, _read_stream(handle, member.size) if handle else b""))
        # Read the compressed stream to its very end: only there are gzip's CRC-32 and length
        # (and bz2/xz's checks) verified, so flipped bytes anywhere are caught.
        if archive.fileobj is not None:
            while archive.fileobj.read(_CHUNK):
                pass
    return source


def _read_zip(path: Path, limits: _Limits) -> FaceSource:
    source = FaceSource(origin=str(path))
    with zipfile.ZipFile(path) as archive:
        # The central directory lists every member and size up front: check the caps before
        # reading a single member (a zip member is never read past its declared size).
        files = [info for info in archive.infolist() if not info.is_dir()]
        probe = _Limits(limits.member_bytes, limits.total_bytes, limits.members, limits.origin)
        probe.count(len(files))
        probe.take(sum(i.file_size for i in files if i.file_size <= limits.member_bytes
                       and _name_reason(i.filename) is None))
        for info in files:
            limits.count()
            name = _normalise(info.filename)
            mode = info.external_attr >> 16
            reason = _name_reason(info.filename)
            if reason is None and stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # links, devices
                reason = "link_or_special_member"
            if reason is None and info.file_size > limits.member_bytes:
                reason = "too_large"
            if reason:
                source.refuse(name, reason)
                continue
            limits.take(info.file_size)
            try:
                with archive.open(info) as handle:
                    data = _read_stream(handle, info.file_size)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, zlib.error,
                    lzma.LZMAError, EOFError, ValueError) as error:
                # bad CRC, encrypted, or a compression method Python cannot read (Deflate64)
                source.refuse(name, "unreadable_member", f"{type(error).__name__}: {error}")
                continue
            source.members.append((name, data))
    return source


def _read_folder(path: Path, limits: _Limits) -> FaceSource:
    source = FaceSource(origin=str(path))
    for entry in sorted(path.rglob("*")):
        name = entry.relative_to(path).as_posix()
        info = entry.lstat()
        if stat.S_ISDIR(info.st_mode):
            continue
        limits.count()
        reason = _name_reason(name)
        if reason is None and not stat.S_ISREG(info.st_mode):
            # links, FIFOs, sockets, devices: never opened (a FIFO would block the run)
            reason = "link_or_special_member"
        if reason is None and info.st_size > limits.member_bytes:
            reason = "too_large"
        if reason:
            source.refuse(name, reason)
            continue
        limits.take(info.st_size)
        try:
            source.members.append((name, entry.read_bytes()))
        except OSError as error:
            source.refuse(name, "unreadable_member", f"{type(error).__name__}: {error}")
    return source


def _archive_kind(path: Path) -> str | None:
    """The archive format from the file's leading magic bytes (never from its extension)."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "r:gz"
    if head.startswith(b"BZh"):
        return "r:bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "r:xz"
    if head[257:262] == b"ustar" or (len(head) == 512 and _old_tar_header(head)):
        return "r:"
    return None


def _old_tar_header(block: bytes) -> bool:
    """A pre-POSIX tar header: its checksum field matches the block."""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FaceSourceDataset(AbstractDataset[None, FaceSource]):
    """Read-only dataset of face image files from a ``.tar(.gz|.bz2|.xz)``, a ``.zip`` or a folder.

    The format is told by the file's leading bytes, not its name. Members are read in memory;
    nothing is extracted to disk. Refused and listed in ``refused`` (never read): members whose
    path is absolute or climbs out with ``..`` (``unsafe_path``), links, devices and FIFOs
    (``link_or_special_member``), names no image has (``not_an_image_name``), members over
    ``max_member_bytes`` (``too_large``); zip members that cannot be read (bad CRC, encrypted,
    unsupported compression) are ``unreadable_member``. Member names always use ``/``.

    Args:
        filepath: archive or folder; ``~`` is expanded.
        max_member_bytes: largest member read (bytes).
        max_total_bytes: most bytes read from all members together; beyond it the load fails.
        max_members: most members (files, links, ...) listed; beyond it the load fails.
        sha256: when set, the archive's SHA-256 (hex) must match or the load fails.
        help: the sentence that tells a user how to point this entry at their data.

    Raises:
        DatasetError: one line naming the path and the fix, when the path is missing or empty,
            the archive is corrupt (a bad gzip CRC included) or not an archive, the checksum
            differs, or a cap is exceeded.
    """

    def __init__(self, filepath: str, max_member_bytes: int = 20_000_000,
                 max_total_bytes: int = 1_000_000_000, max_members: int = 200_000,
                 sha256: str | None = None, help: str = DATA_HELP,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(os.path.expanduser(str(filepath)))
        self._max_member_bytes = int(max_member_bytes)
        self._max_total_bytes = int(max_total_bytes)
        self._max_members = int(max_members)
        self._sha256 = sha256.strip().lower() if sha256 else None
        self._help = help
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "sha256": self._sha256}

    @property
    def help(self) -> str:
        """The sentence telling a user how to point this entry at their data."""
        return self._help

    def _exists(self) -> bool:
        return self._filepath.exists()

    def load(self) -> FaceSource:
        path = self._filepath
        where = path.resolve()
        if not path.exists():
            raise DatasetError(f"No face data at '{where}'. {self._help}")
        limits = _Limits(self._max_member_bytes, self._max_total_bytes, self._max_members, str(where))
        if path.is_dir():
            source = _read_folder(path, limits)
        else:
            source = self._read_archive(path, where, limits)
        source.help = self._help
        if source.files_seen == 0:
            raise DatasetError(f"No files at all in '{where}' (a mistyped path?). {self._help}")
        return source

    def _read_archive(self, path: Path, where: Path, limits: _Limits) -> FaceSource:
        if self._sha256:
            actual = _sha256(path)
            if actual != self._sha256:
                raise DatasetError(
                    f"'{where}': archive is corrupt or not the expected one: its sha256 is "
                    f"{actual}, the catalog expects {self._sha256}. Download it again, or fix "
                    f"`sha256` in the catalog entry.")
        kind = _archive_kind(path)
        if kind is None:
            raise DatasetError(f"'{where}' is neither a readable .tar/.tar.gz/.zip archive nor "
                               f"a folder (unknown leading bytes). {self._help}")
        try:
            if kind == "zip":
                return _read_zip(path, limits)
            return _read_tar(path, limits, kind)
        except DatasetError:
            raise
        except (zipfile.BadZipFile, *_CORRUPT) as error:
            detail = " ".join(str(error).split()) or type(error).__name__
            raise DatasetError(f"'{where}': archive is corrupt ({type(error).__name__}: "
                               f"{detail}); nothing was ingested. Download it again.") from error

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
