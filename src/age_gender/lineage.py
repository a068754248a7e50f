"""Which ingestion an artefact came from, and refusing to mix artefacts of different ingestions.

The image cache indexes faces by position: row *i* of every cache array is row *i* of the
manifest, and the split table points into the cache with ``cache_index``. A split table made from
one ingestion and read against the cache of another would silently give every face its
neighbour's labels. So:

* the ingestion pipeline stamps the cache with an :func:`ingestion_id` (a sha256 over the
  manifest's file names, content hashes, labels and row order, and the cached image sizes),
  stored as ``identity.json`` inside the cache folder, swapped in with the arrays;
* the split pipeline checks that the manifest it reads is the one the cache was made from, and
  stamps every row of ``face_splits`` with that id (column ``ingestion_id``);
* every consumer of cache + splits calls :func:`check_same_ingestion` (through
  ``training.select_split``) and is refused with one line naming the pipeline to rerun.

:class:`ActionableError` is the project's error that knows its fix: the run hooks print
``ERROR: <cause>. Fix: <fix>`` as the last line of a failed run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

ID_COLUMN = "ingestion_id"
SPLIT_COLUMN = "split_id"  # the ingestion id and the split settings the table was drawn with
IDENTITY_FILE = "identity.json"
SHORT = 12  # hex digits shown in messages


class ActionableError(ValueError):
    """An error the user can fix: ``cause`` (what is wrong) and ``fix`` (what to do).

    ``str(error)`` is the single line ``"<cause>: <fix>"``. Subclasses ``ValueError`` so callers
    that catch bad values keep working.
    """

    def __init__(self, cause: str, fix: str) -> None:
        self.cause = cause.rstrip(". ")
        self.fix = fix.rstrip(". ")
        super().__init__(f"{self.cause}: {self.fix}")


class LineageError(ActionableError):
    """Artefacts of different ingestions (or without an identity) were given together."""


def short(identity: str | None) -> str:
    return (identity or "none")[:SHORT]


def ingestion_id(face_manifest: pd.DataFrame, image_sizes: list[int] | tuple[int, ...]) -> str:
    """The identity of one ingestion: sha256 (64 hex digits) over, row by row and in order, the
    manifest's ``file_name``, ``sha256`` (content hash), ``age``, ``gender`` and ``race`` (plus
    ``given_split`` and ``age_low``/``age_high`` when the dataset gives a split or age ranges,
    ``face_crop`` when ingestion cut the faces out of whole photos),
    then the sorted cached ``image_sizes`` (px).

    Any change of the kept files, their bytes, their labels, their order, or of the cached sizes
    gives another id. Raises ``KeyError`` when a column is missing.
    """
    digest = hashlib.sha256()
    columns = [face_manifest[c].astype(str).to_numpy() for c in ("file_name", "sha256")]
    labels = [face_manifest[c].to_numpy(np.int64).astype(str) for c in ("age", "gender", "race")]
    # Labels other datasets add (age ranges, a predefined split) count only where they say more
    # than the columns above, so a UTKFace-named ingestion keeps the id it always had.
    if "age_low" in face_manifest and "age_high" in face_manifest and (
            (face_manifest["age_low"] != face_manifest["age"]).any()
            or (face_manifest["age_high"] != face_manifest["age"]).any()):
        labels += [face_manifest[c].to_numpy(np.int64).astype(str) for c in ("age_low", "age_high")]
    if "given_split" in face_manifest and (face_manifest["given_split"].astype(str) != "").any():
        columns.append(face_manifest["given_split"].astype(str).to_numpy())
    if "face_crop" in face_manifest:  # whole photos cut by ingestion.detect_faces: where each face was cut
        columns.append(face_manifest["face_crop"].astype(str).to_numpy())
    for row in zip(*columns, *labels):
        digest.update(("\t".join(row) + "\n").encode("utf-8"))
    digest.update(("sizes:" + ",".join(str(int(s)) for s in sorted(image_sizes))).encode())
    return digest.hexdigest()


class FaceCache(Mapping):
    """The image cache: partition name (``"64px"``) -> array or zero-argument loader, plus the
    ``identity`` of the ingestion that wrote it (``None`` for a cache written before identities
    were recorded). Behaves like the dict a ``PartitionedDataset`` loads."""

    def __init__(self, partitions: Mapping[str, Any], identity: Mapping[str, Any] | None) -> None:
        self._partitions = dict(partitions)
        self.identity = dict(identity) if identity is not None else None

    @property
    def ingestion_id(self) -> str | None:
        return None if self.identity is None else self.identity.get(ID_COLUMN)

    @property
    def image_sizes(self) -> list[int]:
        return sorted(int(k.removesuffix("px")) for k in self._partitions)

    def __getitem__(self, key: str) -> Any:
        return self._partitions[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._partitions)

    def __len__(self) -> int:
        return len(self._partitions)


def stamp_cache(face_manifest: pd.DataFrame, decoded_cache: Mapping[str, np.ndarray]) -> FaceCache:
    """Ingestion node: the kept images per size (``{"64px": uint8 N x 64 x 64 x 3, ...}``, row *i* =
    manifest row *i*) with the identity of this ingestion. Raises ``LineageError`` when an array's
    length differs from the manifest's."""
    for key, array in decoded_cache.items():
        if len(array) != len(face_manifest):
            raise LineageError(f"the {key} cache has {len(array)} rows but face_manifest has "
                               f"{len(face_manifest)}", "this is a bug in ingestion; rerun "
                               "`kedro run --pipeline ingestion` and report it if it persists")
    sizes = sorted(int(k.removesuffix("px")) for k in decoded_cache)
    identity = {ID_COLUMN: ingestion_id(face_manifest, sizes), "rows": len(face_manifest),
                "image_sizes": sizes}
    return FaceCache(decoded_cache, identity)


