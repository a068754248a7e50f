"""Nodes of the ingestion pipeline. Pure functions: files in memory in, tables and arrays out."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from age_gender.datasets import FaceSource  # noqa: E402
from age_gender.faces import GENDERS, crops_with_faces, iter_decoded  # noqa: E402
from age_gender.labels import Label  # noqa: E402
from age_gender.photos import NO_FACE, SEVERAL_FACES, DetectSettings, iter_face_crops  # noqa: E402

logger = logging.getLogger(__name__)

# age: the point label (years); age_low/age_high: the labelled interval (equal to age unless the
# dataset gives a range, then age is its midpoint rounded down); race -1: not given;
# given_split: the dataset's own split (train/val/test/unused), "" when it has none.
MANIFEST_COLUMNS = ["file_name", "member", "age", "age_low", "age_high", "gender", "race",
                    "given_split", "timestamp", "width", "height", "mode", "sha256", "face_detected"]


def _workers(value: int | None) -> int:
    if value is None:
        return os.cpu_count() or 1
    if int(value) < 1:
        raise ValueError(f"ingestion.workers must be null or >= 1, got {value!r}")
    return int(value)


def _check_sizes(sizes: list[int]) -> list[int]:
    if not sizes or any(int(s) < 16 or int(s) > 1024 for s in sizes):
        raise ValueError(f"ingestion.image_sizes must be a list of sizes in 16..1024 px, got {sizes!r}")
    return sorted({int(s) for s in sizes})


def _min_side(params: dict[str, Any]) -> int:
    value = params.get("min_side", 32)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ingestion.min_side must be a whole number of pixels >= 1, got {value!r}")
    return value


def _detect_settings(params: dict[str, Any]) -> DetectSettings | None:
    """``ingestion.detect_faces`` as predict's ``DetectSettings``; None when off (the default)."""
    detect = params.get("detect_faces") or {}
    if not detect.get("enabled", False):
        return None
    return DetectSettings.from_params(detect)


class NoUsableFaces(ValueError):
    """Ingestion found no face it could keep: nothing is saved, the input is named."""


def _no_faces(origin: str, help_text: str, counts: dict[str, int]) -> NoUsableFaces:
    found = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "no files"
    return NoUsableFaces(f"No usable face in '{origin}' ({found}); nothing was saved. {help_text}")


