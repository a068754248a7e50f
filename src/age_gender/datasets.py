"""Kedro datasets the project needs beyond kedro-datasets.

* ``FaceSourceDataset``: a labelled face dataset (``.tar.gz``/``.tar``/``.zip`` read in memory, or a
  folder), refusing archive members that try to leave the archive, unreadable members, corrupt
  archives and inputs past its size caps. Labels from UTKFace file names, a label table or a
  folder layout, optionally with predefined split lists (``age_gender.labels``).
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
from glob import glob
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError

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
    #: member -> ``labels.Label`` or ``faces.LabelRefusal``, from the entry's ``labels`` /
    #: ``split_lists``; None: labels come from UTKFace file names (see :meth:`label`).
    labels: dict[str, Any] | None = None
    #: how the labels were found (form, table, rows without image, split lists ...), for the report
    label_report: dict[str, Any] = field(default_factory=dict)

    def label(self, member: str) -> Any:
        """The ``labels.Label`` of a member, or the ``faces.LabelRefusal`` saying why it has none."""
        from age_gender.labels import label_names

        if self.labels is not None and member in self.labels:
            return self.labels[member]
        return label_names([member]).labels[member]

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


def _member_reason(name: str, regular: bool, size: int, limits: _Limits) -> str | None:
    """Why a member is refused before it is read: its name, not a regular file (links, FIFOs,
    devices are never opened), or over the per-member cap; None when it is read."""
    reason = _name_reason(name)
    if reason is None and not regular:
        reason = "link_or_special_member"
    if reason is None and size > limits.member_bytes:
        reason = "too_large"
    return reason


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
            reason = _member_reason(member.name, member.isfile(), member.size, limits)
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
            reason = _member_reason(info.filename, stat.S_IFMT(mode) in (0, stat.S_IFREG),
                                    info.file_size, limits)
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


def _read_folder(path: Path, limits: _Limits, only: str | None = None) -> FaceSource:
    source = FaceSource(origin=str(path if only is None else path / only))
    for entry in [path / only] if only is not None else sorted(path.rglob("*")):
        name = entry.relative_to(path).as_posix()
        info = entry.lstat()
        if stat.S_ISDIR(info.st_mode):
            continue
        limits.count()
        # links, FIFOs, sockets, devices are never opened (a FIFO would block the run)
        reason = _member_reason(name, stat.S_ISREG(info.st_mode), info.st_size, limits)
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


def _special_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words ("a FIFO" ...)."""
    mode = path.stat().st_mode
    for test, words in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "not a regular file"


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
    """Read-only dataset of face image files from a ``.tar(.gz|.bz2|.xz)``, a ``.zip``, a folder or
    one image file.

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
        labels: where the labels come from (``age_gender.labels``): omitted = UTKFace file names;
            ``{table: <pandas dataset entry>, columns: {file, age, gender, race, split}, values:
            {field: {dataset value: label}}}``; or ``{layout: "{age}/{gender}/{name}", values: ...}``.
        split_lists: predefined splits, ``{train: <dataset entry>, test: <dataset entry>}`` (and
            optionally ``val``), each a table whose first column (or ``column``) lists files.

    Raises:
        DatasetError: one line naming the path and the fix, when the path is missing or empty,
            the archive is corrupt (a bad gzip CRC included) or not an archive, the checksum
            differs, a cap is exceeded, or a label table or split list is malformed (a missing
            column, a file listed twice, a path leaving the image folder), checked before any
            image is read.
    """

    def __init__(self, filepath: str, max_member_bytes: int = 20_000_000,
                 max_total_bytes: int = 1_000_000_000, max_members: int = 200_000,
                 sha256: str | None = None, help: str = DATA_HELP,
                 labels: dict[str, Any] | None = None, split_lists: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        from age_gender.labels import LabelTableError, check_label_config, check_split_lists_config

        self._labels = labels
        self._split_lists = split_lists
        try:  # when the catalog is read, before any run starts
            check_label_config(labels, f"'{filepath}'")
            check_split_lists_config(split_lists, f"'{filepath}'")
        except LabelTableError as error:
            raise DatasetError(str(error)) from None
        self._filepath = Path(os.path.expanduser(str(filepath)))
        self._max_member_bytes = int(max_member_bytes)
        self._max_total_bytes = int(max_total_bytes)
        self._max_members = int(max_members)
        self._sha256 = sha256.strip().lower() if sha256 else None
        self._help = help
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "sha256": self._sha256,
                "labels": self._labels, "split_lists": self._split_lists}

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
        from age_gender.labels import LabelSpec, LabelTableError

        try:  # tables are read and checked before a single image is
            spec = LabelSpec(self._labels, self._split_lists, f"'{where}'")
        except LabelTableError as error:
            raise DatasetError(str(error)) from None
        limits = _Limits(self._max_member_bytes, self._max_total_bytes, self._max_members, str(where))
        if not (path.is_dir() or path.is_file()):  # a FIFO or device: opening it could block forever
            raise DatasetError(f"'{where}' is {_special_kind(path)}, not a file or folder of faces: "
                               f"nothing is read from it. {self._help}")
        if path.is_dir():
            source = _read_folder(path, limits)
        elif _name_reason(path.name) is None and path.is_file() and _archive_kind(path) is None:
            source = _read_folder(path.parent, limits, only=path.name)  # one image: `predict photo.jpg`
        else:
            source = self._read_archive(path, where, limits)
        source.help = self._help
        if source.files_seen == 0:
            raise DatasetError(f"No files at all in '{where}' (a mistyped path?). {self._help}")
        try:
            labelled = spec.apply([name for name, _ in source.members])
        except LabelTableError as error:
            raise DatasetError(str(error)) from None
        source.labels, source.label_report = labelled.labels, labelled.report
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
                               f"a folder (unknown leading bytes), nor an image by its name "
                               f"({', '.join(IMAGE_SUFFIXES)}). {self._help}")
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


