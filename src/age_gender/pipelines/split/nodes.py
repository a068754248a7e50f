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


def _refuse_empty(counts: dict[str, int], params: dict[str, Any], given: bool = False) -> None:
    """Every model pipeline needs train, val1, val2 and test: an empty one is refused here,
    before any training starts, naming the setting that emptied it."""
    for name in SPLITS[:4]:
        if counts[name] == 0 and given:
            raise ActionableError(f"the dataset's own splits leave the '{name}' split empty (see "
                                  "ingestion_report.json label_source for listed/found files)",
                                  "list more files in its train/test lists or split column, or "
                                  "raise split.subset_size")
        if counts[name] == 0:
            setting = (f"split.test_size={params['test_size']!r}" if name == "test" else
                       f"split.subset_size={params['subset_size']!r} with split.fractions="
                       f"{dict(params['fractions'])}")
            raise ActionableError(f"{setting} leaves the '{name}' split empty",
                                  "choose settings that give every split at least one image "
                                  f"(e.g. a larger {'split.test_size' if name == 'test' else 'split.subset_size'})")


def _predefined(manifest: pd.DataFrame, strata: pd.Series, rng: np.random.Generator,
                params: dict[str, Any]) -> np.ndarray:
    """Splits from the dataset's own ``given_split`` (train / val / test / unused): test is the
    given test part; val1 and val2 are the given val part cut by ``fractions.val1 : val2``, or,
    without one, cut from the given train part (``subset_size`` of it, then ``fractions``),
    seeded and stratified like the drawn splits."""
    fractions = params["fractions"]
    given = manifest["given_split"].astype(str).to_numpy()
    split = np.full(len(manifest), "unused", dtype=object)
    split[given == "test"] = "test"
    train = np.flatnonzero(given == "train")
    n_subset = _count(params["subset_size"], len(train), "subset_size")
    subset = train[_stratified_order(strata.iloc[train], rng)[:n_subset]]
    subset = subset[_stratified_order(strata.iloc[subset], rng)]
    val = np.flatnonzero(given == "val")
    if len(val):
        split[subset] = "train"
        val = val[_stratified_order(strata.iloc[val], rng)]
        n_val1 = int(round(fractions["val1"] / (fractions["val1"] + fractions["val2"]) * len(val)))
        split[val[:n_val1]] = "val1"
        split[val[n_val1:]] = "val2"
    else:
        n_train = int(round(fractions["train"] * len(subset)))
        n_val1 = int(round(fractions["val1"] * len(subset)))
        split[subset[:n_train]] = "train"
        split[subset[n_train : n_train + n_val1]] = "val1"
        split[subset[n_train + n_val1 :]] = "val2"
    return split


def _has_given_splits(manifest: pd.DataFrame) -> bool:
    return "given_split" in manifest and bool((manifest["given_split"].astype(str) != "").any())


def split_faces(face_manifest: pd.DataFrame, face_cache: Any, params: dict[str, Any],
                ingestion_report: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Assign splits. First a held-out ``test`` set is drawn from all kept images; the study's
    subset (e.g. 5,000) is drawn from the rest and cut 80/10/10 into train / val1 (early
    stopping) / val2 (model selection). Final models train on train+val1 and meet ``test`` once.

    When the dataset gives its own splits (a split column or split lists: the manifest's
    ``given_split``), those are used instead (``_predefined``; ``test_size`` is not used) and the
    summary's ``predefined`` says how many listed files were found, missing, and kept
    (``ingestion_report``'s ``label_source``).

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
    given = _has_given_splits(manifest)
    if given:
        split = _predefined(manifest, strata, rng, params)
    else:
        split = _drawn(strata, rng, params)

    positions = face_manifest.index.get_indexer(manifest.index)
    table = pd.DataFrame({
        "file_name": manifest["file_name"].to_numpy(),
        "cache_index": positions,
        "age": manifest["age"].to_numpy(),
        "gender": manifest["gender"].to_numpy(),
        "race": manifest["race"].to_numpy(),
        "split": pd.Categorical(split, categories=SPLITS),
    }).sort_values("cache_index").reset_index(drop=True)
    if "age_low" in manifest and bool((manifest["age_low"] != manifest["age_high"]).any()):
        # ages labelled as ranges: evaluation scores the share of predictions inside them
        order = table["cache_index"].to_numpy()
        table.insert(3, "age_low", face_manifest["age_low"].to_numpy()[order])
        table.insert(4, "age_high", face_manifest["age_high"].to_numpy()[order])
    counts = {name: int((table["split"] == name).sum()) for name in SPLITS}
    _refuse_empty(counts, params, given)
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
    if given:
        kept = manifest["given_split"].astype(str).value_counts()
        lists = ((ingestion_report or {}).get("label_source") or {}).get("split_lists") or {}
        summary["predefined"] = {
            "used": True,
            "rule": "test = the dataset's test part; val1/val2 = its val part, or cut (seeded, "
                    "stratified, split.fractions) from its train part; split.test_size not used",
            "kept_per_given_split": {k: int(v) for k, v in sorted(kept.items())},
            "split_lists": {name: {k: v for k, v in entry.items() if k != "missing_examples"}
                            for name, entry in lists.items()},
        }
    return table, summary


def _drawn(strata: pd.Series, rng: np.random.Generator, params: dict[str, Any]) -> np.ndarray:
    """The project's own seeded, stratified draw: test first, then the subset cut by fractions."""
    fractions = params["fractions"]
    split = np.full(len(strata), "unused", dtype=object)
    n_test = _count(params["test_size"], len(strata), "test_size")
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
    return split
