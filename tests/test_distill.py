"""age_gender.distill refusals and data, the soft-target accuracy, and the distill / evaluation
parameters (no training here)."""

import json

import numpy as np
import pandas as pd
import pytest

from age_gender.distill import (
    check_targets,
    check_teacher,
    student_data,
    targets_key,
    unlabelled_rows,
)
from age_gender.lineage import LineageError
from age_gender.params import ParameterError, validate_parameters


def _splits(split_id="s1"):
    split = ["train"] * 6 + ["val1"] * 2 + ["val2"] * 2 + ["test"] * 3 + ["unused"] * 7
    n = len(split)
    return pd.DataFrame({"cache_index": np.arange(n), "split": split, "age": np.arange(n) + 20,
                         "gender": np.arange(n) % 2, "ingestion_id": pd.Categorical(["i"] * n),
                         "split_id": pd.Categorical([split_id] * n)})


def _targets(rows, split_id="s1"):
    n = len(rows)
    return pd.DataFrame({"cache_index": np.asarray(rows, np.int64), "age": np.full(n, 33.5, np.float32),
                         "female_prob": np.linspace(0.1, 0.9, n).astype(np.float32),
                         "split_id": pd.Categorical([split_id] * n),
                         "teacher": pd.Categorical([json.dumps({"backbone": "mobilenet_v2"})] * n)})


def test_a_teacher_of_another_split_is_refused_with_the_fix():
    with pytest.raises(LineageError, match=r"trained on another split table .*kedro run --pipeline transfer"):
        check_teacher(_splits("s1"), {"split_id": "s2", "backbone": "mobilenet_v2"})
    with pytest.raises(LineageError, match="kedro run --pipeline transfer"):
        check_teacher(_splits(), None)
    check_teacher(_splits("s1"), {"split_id": "s1"})


def test_targets_of_another_split_or_on_a_test_face_are_refused():
    splits = _splits()
    unused = splits.loc[splits["split"] == "unused", "cache_index"].tolist()
    assert check_targets(splits, _targets(unused)) == {"backbone": "mobilenet_v2"}
    with pytest.raises(LineageError, match=r"another split table .*kedro run --pipeline distill"):
        check_targets(splits, _targets(unused, "s2"))
    test_face = int(splits.loc[splits["split"] == "test", "cache_index"].iloc[0])
    with pytest.raises(LineageError, match=r"1 faces outside the unused split \(test\)"):
        check_targets(splits, _targets([*unused[:3], test_face]))
    with pytest.raises(LineageError, match="lacks the columns"):
        check_targets(splits, _targets(unused).drop(columns="teacher"))
    assert str(LineageError("a", "b")).count("\n") == 0


def test_the_unlabelled_subset_is_seeded_and_inside_unused():
    splits = _splits()
    everything = unlabelled_rows(splits, "all", 0)
    assert set(everything["split"]) == {"unused"} and len(everything) == 7
    some = unlabelled_rows(splits, 4, 42)
    assert len(some) == 4 and some["cache_index"].is_monotonic_increasing
    assert some.equals(unlabelled_rows(splits, 4, 42)) and set(some["cache_index"]) <= set(everything["cache_index"])
    assert len(unlabelled_rows(splits, 100, 0)) == 7


def test_asking_for_more_faces_than_the_unused_split_holds_says_so(caplog):
    """distill.unlabelled_faces larger than the split: all are labelled, and a log line says so."""
    splits = _splits()
    with caplog.at_level("WARNING", logger="age_gender.distill"):
        assert len(unlabelled_rows(splits, 7, 0)) == 7 and len(unlabelled_rows(splits, "all", 0)) == 7
        assert not caplog.records
        assert len(unlabelled_rows(splits, 1000, 0)) == 7
    assert [r.getMessage() for r in caplog.records] == [
        "distill.unlabelled_faces is 1000 but the unused split holds 7 faces: the teacher labels all 7 "
        "(set distill.unlabelled_faces: all to ask for that)"]