def decode_faces(face_source: FaceSource, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[int, np.ndarray], dict[str, Any]]:
    """Parse labels, drop exact duplicates, decode every image once at each working size.

    Returns the manifest of decodable, labelled, unique images (sorted by file name), their arrays
    per size (row ``i`` of each array is manifest row ``i``, ``uint8`` ``(n, size, size, 3)``), and
    the findings: every file that was set aside, by reason, with a detail line per file.

    Raises:
        NoUsableFaces: (a ``ValueError``) when not one face can be kept, naming the input and the
            setting that points at it, before anything is saved.
    """
    started = time.perf_counter()
    sizes = _check_sizes(params["image_sizes"])
    min_side = _min_side(params)
    set_aside: dict[str, list[str]] = defaultdict(list)
    details: dict[str, str] = {}
    source_details = getattr(face_source, "details", {}) or {}
    for name, reason in face_source.refused:
        set_aside[reason].append(name)
        details[name] = source_details.get(name, "archive member refused, never read")

    named: list[tuple[str, bytes, Label]] = []
    for member, data in sorted(face_source.members, key=lambda m: m[0]):
        label = face_source.label(member)  # UTKFace name, label table or folder layout
        if isinstance(label, str):
            set_aside[getattr(label, "kind", "malformed_name")].append(member)
            details[member] = label
        else:
            named.append((member, data, label))

    # One file name, different contents (a name twice in an archive, or in two folders): which
    # one carries the labels cannot be known, so none is kept. Same name, same bytes: a duplicate.
    # A UTKFace file is known by its base name (its labels); a file labelled by a table or a
    # folder layout by its whole path (FairFace has train/1.jpg and val/1.jpg).
    by_path = (getattr(face_source, "label_report", None) or {}).get("form", "utkface_names") != "utkface_names"

    def key_of(member: str) -> str:
        return member if by_path else member.rsplit("/", 1)[-1]

    by_name: dict[str, list[tuple[str, bytes, Label]]] = defaultdict(list)
    for item in named:
        by_name[key_of(item[0])].append(item)
    labelled: list[tuple[str, bytes, Label]] = []
    for file_name, copies in by_name.items():
        if len(copies) > 1 and len({hashlib.sha256(c[1]).digest() for c in copies}) > 1:
            for member, _, _ in copies:
                set_aside["duplicate_name"].append(member)
                details[member] = (f"{len(copies)} files are named {file_name} with different "
                                   f"contents; none is kept")
            continue
        labelled.extend(copies)

    policy = params.get("conflicting_duplicates", "keep_first")
    if policy not in ("drop", "keep_first"):
        raise ValueError(f"ingestion.conflicting_duplicates must be 'drop' or 'keep_first', got {policy!r}")
    groups: dict[str, list[tuple[str, bytes, Label]]] = defaultdict(list)
    for member, data, label in labelled:
        # empty files are not duplicates of each other: decoding sets them aside below
        groups[hashlib.sha256(data).hexdigest() if data else f"empty:{member}"].append((member, data, label))
    unique: list[tuple[str, bytes, Label, str]] = []
    duplicates: dict[str, str] = {}
    conflicts: dict[str, str] = {}
    for digest, copies in groups.items():
        first = copies[0]
        labels = {(c[2].age_low, c[2].age_high, c[2].gender, c[2].race) for c in copies}
        if len(labels) > 1 and policy == "drop":
            # the same image under different labels: which is right cannot be known, keep none
            for member, _, _ in copies:
                set_aside["duplicate_conflicting_labels"].append(member)
                others = [c[0] for c in copies if c[0] != member]
                details[member] = f"same bytes as {', '.join(others)} but other labels"
            continue
        unique.append((*first, digest))
        for member, _, label in copies[1:]:
            set_aside["duplicate"].append(member)
            duplicates[member] = first[0]
            differs = (label.age_low, label.age_high, label.gender, label.race) != (
                first[2].age_low, first[2].age_high, first[2].gender, first[2].race)
            details[member] = f"same bytes as {first[0]}" + (" (with other labels)" if differs else "")
            if differs:
                conflicts[member] = first[0]

    # Each decoded image goes straight into preallocated arrays (row i = manifest row i): the
    # per-image arrays are never all held at once next to a stacked copy.
    detect = _detect_settings(params)
    if detect is None:
        decoded = ((result, "") for result in iter_decoded(
            [u[1] for u in unique], sizes, int(params["max_pixels"]), workers=_workers(params.get("workers")),
            min_side=min_side))
    else:  # whole photos: the face is found and cut as predict cuts it (age_gender.photos)
        decoded = iter_face_crops([u[1] for u in unique], sizes, int(params["max_pixels"]), min_side, detect)
    buffers = {size: np.empty((len(unique), size, size, 3), np.uint8) for size in sizes}
    rows = []
    for (member, _, label, digest), (result, framing) in zip(unique, decoded):
        if result.arrays is None:
            set_aside[result.reason].append(member)
            details[member] = result.detail
            continue
        for size in sizes:
            buffers[size][len(rows)] = result.arrays[size]
        rows.append({"file_name": key_of(member), "member": member, "age": label.age,
                     "age_low": label.age_low, "age_high": label.age_high, "gender": label.gender,
                     "race": label.race, "given_split": label.split, "timestamp": label.timestamp,
                     "width": result.width, "height": result.height, "mode": result.mode,
                     "sha256": digest, **({"face_crop": framing} if detect else {})})
    if not rows:
        raise _no_faces(face_source.origin, getattr(face_source, "help", ""),
                        {k: len(v) for k, v in set_aside.items()})
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS[:-1] + (["face_crop"] if detect else []))
    images = {size: buffer[: len(rows)] for size, buffer in buffers.items()}
    # photos cut by the detector are not centre-cropped: only their mode conversion is reported
    converted = manifest[(manifest["mode"] != "RGB") | ((manifest["width"] != manifest["height"]) & (detect is None))]
    findings = {
        "source": face_source.origin,
        "source_help": getattr(face_source, "help", ""),
        "label_source": dict(getattr(face_source, "label_report", {}) or {"form": "utkface_names"}),
        "files_seen": face_source.files_seen,
        "set_aside": {k: sorted(v) for k, v in set_aside.items()},
        "details": details,
        "duplicates": duplicates,
        "duplicate_label_conflicts": conflicts,
        "converted": {row.member: f"{row.mode} {row.width}x{row.height}" for row in converted.itertuples()},
        "decode_seconds": round(time.perf_counter() - started, 2),
        "detect_faces": {"enabled": False} if detect is None else {
            "enabled": True, "detector": detect.detector, "faces_cut": int(len(manifest)),
            "no_face_found": len(set_aside.get(NO_FACE, [])), "several_faces": len(set_aside.get(SEVERAL_FACES, [])),
            "framing": "as predict: detection.crop_face (UTKFace's measured framing; eye-aligned with mtcnn), "
                       f"margin {detect.margin:g}; each crop's framing in face_manifest.face_crop"},
    }
    logger.info("Decoded %d of %d files in %.1f s", len(manifest), face_source.files_seen,
                findings["decode_seconds"])
    return manifest, images, findings