def check_manifest_matches_cache(face_manifest: pd.DataFrame, face_cache: Mapping[str, Any]) -> str:
    """The ingestion id shared by ``face_manifest`` and ``face_cache``; raises ``LineageError``
    when they come from different ingestions (e.g. a run killed between writing the two) or the
    cache has no identity."""
    cache_id = getattr(face_cache, "ingestion_id", None)
    if cache_id is None:
        raise LineageError("face_cache carries no ingestion identity (written by an older version "
                           "or by hand)", "rerun `kedro run --pipeline ingestion`")
    sizes = face_cache.image_sizes if isinstance(face_cache, FaceCache) else \
        sorted(int(k.removesuffix("px")) for k in face_cache)
    manifest_id = ingestion_id(face_manifest, sizes)
    if manifest_id != cache_id:
        raise LineageError(f"face_manifest and face_cache come from different ingestions (id "
                           f"{short(manifest_id)} vs {short(cache_id)}; was ingestion interrupted?)",
                           "rerun `kedro run --pipeline ingestion`")
    return cache_id


def split_id(identity: str, split_params: Mapping[str, Any]) -> str:
    """The identity of one split table: sha256 (64 hex digits) over its ingestion id and the
    ``split`` parameters it was drawn with (seed, sizes, fractions, age bands): the same id means
    the same rows in the same splits."""
    import json

    settings = json.dumps(dict(split_params), sort_keys=True, default=str)
    return hashlib.sha256(f"{identity}\n{settings}".encode()).hexdigest()


def stamp_splits(face_splits: pd.DataFrame, identity: str, split_params: Mapping[str, Any]) -> pd.DataFrame:
    """``face_splits`` with the columns ``ingestion_id`` and ``split_id`` (the same string on
    every row)."""
    n = len(face_splits)
    return face_splits.assign(**{ID_COLUMN: pd.Categorical([identity] * n),
                                 SPLIT_COLUMN: pd.Categorical([split_id(identity, split_params)] * n)})