def test_student_data_adds_teacher_labels_to_train_and_val1():
    splits = _splits()
    cache = {"8px": np.arange(len(splits) * 8 * 8 * 3, dtype=np.uint32).astype(np.uint8).reshape(-1, 8, 8, 3)}
    unused = splits.loc[splits["split"] == "unused", "cache_index"].tolist()
    targets = _targets(unused[:5])
    soft = student_data(cache, splits, targets, 8, "soft")
    assert len(soft) == 8 + 5 and list(soft.rows["source"]) == ["true"] * 8 + ["teacher"] * 5
    np.testing.assert_array_equal(soft.images[8:], cache["8px"][unused[:5]])
    np.testing.assert_allclose(soft.gender[8:], targets["female_prob"])
    np.testing.assert_allclose(soft.age[8:], 33.5)
    np.testing.assert_array_equal(soft.gender[:8], splits["gender"][:8])
    hard = student_data(cache, splits, targets, 8, "hard")
    np.testing.assert_array_equal(hard.gender[8:], (targets["female_prob"] >= 0.5).astype(np.float32))
    changed = targets.assign(age=targets["age"] + 1)
    assert targets_key(changed) != targets_key(targets)  # new targets: a new checkpoint identity


def test_gender_accuracy_on_soft_targets_counts_the_side_of_the_threshold():
    import keras

    from age_gender.models import HardTargetBinaryAccuracy

    y_true, y_pred = np.array([[0.9], [0.1], [1.0], [0.7]]), np.array([[0.8], [0.2], [0.7], [0.3]])
    plain = keras.metrics.BinaryAccuracy()
    plain.update_state(y_true, y_pred)
    assert float(plain.result()) == pytest.approx(0.25)  # Keras: a soft target is never equal
    rounded = HardTargetBinaryAccuracy()
    rounded.update_state(y_true, y_pred)
    assert float(rounded.result()) == pytest.approx(0.75)
    restored = keras.metrics.deserialize(keras.metrics.serialize(rounded))
    assert isinstance(restored, HardTargetBinaryAccuracy)


@pytest.fixture(scope="module")
def base_params():
    """conf/base's parameters as plain YAML (the groups checked here hold no interpolation)."""
    import yaml

    from tests.conftest import REPO

    params: dict = {}
    for path in sorted((REPO / "conf" / "base").glob("parameters*.yml")):
        params.update(yaml.safe_load(path.read_text()))
    return params


@pytest.mark.parametrize(("group", "value", "message"), [
    ("distill", {"unlabelled_faces": 0}, "distill.unlabelled_faces must be an integer >= 1 or 'all', got 0"),
    ("distill", {"unlabelled_faces": "most"}, "distill.unlabelled_faces must be an integer >= 1 or 'all', got 'most'"),
    ("distill", {"training": {"epochs": 0}}, "distill.training.epochs must be an integer >= 1, got 0"),
    ("distill", {"gender_targets": "fuzzy"}, "distill.gender_targets must be one of 'soft', 'hard', got 'fuzzy'"),
    ("distill", {"seed": -1}, "distill.seed must be an integer >= 0, got -1"),
    ("evaluation", {"models": ["scratch", "student"]}, "evaluation.models[1] must be one of 'scratch', 'transfer', "
                                                       "'distilled', got 'student'"),
    ("evaluation", {"models": ["scratch", "scratch"]}, "evaluation: models lists scratch more than once"),
    ("evaluation", {"models": []}, "evaluation.models must be a list with at least 1 item"),
])
def test_bad_distill_and_evaluation_parameters_are_refused_in_one_line(base_params, group, value, message):
    params = {**base_params, group: {**base_params[group], **value}}
    with pytest.raises(ParameterError) as error:
        validate_parameters(params, [group])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_base_parameters_are_valid(base_params):
    checked = validate_parameters(base_params, ["distill", "evaluation", "scratch", "scratch_training"])
    assert checked["evaluation"].models == ["scratch", "transfer"] and checked["distill"].unlabelled_faces == "all"
