"""Nodes of ``evaluate_external``: every trained model's predictions on the kept images of
another labelled dataset (any label source the catalog describes), after checking by content hash
which of them the training data already holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from age_gender.lineage import check_manifest_matches_cache, check_same_ingestion, short
from age_gender.metrics import Bootstrap, absolute_error, age_range_metrics, correct, interval
from age_gender.reporting import ensemble_predictions, predict_models
from age_gender.training import cached_images

#: Where an external image's bytes were found in the training data ("" = nowhere).
SEEN_IN = ("train", "val1", "val2", "test", "unused")


def find_overlap(face_manifest: pd.DataFrame, training_manifest: pd.DataFrame, training_cache: Any,
                 training_splits: pd.DataFrame, external: Mapping[str, Any], face_cache: Any = None
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Compare the external images' content hashes (sha256 of the file bytes) with the training
    ingestion's manifest and its split table.

    Returns the external rows to score (``cache_index`` = external cache row, ``seen_in`` = the
    training split holding the same bytes, or ``""``; with ``external.overlap: drop`` only the
    unseen rows) and the overlap report: counts per training split, the policy, the training
    ingestion id and, given the external ``face_cache``, the external ingestion id
    (``external_ingestion``: every report of this dataset names the ingestion it scored).
    Raises ``LineageError`` when the training manifest, cache and splits, or the external
    manifest and cache, do not belong together, ValueError when the external dataset has no
    usable image.
    """
    if face_manifest.empty:
        raise ValueError("The external dataset has no usable image: see its ingestion report.")
    external_identity = check_manifest_matches_cache(face_manifest, face_cache) if face_cache is not None else None
    identity = check_manifest_matches_cache(training_manifest, training_cache)
    check_same_ingestion(training_cache, training_splits)
    split_of_row = pd.Series(training_splits["split"].astype(str).to_numpy(),
                             index=training_splits["cache_index"].to_numpy())
    by_hash = pd.Series(split_of_row.reindex(np.arange(len(training_manifest))).fillna("unused").to_numpy(),
                        index=training_manifest["sha256"].astype(str).to_numpy())
    by_hash = by_hash[~by_hash.index.duplicated()]
    rows = face_manifest.assign(cache_index=np.arange(len(face_manifest)))
    rows["seen_in"] = rows["sha256"].astype(str).map(by_hash).fillna("").to_numpy()
    counts = {name: int((rows["seen_in"] == name).sum()) for name in SEEN_IN}
    policy = external["overlap"]
    overlap = int((rows["seen_in"] != "").sum())
    report = {
        "external_images": int(len(rows)),
        "in_training_data": overlap,
        "in_training_data_by_split": counts,
        "not_in_training_data": int(len(rows)) - overlap,
        "compared_with": f"face_manifest / face_splits of training ingestion {short(identity)}",
        **({"external_ingestion": external_identity} if external_identity else {}),
        "method": "sha256 of the image file bytes (an identical file; a re-encoded copy is not found)",
        "policy": policy,
        "overlap_examples": rows.loc[rows["seen_in"] != "", "member"].head(50).tolist(),
    }
    if policy == "drop":
        rows = rows[rows["seen_in"] == ""]
        if rows.empty:
            raise ValueError(f"Every one of the {overlap} external images is in the training data (same "
                             f"bytes), so none is left to score: evaluate on other images, or set "
                             f"external.overlap: score_apart")
    columns = ["file_name", "cache_index", "age", "age_low", "age_high", "gender", "race", "seen_in"]
    return rows[[c for c in columns if c in rows]].reset_index(drop=True), report


def predict_all_faces(face_cache, rows: pd.DataFrame, inference: Mapping[str, Any] | None,
                      evaluation: Mapping[str, Any] | None = None, **models) -> pd.DataFrame:
    """Every trained model's predictions on the rows to score (``cache_index`` = external cache
    row), with their ``age_low``/``age_high`` (years) and ``seen_in``; plus each ensemble of
    ``evaluation.ensembles`` whose members were all scored (``reporting.ensemble_predictions``)."""
    predictions = predict_models(models, lambda size: (rows, cached_images(face_cache, size)[
        rows["cache_index"].to_numpy()]), inference)
    extra = rows.set_index("cache_index")[[c for c in ("age_low", "age_high", "seen_in")
                                            if c in rows and c not in predictions]]
    return ensemble_predictions(predictions.join(extra, on="cache_index"), (evaluation or {}).get("ensembles"))[0]


