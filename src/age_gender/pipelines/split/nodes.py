"""Nodes of the split pipeline: a seeded, stratified assignment of every kept image to
``test``, ``train``, ``val1``, ``val2`` or ``unused``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from age_gender.lineage import ActionableError, check_manifest_matches_cache, stamp_splits

SPLITS = ("train", "val1", "val2", "test", "unused")


def _strata(frame: pd.DataFrame, band_edges: list[int]) -> pd.Series:
    bands = pd.cut(frame["age"], bins=band_edges, right=False, labels=False)
    if bands.isna().any():
        raise ValueError(f"split.age_band_edges {band_edges} do not cover ages "
                         f"{sorted(frame.loc[bands.isna(), 'age'].unique())}")
    return frame["gender"].astype(str) + "_" + bands.astype(int).astype(str)


def _stratified_order(strata: pd.Series, rng: np.random.Generator) -> np.ndarray:
    """Positions ordered so that every prefix holds each stratum in proportion to its size.

    Each row gets its spread-out rank ``(k + 0.5) / n`` inside its (shuffled) stratum; sorting by
    it interleaves strata evenly, so cutting the order anywhere gives a stratified sample.
    """
    noise = rng.random(len(strata))
    frame = pd.DataFrame({"stratum": strata.to_numpy(), "noise": noise})
    rank = frame.groupby("stratum")["noise"].rank(method="first") - 0.5
    spread = (rank / frame.groupby("stratum")["noise"].transform("size")).to_numpy()
    return np.lexsort((rng.random(len(strata)), spread))


def _count(value: int | float | None, total: int, name: str) -> int:
    if value is None or value == "all":
        return total
    if isinstance(value, float) and 0 < value < 1:
        return int(round(value * total))
    if isinstance(value, (int, float)) and value >= 0 and float(value).is_integer():
        if value > total:
            raise ValueError(f"split.{name}={value} but only {total} images are available")
        return int(value)
    raise ValueError(f"split.{name} must be a count, a fraction in (0, 1), or 'all'; got {value!r}")


def _refuse_empty(counts: dict[str, int], params: dict[str, Any]) -> None:
    """Every model pipeline needs train, val1, val2 and test: an empty one is refused here,
    before any training starts, naming the setting that emptied it."""
    for name in SPLITS[:4]:
        if counts[name] == 0:
            setting = (f"split.test_size={params['test_size']!r}" if name == "test" else
                       f"split.subset_size={params['subset_size']!r} with split.fractions="
                       f"{dict(params['fractions'])}")
            raise ActionableError(f"{setting} leaves the '{name}' split empty",
                                  "choose settings that give every split at least one image "
                                  f"(e.g. a larger {'split.test_size' if name == 'test' else 'split.subset_size'})")


def split_faces(face_manifest: pd.DataFrame, face_cache: Any,
                params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Assign splits. First a held-out ``test`` set is drawn from all kept images; the study's
    subset (e.g. 5,000) is drawn from the rest and cut 80/10/10 into train / val1 (early
    stopping) / val2 (model selection). Final models train on train+val1 and meet ``test`` once.

    The same manifest and parameters always give the same table; the splits never overlap. The
    table's ``ingestion_id`` column names the ingestion (manifest + ``face_cache``) it indexes.
    Raises ``LineageError`` when the manifest is not the one the cache was written with, and
    ``ActionableError`` when a split would be empty.
    """
    identity = check_manifest_matches_cache(face_manifest, face_cache)
    fractions = params["fractions"]
    if set(fractions) != {"train", "val1", "val2"} or any(v < 0 for v in fractions.values()) or \
            not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split.fractions needs train, val1 and val2 summing to 1; got {fractions}")
    manifest = face_manifest.sort_values("file_name", kind="stable")
    strata = _strata(manifest, list(params["age_band_edges"]))
    rng = np.random.default_rng(int(params["seed"]))
    split = np.full(len(manifest), "unused", dtype=object)

    n_test = _count(params["test_size"], len(manifest), "test_size")
    order = _stratified_order(strata, rng)
    split[order[:n_test]] = "test"

    rest = np.flatnonzero(split == "unused")
    n_subset = _count(params["subset_size"], len(rest), "subset_size")
    subset = rest[_stratified_order(strata.iloc[rest], rng)[:n_subset]]
    subset = subset[_stratified_order(strata.iloc[subset], rng)]
    n_train = int(round(fractions["train"] * n_subset))
    n_val1 = int(round(fractions["val1"] * n_subset))
    split[subset[:n_train]] = "train"
    split[subset[n_train : n_train + n_val1]] = "val1"
    split[subset[n_train + n_val1 :]] = "val2"

    positions = face_manifest.index.get_indexer(manifest.index)
    table = pd.DataFrame({
        "file_name": manifest["file_name"].to_numpy(),
        "cache_index": positions,
        "age": manifest["age"].to_numpy(),
        "gender": manifest["gender"].to_numpy(),
        "race": manifest["race"].to_numpy(),
        "split": pd.Categorical(split, categories=SPLITS),
    }).sort_values("cache_index").reset_index(drop=True)
    counts = {name: int((table["split"] == name).sum()) for name in SPLITS}
    _refuse_empty(counts, params)
    table = stamp_splits(table, identity, params)
    summary = {
        "seed": int(params["seed"]),
        "ingestion_id": identity,
        "split_id": str(table["split_id"].iloc[0]),
        "counts": counts,
        "female_share": {name: round(float(table.loc[table["split"] == name, "gender"].mean()), 4)
                         for name in SPLITS[:4] if (table["split"] == name).any()},
        "mean_age": {name: round(float(table.loc[table["split"] == name, "age"].mean()), 2)
                     for name in SPLITS[:4] if (table["split"] == name).any()},
    }
    return table, summary