def check_faces(images: dict[int, np.ndarray], params: dict[str, Any]) -> np.ndarray:
    """Run the face detector (``face_check.detector``) on every crop (smallest cached size); True
    where a face is found."""
    smallest = images[min(images)]
    if not params["face_check"]["enabled"]:
        return np.ones(len(smallest), dtype=bool)
    return crops_with_faces(smallest, int(params["face_check"]["min_neighbors"]),
                            workers=_workers(params.get("workers")),
                            detector=params["face_check"].get("detector", "haar"))


def select_faces(manifest: pd.DataFrame, images: dict[int, np.ndarray], face_found: np.ndarray,
                 findings: dict[str, Any], params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, Any]]:
    """Apply the exclusion list (and, when asked, the detector's verdict); write the final,
    aligned manifest and caches and the ingestion report that accounts for every file."""
    manifest = manifest.assign(face_detected=face_found.astype(bool))
    excluded = {str(name).replace("\\", "/") for name in params.get("exclude_files") or []}
    by_list = manifest["file_name"].isin(excluded) | manifest["member"].isin(excluded)
    # an entry that matches no file (a typo, another layout) excludes nothing: say so
    known = set(manifest["file_name"]) | set(manifest["member"])
    for names in findings["set_aside"].values():
        known.update(names)
        known.update(name.rsplit("/", 1)[-1] for name in names)
    unmatched = sorted(excluded - known)
    if unmatched:
        logger.warning("ingestion.exclude_files entries that match no file (nothing excluded for "
                       "them): %s", unmatched)
    drop_suspects = bool(params["face_check"]["drop_suspects"])
    no_face = ~manifest["face_detected"] & ~by_list
    keep = ~by_list & ~no_face if drop_suspects else ~by_list

    set_aside = {k: list(v) for k, v in findings["set_aside"].items()}
    details = dict(findings["details"])
    if by_list.any():
        set_aside["excluded_by_list"] = sorted(manifest.loc[by_list, "member"])
        details.update({m: "listed in ingestion.exclude_files" for m in set_aside["excluded_by_list"]})
    suspects = sorted(manifest.loc[no_face, "member"])
    if drop_suspects and suspects:
        set_aside["no_face_detected"] = suspects
        details.update({m: "face detector found no face" for m in suspects})

    final = manifest[keep].reset_index(drop=True)
    if final.empty:
        raise _no_faces(findings["source"], findings.get("source_help", ""),
                        {k: len(v) for k, v in set_aside.items()})
    index = np.flatnonzero(keep.to_numpy())
    cache = {f"{size}px": array[index] for size, array in images.items()}
    kept = len(final)
    report = {
        "source": findings["source"],
        "label_source": findings.get("label_source", {"form": "utkface_names"}),
        "files_seen": findings["files_seen"],
        "kept": kept,
        "set_aside_total": sum(len(v) for v in set_aside.values()),
        "set_aside": dict(sorted(set_aside.items())),
        "details": details,
        "duplicates": findings["duplicates"],
        "duplicate_label_conflicts": findings["duplicate_label_conflicts"],
        "converted": findings["converted"],
        "exclude_files_unmatched": unmatched,
        "face_check": {
            "enabled": bool(params["face_check"]["enabled"]),
            "detector": {"haar": "OpenCV haarcascade_frontalface_default",
                         "mtcnn": "MTCNN (mtcnn package)"}[params["face_check"].get("detector", "haar")],
            "suspects": len(suspects),
            "suspect_files": suspects,
            "dropped": drop_suspects,
        },
        "image_sizes": sorted(images),
        "genders": {GENDERS[g]: int(n) for g, n in final["gender"].value_counts().sort_index().items()},
        "decode_seconds": findings["decode_seconds"],
        "detect_faces": findings.get("detect_faces", {"enabled": False}),
    }
    if report["kept"] + report["set_aside_total"] != report["files_seen"]:
        raise RuntimeError("Ingestion lost track of files: kept + set aside != files seen")
    logger.info("Kept %d of %d files; set aside: %s; %d face-check suspects", kept,
                report["files_seen"], {k: len(v) for k, v in set_aside.items()}, len(suspects))
    return final, cache, report


def plot_age_distribution(manifest: pd.DataFrame) -> plt.Figure:
    """The study's Figure 2: age histogram per gender, to check both look alike."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    bins = np.arange(0, 118, 2)
    for gender, label in enumerate(GENDERS):
        ages = manifest.loc[manifest["gender"] == gender, "age"]
        axis.hist(ages, bins=bins, alpha=0.55, label=f"{label} (n={len(ages)})")
    axis.set_xlabel("age (years)")
    axis.set_ylabel("images")
    axis.set_title("Age distribution per gender")
    axis.legend()
    figure.tight_layout()
    return figure
