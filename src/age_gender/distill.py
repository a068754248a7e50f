"""Knowledge distillation: the fine-tuned transfer model (the teacher) labels the faces of the
``unused`` split, and the scratch CNN (the student) trains on train + val1 with their true labels
plus those teacher-labelled faces, early-stopping on val2 (true labels).

The student is reported as its own model (``distilled``): it has seen more faces, and labels
from a model pretrained on ImageNet, so it does not follow the study's from-scratch protocol.

Lineage: the teacher must have been trained on the current split table (its training info's
``split_id``), the targets carry that ``split_id`` and the teacher's identity, and the student
refuses targets of another split table or on faces outside ``unused``. A face of ``test`` is never
a target (asserted where the targets are made and again where they are used).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from age_gender.lineage import SPLIT_COLUMN, ActionableError, LineageError, short, splits_split_id
from age_gender.training import FaceArrays, select_split, split_rows

#: The split whose faces the teacher labels. Never ``test``.
UNLABELLED_SPLIT = "unused"
#: Columns of ``distill_targets``: cache row, teacher's age (years) and P(female), split id, teacher.
TARGET_COLUMNS = ("cache_index", "age", "female_prob", SPLIT_COLUMN, "teacher")
logger = logging.getLogger(__name__)
PROTOCOL_NOTE = ("NOT the study's from-scratch protocol: the student also trained on faces of the "
                 "unused split labelled by the transfer model (ImageNet-pretrained)")


def teacher_identity(info: Mapping[str, Any]) -> dict[str, Any]:
    """Who the teacher is, from its ``transfer_training_info``: backbone, input size, split id,
    train seconds, epochs and ``info_sha256`` (sha256 of the whole training info: the catalog
    reads a model and its training info at the same version, so it names the model version)."""
    digest = hashlib.sha256(json.dumps(dict(info), sort_keys=True, default=str).encode()).hexdigest()
    keys = ("model", "backbone", "pretrained", "input_size", SPLIT_COLUMN, "train_seconds", "epochs_run", "best_epoch")
    return {**{k: info.get(k) for k in keys}, "info_sha256": digest}


def check_teacher(face_splits: pd.DataFrame, info: Mapping[str, Any] | None) -> None:
    """Refuse a teacher that is missing or was trained on another split table than
    ``face_splits`` (its labels on 'unused' faces could come from a model that trained on them,
    or on today's test faces). Raises ``LineageError`` (one line with the fix)."""
    if info is None:
        raise LineageError("there is no trained transfer model to teach the student",
                           "run `kedro run --pipeline transfer` first")
    current = splits_split_id(face_splits)
    trained = info.get(SPLIT_COLUMN)
    if trained != current:
        what = "records no split id" if trained is None else f"split id {short(trained)} vs {short(current)} now"
        raise LineageError(f"the teacher transfer_model was trained on another split table ({what})",
                           "rerun `kedro run --pipeline transfer` on this split, then `kedro run --pipeline distill`")


def unlabelled_rows(face_splits: pd.DataFrame, count: int | str, seed: int) -> pd.DataFrame:
    """Rows of the ``unused`` split to label: all of them (``count`` ``"all"``), or a seeded
    uniform random subset of ``count`` (numpy ``default_rng(seed)``, without replacement; all of
    them, with a logged WARNING naming both numbers, when the split holds fewer), in cache order. Raises ``ActionableError`` when the split is
    empty (the subset is the whole non-test set: nothing is left to label)."""
    rows = face_splits[face_splits["split"].astype(str) == UNLABELLED_SPLIT]
    if rows.empty:
        raise ActionableError("face_splits has no 'unused' faces for the teacher to label (split.subset_size "
                              "takes every non-test face)", "draw a smaller split.subset_size and rerun "
                              "`kedro run --pipeline split`, or do not run distill")
    rows = split_rows(face_splits, [UNLABELLED_SPLIT])
    if count != "all" and int(count) > len(rows):
        logger.warning("distill.unlabelled_faces is %d but the unused split holds %d faces: the teacher "
                       "labels all %d (set distill.unlabelled_faces: all to ask for that)", int(count), len(rows),
                       len(rows))
    if count != "all" and int(count) < len(rows):
        chosen = np.sort(np.random.default_rng(int(seed)).choice(len(rows), int(count), replace=False))
        rows = rows.iloc[chosen].reset_index(drop=True)
    return rows


def label_faces(teacher, face_cache: Mapping[str, Any], face_splits: pd.DataFrame, info: Mapping[str, Any],
                count: int | str, seed: int, inference: Mapping[str, Any] | None) -> pd.DataFrame:
    """The teacher's predictions on faces of the ``unused`` split (``unlabelled_rows``), through
    ``reporting.predict_table`` (averaging the test-time views of ``inference``: ``age_gender.tta``).

    Returns ``distill_targets``: ``cache_index`` (int64, row of the image cache), ``age`` (float32,
    years, the teacher's), ``female_prob`` (float32, the teacher's P(female); the gender target
    convention is 1 = female), ``split_id`` and ``teacher`` (JSON of ``teacher_identity``), one row
    per face, in cache order. Raises ``LineageError`` for a teacher of another split table."""
    from age_gender.reporting import predict_table

    check_teacher(face_splits, info)
    rows = unlabelled_rows(face_splits, count, seed)
    assert not rows["split"].astype(str).eq("test").any(), "a test face would become a distillation target"
    size = int(teacher.input_shape[1])
    images = select_split(face_cache, face_splits, size, [UNLABELLED_SPLIT])
    position = pd.Series(np.arange(len(images.rows)), index=images.rows["cache_index"].to_numpy())
    chosen = images.images[position.loc[rows["cache_index"].to_numpy()].to_numpy()]
    table = predict_table(teacher, rows, chosen, inference)
    n = len(table)
    return pd.DataFrame({
        "cache_index": table["cache_index"].to_numpy(np.int64),
        "age": table["age_pred"].to_numpy(np.float32),
        "female_prob": table["female_prob"].to_numpy(np.float32),
        SPLIT_COLUMN: pd.Categorical([splits_split_id(face_splits)] * n),
        "teacher": pd.Categorical([json.dumps(teacher_identity(info), sort_keys=True, default=str)] * n),
    })


def check_targets(face_splits: pd.DataFrame, targets: pd.DataFrame) -> dict[str, Any]:
    """Refuse ``distill_targets`` made on another split table, or holding a face that is not in
    ``unused`` now (a test face must never be a target). Returns the teacher's identity (dict).
    Raises ``LineageError`` (one line with the fix)."""
    missing = [c for c in TARGET_COLUMNS if c not in targets.columns]
    if missing:
        raise LineageError(f"distill_targets lacks the columns {missing} (written by hand or an older version)",
                           "rerun `kedro run --pipeline distill`")
    if targets.empty:
        raise LineageError("distill_targets holds no face", "rerun `kedro run --pipeline distill`")
    current = splits_split_id(face_splits)
    ids = pd.unique(targets[SPLIT_COLUMN].astype(str))
    if len(ids) != 1 or ids[0] != current:
        raise LineageError(f"distill_targets were made on another split table (split id "
                           f"{', '.join(short(i) for i in ids)} vs {short(current)} now)",
                           "rerun `kedro run --pipeline distill` (it relabels the unused faces of this split)")
    split_of = face_splits.set_index("cache_index")["split"].astype(str)
    where = split_of.reindex(targets["cache_index"].to_numpy())
    outside = where[where != UNLABELLED_SPLIT]
    if len(outside):
        raise LineageError(f"distill_targets hold {len(outside)} faces outside the unused split "
                           f"({', '.join(sorted(set(outside.fillna('absent'))))})",
                           "rerun `kedro run --pipeline distill`")
    teachers = pd.unique(targets["teacher"].astype(str))
    if len(teachers) != 1:
        raise LineageError(f"distill_targets mix {len(teachers)} teachers", "rerun `kedro run --pipeline distill`")
    return json.loads(teachers[0])


def targets_key(targets: pd.DataFrame) -> str:
    """sha256 (16 hex digits) of the targets' rows and values: part of the student's checkpoint
    identity, so new targets never resume an old fit."""
    frame = targets[["cache_index", "age", "female_prob"]]
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()[:16]


def student_data(face_cache: Mapping[str, Any], face_splits: pd.DataFrame, targets: pd.DataFrame, size: int,
                 gender_targets: str = "soft") -> FaceArrays:
    """train + val1 with their true labels, followed by the teacher-labelled faces (images at
    ``size`` px, uint8; age float32 years; gender float32: the teacher's P(female) with
    ``gender_targets`` ``soft``, rounded to 0/1 with ``hard``). ``rows`` holds ``cache_index``,
    ``age``, ``gender`` (the targets used) and ``source`` (``true`` or ``teacher``)."""
    if gender_targets not in ("soft", "hard"):
        raise ValueError(f"distill.gender_targets must be soft or hard, got {gender_targets!r}")
    true = select_split(face_cache, face_splits, size, ["train", "val1"])
    unused = select_split(face_cache, face_splits, size, [UNLABELLED_SPLIT])
    position = pd.Series(np.arange(len(unused.rows)), index=unused.rows["cache_index"].to_numpy())
    order = targets.sort_values("cache_index", kind="stable")
    picked = position.loc[order["cache_index"].to_numpy()].to_numpy()
    female = order["female_prob"].to_numpy(np.float32)
    gender = (female >= 0.5).astype(np.float32) if gender_targets == "hard" else female
    age = order["age"].to_numpy(np.float32)
    rows = pd.concat([true.rows[["cache_index", "age", "gender"]].assign(source="true"),
                      pd.DataFrame({"cache_index": order["cache_index"].to_numpy(np.int64), "age": age,
                                    "gender": gender, "source": "teacher"})], ignore_index=True)
    return FaceArrays(np.concatenate([true.images, unused.images[picked]]), np.concatenate([true.age, age]),
                      np.concatenate([true.gender, gender]), rows)