def unseen_predictions(all_predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions on images the training data does not hold: what the judging nodes score."""
    unseen = all_predictions[all_predictions["seen_in"] == ""].reset_index(drop=True)
    if unseen.empty:
        raise ValueError("Every scored external image is in the training data: no unseen image is left "
                         "to judge the models on; see external/overlap_report.json")
    return unseen


def _pct(value: float, ci: list[float] | None) -> str:
    return f"{100 * value:.2f}" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def _years(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _score(part: pd.DataFrame, setting: Bootstrap | None) -> dict[str, Any]:
    ranges = "age_low" in part and bool((part["age_low"] != part["age_high"]).any())
    hits = correct(part)
    values: dict[str, Any] = {"n": int(len(part)), "gender_accuracy": round(float(hits.mean()), 4),
                              "gender_accuracy_ci": interval(hits, setting) if setting else None}
    if ranges:
        ranged = age_range_metrics(part, setting)
        values.update(age_labels="ranges", age_in_range_share=ranged["age_in_range_share"],
                      age_in_range_share_ci=ranged.get("age_in_range_share_ci"))
    else:
        errors = absolute_error(part)
        values.update(age_labels="years", age_mae=round(float(errors.mean()), 3),
                      age_mae_ci=interval(errors, setting, 3) if setting else None)
    return values


def _age_cell(v: Mapping[str, Any]) -> str:
    """The age column of a score: the share inside the labelled range, or the MAE in years."""
    if v.get("age_labels") == "ranges":
        return f"{_pct(v['age_in_range_share'], v.get('age_in_range_share_ci'))} % inside the range"
    return f"MAE {_years(v['age_mae'], v.get('age_mae_ci'))} years"


def _held_out(name: str, headline: Mapping[str, Any] | None, info: Mapping[str, Any] | None) -> dict | None:
    """The model's held-out UTKFace test headline (``test_metrics/{model}.json``) when it was
    written for this very training run (same training info: split id, seconds, epochs ...)."""
    if not headline or not info:
        return None
    if any(headline.get(k) != v for k, v in info.items() if k != "model"):
        return None  # evaluation ran on an earlier training of this model: not shown
    if headline.get("age_labels") == "ranges":  # a range-labelled training dataset: no age MAE to show
        return {"age_labels": "ranges", **{k: headline.get(k) for k in (
            "n", "gender_accuracy", "gender_accuracy_ci", "age_in_range_share", "age_in_range_share_ci")}}
    return {"age_labels": "years", **{k: headline.get(k) for k in (
        "n", "gender_accuracy", "gender_accuracy_ci", "age_mae", "age_mae_ci")}}


def external_comparison(all_predictions: pd.DataFrame, overlap_report: Mapping[str, Any],
                        evaluation: Mapping[str, Any] | None, ingestion_report: Mapping[str, Any] | None = None,
                        **held_out: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """Per model, on the external images the training data does not hold: gender accuracy and
    either the age MAE (years; whole-year labels) or, where the dataset labels ages as ranges,
    the share of predicted ages inside the range (fraction), each with its bootstrap interval;
    with ``external.overlap: score_apart``, the same on the overlapping images in a section of
    their own. Beside them, the same model's numbers on the held-out test split when
    ``evaluation`` has run for this training of it (``held_out``: ``{model}_held_out`` headline and
    ``{model}_info`` training info per model). Returns (JSON, Markdown that says what the numbers are)."""
    setting = Bootstrap.from_params(evaluation)
    sections: dict[str, dict[str, Any]] = {"unseen": {}, "in_training_data": {}}
    for name, part in all_predictions.groupby("model", sort=False):
        unseen, seen = part[part["seen_in"] == ""], part[part["seen_in"] != ""]
        if len(unseen):
            sections["unseen"][name] = _score(unseen, setting)
        if len(seen):
            sections["in_training_data"][name] = _score(seen, setting)
    counts = overlap_report["in_training_data_by_split"]
    source = (ingestion_report or {}).get("source")
    identity = overlap_report.get("external_ingestion")
    lines = ["# Models on an external dataset", "",
             (f"Dataset `{source}`" if source else "Dataset (source not recorded)")
             + (f", ingestion {short(identity)} (its ingestion report and manifest are this run's)" if identity else "")
             + ".", "",
             f"{overlap_report['external_images']} kept external images; {overlap_report['in_training_data']} "
             f"of them have the same bytes as a face of the training data (train {counts['train']}, "
             f"val1 {counts['val1']}, val2 {counts['val2']}, test {counts['test']}, unused {counts['unused']}; "
             f"{overlap_report['method']}).",
             "These numbers are NOT on the project's held-out UTKFace test split: they are on the external "
             "images the training data does not hold"
             + (" (the overlapping ones are dropped: external.overlap: drop)." if overlap_report["policy"] == "drop"
                else "; the overlapping ones are scored apart below (external.overlap: score_apart)."), ""]
    for section, title in (("unseen", "External images not in the training data"),
                           ("in_training_data", "External images also in the training data (seen or "
                                                "held out; not a test of generalisation)")):
        scores = sections[section]
        if not scores:
            continue
        lines += [f"## {title}", "",
                  "| model | n | gender accuracy (%) [95 % CI] | age | ", "| --- | --- | --- | --- |"]
        for name, v in scores.items():
            age = (f"{_pct(v['age_in_range_share'], v['age_in_range_share_ci'])} % of predicted ages inside "
                   f"the labelled range" if v["age_labels"] == "ranges"
                   else f"MAE {_years(v['age_mae'], v['age_mae_ci'])} years")
            lines.append(f"| {name} | {v['n']} | {_pct(v['gender_accuracy'], v['gender_accuracy_ci'])} | {age} |")
        lines.append("")
    reference = {name: _held_out(name, held_out.get(f"{name}_held_out"), held_out.get(f"{name}_info"))
                 for name in all_predictions["model"].unique()}
    reference = {name: value for name, value in reference.items() if value}
    if reference:
        lines += ["## Side by side: the same models on the training dataset's held-out test split", "",
                  "| model | dataset | n | gender accuracy (%) [95 % CI] | age |", "| --- | --- | --- | --- | --- |"]
        for name, ref in reference.items():
            lines.append(f"| {name} | training dataset, held-out test split | {ref['n']} | "
                         f"{_pct(ref['gender_accuracy'], ref['gender_accuracy_ci'])} | {_age_cell(ref)} |")
            v = sections["unseen"].get(name)
            if v:
                lines.append(f"| {name} | this external dataset, unseen images | {v['n']} | "
                             f"{_pct(v['gender_accuracy'], v['gender_accuracy_ci'])} | {_age_cell(v)} |")
        lines.append("")
    if any(v["age_labels"] == "ranges" for s in sections.values() for v in s.values()):
        lines.append("This dataset labels ages as ranges, so no age MAE is given (against a range's midpoint it "
                     "would partly measure the width of the range): the age column is the share of predictions "
                     "with age_low <= predicted age < age_high + 1 (evaluation_metrics.json: age_in_range; its MAE "
                     "uses the midpoints and is not comparable).")
    lines.append("Intervals: 95 % percentile bootstrap over the images." if setting else "No intervals "
                 "(evaluation.bootstrap.resamples: 0).")
    return {"source": source, "overlap": dict(overlap_report), **sections,
            "held_out_test": reference}, "\n".join(lines) + "\n"


def external_report(**results: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Every external dataset side by side. ``results``: per dataset (the catalog entry's name)
    its ``external_comparison`` JSON, and under ``<name>__ingestion`` its ingestion report.

    Returns (JSON, Markdown). Per dataset: the source and label form, ``n`` (kept external images),
    how many have the same bytes as a training face (per training split), the overlap policy, and
    per model ``n`` scored, gender accuracy (fraction) and the age measure with its kind
    (``age_labels``: ``years`` = MAE in years, ``ranges`` = share of predictions inside the
    labelled range), each with its 95 % bootstrap interval (None when switched off)."""
    datasets: dict[str, Any] = {}
    for name, result in results.items():
        if name.endswith("__ingestion"):
            continue
        ingestion = results.get(f"{name}__ingestion") or {}
        overlap = result["overlap"]
        datasets[name] = {
            "source": ingestion.get("source"),
            "label_form": (ingestion.get("label_source") or {}).get("form", "utkface_names"),
            "n": overlap["external_images"],
            "files_seen": ingestion.get("files_seen"),
            "in_training_data": overlap["in_training_data"],
            "in_training_data_by_split": overlap["in_training_data_by_split"],
            "overlap_policy": overlap["policy"],
            "unseen": result.get("unseen", {}),
            "in_training_data_scores": result.get("in_training_data", {}),
        }
    lines = ["# Models on external datasets, side by side", "",
             "Each dataset was ingested like the training data and compared by content (sha256 of the file "
             "bytes) with the training data's faces. The scores are on each dataset's images that the training "
             "data does not hold, NOT on the held-out UTKFace test split; the age column is an MAE in years "
             "where the dataset labels whole years, and the share of predicted ages inside the labelled range "
             "(age_low <= predicted < age_high + 1) where it labels ranges (no MAE against midpoints).", "",
             "| dataset | labels | kept images | also in training data (train / val1 / val2 / test / unused) | "
             "model | n scored | gender accuracy (%) [95 % CI] | age [95 % CI] |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, d in datasets.items():
        by = d["in_training_data_by_split"]
        overlap = (f"{d['in_training_data']} ({by['train']} / {by['val1']} / {by['val2']} / {by['test']} / "
                   f"{by['unused']}; {d['overlap_policy']})")
        scores = d["unseen"] or {"(none)": None}
        for model, v in scores.items():
            if v is None:
                lines.append(f"| {name} | {d['label_form']} | {d['n']} | {overlap} | - | 0 | - | - |")
                continue
            kind = "ranges" if v["age_labels"] == "ranges" else "years"
            lines.append(f"| {name} | {d['label_form']}, ages in {kind} | {d['n']} | {overlap} | {model} | {v['n']} | "
                         f"{_pct(v['gender_accuracy'], v.get('gender_accuracy_ci'))} | {_age_cell(v)} |")
    lines.append("")
    for name, d in datasets.items():
        if d["in_training_data_scores"]:
            lines.append(f"{name}: the images also in the training data are scored apart in its own "
                         f"external_comparison.md (external.overlap: score_apart); they are not a test of "
                         f"generalisation.")
    lines.append("Sources: " + "; ".join(f"{name} = {d['source']}" for name, d in datasets.items()) + ".")
    return {"datasets": datasets}, "\n".join(lines) + "\n"