class _LocalVersioned(AbstractVersionedDataset):
    """A local file that may be versioned (``versioned: true`` in the catalog: each run saves
    ``<filepath>/<version>/<name>``, a load reads the newest or the ``--load-versions`` one).
    Unlike Kedro's default, "nothing saved yet" is not an error here: ``_read_path`` is None."""

    def __init__(self, filepath: str, version: Version | None = None) -> None:
        super().__init__(PurePosixPath(Path(filepath).as_posix()), version,
                         exists_function=lambda path: Path(path).exists(),
                         glob_function=lambda pattern: sorted(glob(pattern)))

    def resolve_load_version(self) -> str | None:
        try:
            return super().resolve_load_version()
        except VersionNotFoundError:
            return None  # no version saved yet

    def _read_path(self) -> Path | None:
        """The file a load reads, or ``None`` when nothing was saved yet. Raises DatasetError
        when the entry is versioned but an unversioned file from before sits at its path."""
        plain = Path(str(self._filepath))
        if self._version is None:
            return plain if plain.exists() else None
        if plain.is_file():
            cause, fix = unversioned_file_message(plain)
            raise DatasetError(f"{cause}: {fix}")
        version = self.resolve_load_version()
        return None if version is None else Path(str(self._get_versioned_path(version)))

    def _write_path(self) -> Path:
        if self._version is None:
            return Path(str(self._filepath))
        return Path(str(self._get_save_path()))  # refuses an existing version

    def _exists(self) -> bool:
        try:
            return self._read_path() is not None
        except DatasetError:
            return True  # something is there (the unversioned file): the load says what to do


def unversioned_file_message(path: Path) -> tuple[str, str]:
    """The cause and the fix for a file saved before its catalog entry was versioned."""
    import time

    version = time.strftime("%Y-%m-%dT%H.%M.%S.000Z", time.gmtime(path.stat().st_mtime))
    return (f"'{path}' was saved before its catalog entry was versioned",
            f"move it into a version folder (`mv {path} {path}.old && mkdir -p {path}/{version} && "
            f"mv {path}.old {path}/{version}/{path.name}`) or remove it")


def newest_version(path: Path) -> Path:
    """``path``, or when it is a folder of model versions (``<name>/<version>/<name>``, as the
    versioned model entries save) the file its newest version holds, as a load without
    ``--load-versions`` reads it; ``path`` unchanged when the folder holds no version."""
    if not path.is_dir():
        return path
    return KerasModelDataset(str(path), version=Version(None, None))._read_path() or path


