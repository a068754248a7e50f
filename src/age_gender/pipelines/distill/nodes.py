"""Nodes of the ``distill`` pipeline (machinery: ``age_gender.distill``, ``age_gender.scratch``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from age_gender.distill import (
    PROTOCOL_NOTE,
    check_targets,
    check_teacher,
    label_faces,
    student_data,
    targets_key,
)
from age_gender.lineage import splits_split_id
from age_gender.reporting import plot_learning_curves
from age_gender.scratch import choose_architecture, fit_cnn
from age_gender.training import check_epochs, training_info


def label_unused_faces(face_cache: Mapping[str, Any], face_splits: pd.DataFrame, transfer_model,
                       transfer_training_info: Mapping[str, Any] | None, distill: Mapping[str, Any],
                       inference: Mapping[str, Any] | None) -> pd.DataFrame:
    """The teacher's (the newest ``transfer_model``) flip-averaged age and P(female) on up to
    ``distill.unlabelled_faces`` faces of the ``unused`` split: ``distill_targets``. Refuses a
    teacher trained on another split table, before any prediction. The views averaged are
    ``distill.inference``'s when set, else the shared ``inference``'s."""
    check_teacher(face_splits, transfer_training_info if transfer_model is not None else None)
    return label_faces(transfer_model, face_cache, face_splits, transfer_training_info,
                       distill["unlabelled_faces"], int(distill["seed"]), distill.get("inference") or inference)


def train_distilled_model(face_cache: Mapping[str, Any], face_splits: pd.DataFrame, distill_targets: pd.DataFrame,
                          checkpoints: str, scratch: Mapping[str, Any], training: Mapping[str, Any],
                          distill: Mapping[str, Any], device: Mapping[str, Any],
                          winner: Mapping[str, Any] | None = None):
    """The scratch CNN (``scratch.architecture``, or the search winner) trained on train + val1
    (true labels) plus the teacher-labelled faces, early-stopping on val2 (true labels), with
    ``scratch_training`` + ``scratch.training`` + ``distill.training`` settings.

    Returns the model, its history, its training info (model ``distilled``, the teacher, the
    number of teacher-labelled faces, ``protocol``) and learning curves."""
    settings = {**training, **(scratch.get("training") or {}), **(distill.get("training") or {})}
    check_epochs(settings["epochs"], "distill.training.epochs")
    teacher = check_targets(face_splits, distill_targets)
    architecture = choose_architecture(scratch, winner)
    gender_targets = distill["gender_targets"]
    settings["soft_gender_targets"] = gender_targets == "soft"
    data = student_data(face_cache, face_splits, distill_targets, int(settings["input_size"]), gender_targets)
    result = fit_cnn(face_cache, face_splits, architecture, settings, device, ["train", "val1"], ["val2"], checkpoints,
                     train_data=data, extra_identity={"distill_targets": targets_key(distill_targets),
                                                      "gender_targets": gender_targets})
    info = training_info(result, model="distilled", pipeline="distill", architecture=architecture,
                         input_size=int(settings["input_size"]), split_id=splits_split_id(face_splits),
                         teacher=teacher, teacher_labelled_faces=int((data.rows["source"] == "teacher").sum()),
                         true_labelled_faces=int((data.rows["source"] == "true").sum()),
                         gender_targets=gender_targets, protocol=PROTOCOL_NOTE)
    curves = plot_learning_curves(result.history, f"CNN distilled from {teacher.get('backbone')} {architecture}")
    return result.model, result.history, info, curves
