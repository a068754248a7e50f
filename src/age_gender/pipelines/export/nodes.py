"""Nodes of the ``export`` pipeline (machinery: ``age_gender.export``): every trained model to
each format of ``export.formats``, then each export checked against its ``.keras`` model on the
test split (largest output difference, its metrics) and measured (file size, CPU images/s)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from age_gender.export import (
    FILES,
    INFO_FILE,
    export_model,
    exported_views,
    images_per_second,
    keras_runner,
    load_runner,
    predict_with,
    size_bytes,
    weights_fingerprint,
)
from age_gender.lineage import LineageError, check_trained_on, short, splits_split_id
from age_gender.metrics import headline, model_metrics
from age_gender.reporting import predict_faces, prediction_table
from age_gender.training import select_split
from age_gender.tta import Views

logger = logging.getLogger(__name__)


def _split(models: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    trained = {k.removesuffix("_model"): v for k, v in models.items() if k.endswith("_model") and v is not None}
    infos = {k.removesuffix("_training_info"): v for k, v in models.items() if k.endswith("_training_info")}
    return trained, infos


def export_models(face_splits: pd.DataFrame, export: Mapping[str, Any], inference: Mapping[str, Any] | None,
                  **models: Any) -> dict[str, str]:
    """Each trained model (``{name}_model``; not trained yet: skipped) exported to every format of
    ``export.formats`` with the ``inference`` test-time views built in, in a temporary folder per model
    (``exported_models`` moves them into place in one swap). Refuses a model trained on another
    split table (``LineageError``) and a run with no trained model (ValueError)."""
    trained, infos = _split(models)
    if not trained:
        raise ValueError(f"No trained model to export (looked for {sorted(infos)}): run "
                         "`kedro run --pipeline scratch` and/or `--pipeline transfer` first.")
    for name in trained:
        check_trained_on(face_splits, name, infos.get(name))
    folders: dict[str, str] = {}
    try:
        for name, model in trained.items():
            folder = Path(tempfile.mkdtemp(prefix=f"age_gender_export_{name}_"))
            folders[name] = str(folder)
            info = export_model(model, folder, list(export["formats"]), Views.from_params(inference),
                                export.get("onnx_opset"))
            info.update(model=name, split_id=splits_split_id(face_splits),
                        training_split_id=(infos.get(name) or {}).get("split_id"))
            (folder / INFO_FILE).write_text(json.dumps(info, indent=2))
    except BaseException:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folders


def _kind(fmt: str) -> str:
    return "int8" if fmt.endswith("int8") else "float32"


def check_exports(exported: Mapping[str, Path], face_cache, face_splits: pd.DataFrame,
                  export: Mapping[str, Any], **models: Any) -> tuple[dict[str, Any], str]:
    """Every export of every model run with its own runtime on the test split (``export.check``)
    and compared with its ``.keras`` model as the evaluation predicts it: the largest absolute
    difference of age (years) and female probability, the share of faces given the same gender,
    the export's own gender accuracy and age MAE, ``passed`` (both differences within
    ``export.check.tolerance`` of its kind), file size (bytes) and CPU images/s
    (``export.speed``). Returns (``export_report`` JSON, Markdown table).

    Refuses (``LineageError``) an export made from other weights than the current ``.keras``
    model, or from another split table than today's."""
    trained, _ = _split(models)
    check, speed = export["check"], export["speed"]
    current_split = splits_split_id(face_splits)
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "check": dict(check), "speed": dict(speed), "models": {}}
    for name, folder in exported.items():
        info = json.loads((Path(folder) / INFO_FILE).read_text())
        model = trained.get(name)
        if model is None:
            continue  # exported earlier, model since removed: nothing to check against
        if info.get("weights_sha256") != weights_fingerprint(model):
            raise LineageError(f"The exports of {name} were made from other weights than {name}_model now",
                               "rerun `kedro run --pipeline export`")
        if info.get("split_id") != current_split:
            raise LineageError(f"The exports of {name} were made against another split table (split id "
                               f"{short(info.get('split_id'))} vs {short(current_split)})",
                               "rerun `kedro run --pipeline export`")
        test = select_split(face_cache, face_splits, int(model.input_shape[1]), ["test"])
        rows, images = test.rows, test.images
        if check.get("max_faces") and check["max_faces"] < len(rows):
            # evenly spaced over the split, not its first faces: cache order is file-name order,
            # and UTKFace names begin with the age (the first 500 are young children)
            keep = np.linspace(0, len(rows) - 1, int(check["max_faces"])).round().astype(int)
            rows, images = rows.iloc[keep].reset_index(drop=True), images[keep]
        views = exported_views(info)
        age0, female0 = predict_faces(model, images, batch_size=check["batch_size"], views=views)
        reference = headline(model_metrics(prediction_table(rows, age0, female0)))
        bench = images[: speed["faces"]]
        keras_speed = images_per_second(keras_runner(model, views), bench,
                                        speed["batch_size"], speed["repeats"])
        entry = {"input_size": int(model.input_shape[1]), "n": int(len(rows)), "flip_average": info["flip_average"],
                 "test_time_augmentation": views.describe(),
                 "keras_dtype_policy": info.get("keras_dtype_policy"),
                 "weights_sha256": info["weights_sha256"],
                 "keras": {**reference, "images_per_second": keras_speed}, "formats": {}}
        for fmt, made in info["formats"].items():
            if "error" in made:
                entry["formats"][fmt] = {"error": made["error"]}
                continue
            path = Path(folder) / FILES[fmt]
            runner = load_runner(fmt, path)
            age, female = predict_with(runner, images, check["batch_size"])
            own = headline(model_metrics(prediction_table(rows, age, female)))
            tolerance = check["tolerance"][_kind(fmt)]
            difference = {"age_years": round(float(np.abs(age - age0).max()), 4),
                          "female_prob": round(float(np.abs(female - female0).max()), 5)}
            entry["formats"][fmt] = {
                "file": FILES[fmt], "size_bytes": size_bytes(path), "max_abs_difference": difference,
                "gender_agreement": round(float(((female >= 0.5) == (female0 >= 0.5)).mean()), 4),
                "gender_accuracy": own["gender_accuracy"], "age_mae": own["age_mae"],
                "tolerance": dict(tolerance),
                "passed": bool(difference["age_years"] <= tolerance["age_years"]
                               and difference["female_prob"] <= tolerance["female_prob"]),
                "images_per_second": images_per_second(runner, bench, speed["batch_size"], speed["repeats"])}
        report["models"][name] = entry
    outside = [f"{name} {fmt}" for name, entry in report["models"].items()
               for fmt, result in entry["formats"].items() if not result.get("passed", True)]
    failed = [f"{name} {fmt}" for name, entry in report["models"].items()
              for fmt, result in entry["formats"].items() if "error" in result]
    if outside:
        logger.warning("Exports outside their tolerance of the .keras model (do not ship them without "
                       "reading export_report.md): %s", ", ".join(outside))
    if failed:
        logger.warning("Formats that could not be exported (reason in export_report.md): %s", ", ".join(failed))
    return report, export_table(report)