def splits_split_id(face_splits: pd.DataFrame) -> str:
    """The ``split_id`` of a split table; training infos record it so that evaluation can refuse
    a model trained on other rows. Raises ``LineageError`` when the table has none or several."""
    return _table_id(face_splits, SPLIT_COLUMN, "split id", "split tables")


def check_split_settings(face_splits: pd.DataFrame, split_params: Mapping[str, Any]) -> None:
    """Refuse a split table drawn with other ``split`` parameters than the run's (a changed seed,
    test size, subset size, e.g. ``--env full`` without rerunning ``split``): training on it would
    silently ignore the settings. Raises ``LineageError``."""
    stored = splits_split_id(face_splits)
    wanted = split_id(splits_ingestion_id(face_splits), split_params)
    if stored != wanted:
        raise LineageError(f"face_splits was drawn with other split settings than this run's `split` "
                           f"parameters (split id {short(stored)} vs {short(wanted)})",
                           "rerun `kedro run --pipeline split` with this run's --env and --params")


def check_trained_on(face_splits: pd.DataFrame, model: str, info: Mapping[str, Any] | None) -> None:
    """Refuse to judge ``model`` (its ``{model}_training_info``) on a split table other than the
    one it was trained on: its test rows could be faces it trained on. Raises ``LineageError``."""
    if info is None:
        return  # not trained yet: evaluation skips it
    current = splits_split_id(face_splits)
    trained = info.get(SPLIT_COLUMN)
    if trained != current:
        what = ("records no split id (trained by an older version)" if trained is None else
                f"was trained on another split table (split id {short(trained)} vs {short(current)} now)")
        raise LineageError(f"{model}_model {what}; its test rows may include faces it trained on",
                           f"rerun `kedro run --pipeline {info.get('pipeline') or model}` (or restore the split "
                           "it was trained on)")


def _table_id(face_splits: pd.DataFrame, column: str, what: str, several: str) -> str:
    """The one value of ``column`` on every row of a split table; ``LineageError`` (rerun
    ``split``) when the table has no such column or mixes several values."""
    if column not in face_splits.columns:
        raise LineageError(f"face_splits carries no {what} (made by an older version)",
                           "rerun `kedro run --pipeline split`")
    values = pd.unique(face_splits[column].astype(str))
    if len(values) != 1:
        raise LineageError(f"face_splits mixes {len(values)} {several}", "rerun `kedro run --pipeline split`")
    return str(values[0])


def splits_ingestion_id(face_splits: pd.DataFrame) -> str:
    """The ingestion id a split table was made from (the data key to stamp derived artefacts
    with). Raises ``LineageError`` when the table has none or several."""
    return _table_id(face_splits, ID_COLUMN, "ingestion id", "ingestions")


def check_same_ingestion(face_cache: Mapping[str, Any], face_splits: pd.DataFrame) -> str | None:
    """Refuse a split table made from another ingestion than the image cache.

    ``face_cache`` is a :class:`FaceCache` (as the catalog loads it) or a plain mapping of arrays
    built in memory (no identity: nothing to check, returns ``None``). Returns the shared ingestion
    id. Raises ``LineageError`` (one line naming the pipeline to rerun) when the cache has no
    identity, the splits carry none, or the two differ.
    """
    if not isinstance(face_cache, FaceCache):
        return None
    cache_id = face_cache.ingestion_id
    if cache_id is None:
        raise LineageError("face_cache carries no ingestion identity (written by an older version)",
                           "rerun `kedro run --pipeline ingestion` then `kedro run --pipeline split`")
    splits_id = splits_ingestion_id(face_splits)
    if splits_id != cache_id:
        raise LineageError(f"face_splits was made from another ingestion (id {short(splits_id)} vs "
                           f"{short(cache_id)} of face_cache)", "rerun `kedro run --pipeline split`")
    return cache_id