def damaged_model(path: Path) -> str | None:
    """Why the file at ``path`` cannot be a ``.keras`` model (one is a zip archive: a file cut
    short or of another kind is not), or None. Keras itself reports such a file as "File not found"."""
    if zipfile.is_zipfile(path):
        return None
    return f"'{path}' is not a readable .keras model (damaged, e.g. cut short, or not a Keras 3 file)"


class KerasModelDataset(_LocalVersioned):
    """A Keras 3 model in the native ``.keras`` format, saved atomically (also when versioned).

    Loads with ``keras.models.load_model``; the project's custom layers are registered
    serialisable, so no ``custom_objects`` are needed once ``age_gender.models`` is imported.
    ``missing_ok``: load ``None`` when no model was saved yet.
    """

    def __init__(self, filepath: str, compile: bool = False, missing_ok: bool = False,
                 version: Version | None = None, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath, version)
        self._compile = compile
        self._missing_ok = missing_ok
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "compile": self._compile, "version": self._version}

    def load(self) -> Any:
        import keras

        import age_gender.models  # noqa: F401  (registers the custom layers)

        path = self._read_path()
        if path is None:
            if self._missing_ok:
                return None  # an optional model that has not been trained yet
            raise DatasetError(f"No trained model at '{Path(str(self._filepath)).resolve()}': train it first "
                               f"(kedro run --pipeline scratch / transfer).")
        try:
            return keras.models.load_model(path, compile=self._compile)
        except Exception as error:  # a truncated or foreign file: Keras says "File not found" or worse
            damaged = damaged_model(path)
            if damaged:
                raise DatasetError(f"{damaged}: retrain it, or load an older version with --load-versions.") from error
            raise

    def save(self, model: Any) -> None:
        tmp, final = _atomic_target(self._write_path())
        try:
            model.save(tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


class OptionalJSONDataset(_LocalVersioned):
    """A JSON file that may not exist yet: loads ``None`` then (e.g. a search not run yet).
    Saved atomically (also when versioned)."""

    def __init__(self, filepath: str, version: Version | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath, version)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def load(self) -> Any:
        import json

        path = self._read_path()
        return None if path is None else json.loads(path.read_text())

    def save(self, data: Any) -> None:
        import json

        tmp, final = _atomic_target(self._write_path())
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
# the old file or the new one, never a broken one; a versioned entry writes its new version the
# same way, so a killed run leaves no half version for the next load to pick up. Remote
# filesystems (s3://, gs://...) keep the library's own save (object stores replace objects whole).


class _AtomicSave:
    """Mixin for a kedro-datasets file dataset: save to a temporary sibling, then rename."""

    _atomic_path: PurePosixPath | None = None

    def _get_save_path(self) -> PurePosixPath:
        if self._atomic_path is not None:
            return self._atomic_path
        return super()._get_save_path()

    def save(self, data: Any) -> None:
        if getattr(self, "_protocol", "file") != "file":
            super().save(data)
            return
        versioned = getattr(self, "_version", None) is not None
        # versioned (`versioned: true`): this run's new version folder; Kedro refuses an existing one
        final_path = Path(str(super()._get_save_path())) if versioned else Path(str(self._filepath))
        tmp, final = _atomic_target(final_path)
        self._atomic_path = PurePosixPath(tmp.as_posix())
        try:
            # the library's save without its versioned wrapper, which would look for the new
            # version before the rename below has made it visible
            save = super().save
            (getattr(save, "__wrapped__", None).__get__(self) if versioned else save)(data)
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


def written_by_a_pipeline(dataset: Any) -> bool:
    """True for a plain file or folder entry that has no meaning until a pipeline wrote it (and a
    model entry without ``missing_ok``, e.g. ``distilled_model``); the optional inputs (a model
    not trained yet, a search winner: they load None) and raw sources (their own errors) are False."""
    return isinstance(dataset, (_AtomicSave, SwappedFolderDataset)) or type(dataset).__module__.startswith(
        "kedro_datasets") or (isinstance(dataset, KerasModelDataset) and not dataset._missing_ok)


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

    def _write_item(self, folder: Path, name: str, value: Any) -> None:
        """Write one named item into the new folder (subclasses: other kinds of items)."""
        self._partition(folder, name).save(value() if callable(value) else value)

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
                self._write_item(folder, name, value)
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