def export_table(report: Mapping[str, Any]) -> str:
    """The export report as a Markdown table, one row per model and format (``keras``: the
    reference), then one line per failed format."""
    lines = ["| model | format | size (MB) | CPU images/s | max age diff (years) | max P(female) diff "
             "| same gender | gender accuracy (%) | age MAE (years) | within tolerance |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    failed = []
    for name, entry in report["models"].items():
        keras = entry["keras"]
        lines.append(f"| {name} | .keras ({entry.get('keras_dtype_policy')}, reference) | | {keras['images_per_second']} | | | "
                     f"| {100 * keras['gender_accuracy']:.2f} | {keras['age_mae']:.3f} | |")
        for fmt, result in entry["formats"].items():
            if "error" in result:
                failed.append(f"- {name} {fmt}: not exported: {result['error']}")
                continue
            d, t = result["max_abs_difference"], result["tolerance"]
            lines.append(f"| {name} | {fmt} | {result['size_bytes'] / 1e6:.2f} | {result['images_per_second']} "
                         f"| {d['age_years']:.4f} | {d['female_prob']:.5f} | {100 * result['gender_agreement']:.2f} % "
                         f"| {100 * result['gender_accuracy']:.2f} | {result['age_mae']:.3f} "
                         f"| {'yes' if result['passed'] else '**NO**'} (<= {t['age_years']} y, {t['female_prob']}) |")
    n = {name: entry["n"] for name, entry in report["models"].items()}
    speed = report["speed"]
    text = "\n".join(lines) + (
        f"\n\nChecked on the test split ({', '.join(f'{k}: {v} faces' for k, v in n.items())}); speed: best of "
        f"{speed['repeats']} passes over {speed['faces']} faces in batches of {speed['batch_size']} on "
        f"{report['cpu_count']} CPU cores (shared machines give lower, noisier figures).\n")
    if failed:
        text += "\n" + "\n".join(failed) + "\n"
    return text
