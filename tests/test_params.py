"""The parameter schemas: every wrong value or misspelt key the configuration issue lists is
refused with one line naming the parameter, the value and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from age_gender.params import (
    GROUPS,
    ParameterError,
    ScratchTraining,
    groups_read_by,
    validate_group,
    validate_parameters,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(weights_dir) -> dict:
    """conf/base's parameters as plain YAML (the weight paths pointed at the real files)."""
    params: dict = {}
    for path in sorted((REPO / "conf" / "base").glob("parameters*.yml")):
        params.update(yaml.safe_load(path.read_text()))
    weights = params["transfer"]["backbone_weights"]
    for name, value in weights.items():
        weights[name] = str(weights_dir / value.rsplit("/", 1)[-1])
    return params


def with_value(params: dict, path: str, value) -> dict:
    changed = copy.deepcopy(params)
    *parents, last = path.split(".")
    target = changed
    for key in parents:
        target = target[key]
    target[last] = value
    return changed


def refusal(params: dict, groups=None) -> str:
    with pytest.raises(ParameterError) as caught:
        validate_parameters(params, groups)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_base_parameters_are_valid_and_cover_every_group(base):
    checked = validate_parameters(base)
    assert set(checked) == set(GROUPS) == set(base)
    assert checked["scratch_training"].epochs == base["scratch_training"]["epochs"]


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("scratch_training.epochs", "abc", "scratch_training.epochs must be an integer >= 1, got 'abc'"),
    ("scratch_training.learning_rate", "fast", "scratch_training.learning_rate must be a number > 0, got 'fast'"),
    ("scratch_training.batch_size", 0, "scratch_training.batch_size must be an integer >= 1, got 0"),
    ("scratch_training.epochs", 0, "scratch_training.epochs must be an integer >= 1, got 0"),
    ("split.test_size", 0, "split.test_size must be an integer >= 1 or a number > 0 and < 1, got 0"),
    ("scratch_training.patience", 2.5, "scratch_training.patience must be an integer >= 1, got 2.5"),
    ("scratch_training.lr_schedule", "step", "scratch_training.lr_schedule must be one of 'constant', 'cosine', got 'step'"),
    ("scratch_training.age_loss", "l1", "scratch_training.age_loss must be one of 'huber', 'mae', 'mse', got 'l1'"),
    ("scratch_training.dropout", 1.0, "scratch_training.dropout must be a number >= 0 and < 1, got 1.0"),
    ("scratch_training.time_budget_minutes", 0, "scratch_training.time_budget_minutes must be a number > 0 or null, got 0"),
    ("device.mixed_precision", "bf16", "device.mixed_precision must be one of 'auto', 'none', 'float32', 'mixed_float16', 'mixed_bfloat16', got 'bf16'"),
    ("transfer.fine_tune.ema_momentum", 1.0, "transfer.fine_tune.ema_momentum must be a number > 0 and < 1 or null, got 1.0"),
    ("scratch_training.ema_momentum", "abc", "scratch_training.ema_momentum must be a number > 0 and < 1 or null, got 'abc'"),
    ("transfer.fine_tune.restore_best_weights", "no", "transfer.fine_tune.restore_best_weights must be true or false, got 'no'"),
    ("transfer.fine_tune.label_smoothing", -0.1, "transfer.fine_tune.label_smoothing must be a number >= 0 and < 1, got -0.1"),
    ("transfer.head.units", 0, "transfer.head.units must be an integer >= 1, got 0"),
    ("transfer.fine_tune.batch_size", "32", "transfer.fine_tune.batch_size must be an integer >= 1, got '32'"),
    ("transfer.hyperband.factor", 1, "transfer.hyperband.factor must be an integer >= 2, got 1"),
    ("transfer.backbone", "resnet", "transfer.backbone must be one of 'mobilenet_v2'"),
    ("transfer.head.structure", "dense", "transfer.head.structure must be one of 'dense-dense-dropout'"),
    ("scratch_search.max_candidates", 0, "scratch_search.max_candidates must be an integer >= 1 or 'all' or null, got 0"),
    ("scratch_search.grid.cnn10.conv_pairs", 9, "scratch_search.grid.cnn10.conv_pairs must be an integer >= 1 and <= 8, got 9"),
    ("ingestion.workers", 0, "ingestion.workers must be an integer >= 1 or null, got 0"),
    ("predict.model", "vgg", "predict.model must be one of 'scratch', 'transfer', got 'vgg'"),
    ("inference.flip_average", "yes", "inference.flip_average must be true or false, got 'yes'"),
    ("inference.zooms", [0.9], "inference.zooms[0] must be a number > 1 and <= 1.5, got 0.9"),
    ("inference.zooms", [1.5, 1.5], "inference: zooms lists 1.5 more than once; list each zoom once"),
    ("distill.inference.zooms", [1.1, 1.1], "distill.inference: zooms lists 1.1 more than once; list each zoom once"),
    ("inference.shift", 0.3, "inference.shift must be a number >= 0 and < 0.25, got 0.3"),
    ("device.deterministic", "yes", "device.deterministic must be true or false, got 'yes'"),
    ("evaluation.bootstrap.resamples", 50, "evaluation.bootstrap: resamples must be 0 (no intervals) or >= 100, got 50"),
    ("evaluation.bootstrap.resamples", -1, "evaluation.bootstrap.resamples must be an integer >= 0, got -1"),
    ("evaluation.bootstrap.confidence", 95, "evaluation.bootstrap.confidence must be a number > 0 and < 1, got 95"),
    ("evaluation.fairness.min_count", 0, "evaluation.fairness.min_count must be an integer >= 1, got 0"),
    ("evaluation.fairness.age_bands", [5, 10], "evaluation.fairness: age_bands must be increasing and start at 0, got [5, 10]"),
    ("evaluation.ensembles", {"both": ["scratch"]}, "evaluation.ensembles.both must be a list with at least 2 items"),
    ("evaluation.ensembles", {"both": ["scratch", "vgg"]}, "evaluation.ensembles.both[1] must be one of 'scratch', 'transfer', 'distilled', got 'vgg'"),
    ("evaluation.ensembles", {"both": ["scratch", "scratch"]}, "evaluation: ensembles.both lists scratch more than once"),
    ("evaluation.ensembles", {"transfer": ["scratch", "transfer"]}, "evaluation: ensembles.transfer: the name is taken by a model"),
    ("evaluation.ensembles", {"a-b": ["scratch", "transfer"]}, "evaluation: ensembles: 'a-b' is not a name of letters, digits and _"),
    ("export.formats", ["tflite_int4"], "export.formats[0] must be one of 'saved_model', 'tflite_float32', 'tflite_int8', 'onnx', got 'tflite_int4'"),
    ("export.check.tolerance.float32.female_prob", 2, "export.check.tolerance.float32.female_prob must be a number >= 0 and <= 1, got 2"),
    ("export.speed.repeats", 0, "export.speed.repeats must be an integer >= 1, got 0"),
])
def test_a_wrong_value_is_one_line_naming_it(base, path, value, expected):
    assert refusal(with_value(base, path, value)).startswith(expected)


def test_an_ensemble_is_switched_off_with_null(base):
    # an environment's parameters merge over conf/base's: `ensembles: {}` would keep conf/base's entry
    checked = validate_parameters(with_value(base, "evaluation.ensembles", {"ensemble": None, "e2": ["scratch", "transfer"]}))
    assert checked["evaluation"].ensembles == {"e2": ["scratch", "transfer"]}
    assert validate_parameters(with_value(base, "evaluation.ensembles", None))["evaluation"].ensembles == {}


@pytest.mark.parametrize(("path", "expected"), [
    ("scratch_training.epoch", "scratch_training.epoch is not a parameter; did you mean scratch_training.epochs?"),
    ("transfer.fine_tune.learning_rte", "transfer.fine_tune.learning_rte is not a parameter; did you mean transfer.fine_tune.learning_rate?"),
    ("scratch_search.training.epoch", "scratch_search.training.epoch is not a parameter; did you mean scratch_search.training.epochs?"),
    ("scratch_trainin", "scratch_trainin is not a parameter; did you mean scratch_training?"),
])
def test_a_misspelt_key_names_the_nearest_known_one(base, path, expected):
    assert refusal(with_value(base, path, 1)) == expected


def test_a_key_misspelt_in_yaml_is_reported_once_not_also_as_missing(base):
    params = copy.deepcopy(base)
    params["scratch_training"]["epoch"] = params["scratch_training"].pop("epochs")
    assert refusal(params) == "scratch_training.epoch is not a parameter; did you mean scratch_training.epochs?"


def test_a_missing_key_says_what_it_must_be(base):
    params = copy.deepcopy(base)
    del params["split"]["seed"]
    assert refusal(params) == "split.seed is missing; it must be an integer >= 0"


def test_every_problem_is_listed_on_the_one_line(base):
    params = with_value(with_value(base, "scratch_training.epochs", 0), "split.test_size", "x")
    message = refusal(params)
    assert "scratch_training.epochs" in message and "split.test_size" in message


def test_only_the_groups_asked_for_are_checked_but_unknown_top_level_keys_always(base):
    params = with_value(base, "predict.min_face", 0)
    validate_parameters(params, ["split", "scratch_training"])
    assert "predict.min_face" in refusal(params, ["predict"])
    assert refusal({**base, "photo": "x"}, ["split"]) == "photo is not a parameter; did you mean photos?"
    validate_parameters({**base, "photos": "/some/folder", "external_faces": "x.zip"}, ["split"])


def test_overrides_are_partial_and_typed_and_checked_merged(base):
    validate_parameters(with_value(base, "scratch.training", {"epochs": 3, "learning_rate": 1e-3}))
    assert refusal(with_value(base, "scratch.training", {"epochs": 0})) == \
        "scratch.training.epochs must be an integer >= 1, got 0"
    validate_parameters(with_value(base, "scratch.training", {"time_budget_minutes": None}))  # null allowed there
    # an explicit null where the full schema refuses it is refused in an override too
    assert "scratch_search.training.epochs must be an integer >= 1, got null" in \
        refusal(with_value(base, "scratch_search.training", {"epochs": None}))


def test_the_merged_training_must_fit_each_architecture(base):
    message = refusal(with_value(base, "scratch_search.training", {"input_size": 16}))
    assert "scratch_search.grid: cnn10, cnn06, cnn19, cnn05, cnn07" in message
    assert message.endswith("have 5 conv pairs, which need an input_size >= 32 px, got 16")


def test_cross_field_rules(base, tmp_path):
    assert "train + val1 + val2 must sum to 1, got 1.1" in \
        refusal(with_value(base, "split.fractions", {"train": 0.8, "val1": 0.1, "val2": 0.2}))
    assert "split_point must be <= conv_pairs (3), got 4" in refusal(
        with_value(base, "scratch.architecture", {"conv_pairs": 3, "dense_layers": 1, "dense_units": 8, "split_point": 4}))
    assert "units_min (600) must be <= units_max (512)" in refusal(with_value(base, "transfer.hyperband.units_min", 600))
    assert "input_size 64 is below what xception accept" in refusal(with_value(base, "transfer.input_size", 64))
    missing = str(tmp_path / "nothing.weights.h5")
    assert f"transfer: backbone_weights.mobilenet_v2 names no file: '{missing}'" in refusal(
        with_value(base, "transfer.backbone_weights.mobilenet_v2", missing))
    assert "age_band_edges must increase strictly" in refusal(with_value(base, "split.age_band_edges", [0, 5, 5, 200]))


def test_grid_candidates_take_builder_options_but_no_null(base):
    grid = {"a": {"conv_pairs": 2, "dense_layers": 1, "dense_units": 8, "split_point": 1, "cross_stitch": "dense"}}
    checked = validate_parameters(with_value(base, "scratch_search.grid", grid), ["scratch_search"])
    assert checked["scratch_search"].grid["a"].model_dump(exclude_unset=True)["cross_stitch"] == "dense"
    grid["a"]["cross_stitch"] = None
    assert "scratch_search.grid.a.cross_stitch must be one of 'none', 'conv', 'dense', 'both', got null" in \
        refusal(with_value(base, "scratch_search.grid", grid))
    assert "scratch_search.grid.bad-name" in refusal(with_value(base, "scratch_search.grid", {"bad-name": grid["a"] | {"cross_stitch": "none"}}))


def test_models_hold_no_defaults():
    for name, model in GROUPS.items():
        optional = [key for key, field in model.model_fields.items() if not field.is_required()]
        if name in ("scratch", "scratch_search"):
            continue  # their `training` is a partial override by design; the group keys are required
        assert optional == [], f"{name} has defaults for {optional}: defaults live in conf/base"
    assert all(f.is_required() for f in GROUPS["scratch"].model_fields.values())
    assert all(f.is_required() for f in GROUPS["scratch_search"].model_fields.values())


def test_validate_group_returns_an_immutable_typed_model(base):
    model = validate_group("scratch_training", base["scratch_training"])
    assert isinstance(model, ScratchTraining) and model.loss_weights.gender == 1.0
    with pytest.raises(ValueError):
        model.epochs = 3


def test_choices_match_the_model_code():
    from typing import get_args

    from age_gender.models import BACKBONES, HEAD_STRUCTURES
    from age_gender.params import BACKBONE_MIN_SIZE, BackboneName, HeadStructure

    assert set(get_args(BackboneName)) == set(BACKBONES)
    assert BACKBONE_MIN_SIZE == {name: spec.min_size for name, spec in BACKBONES.items()}
    assert set(get_args(HeadStructure)) == set(HEAD_STRUCTURES)


def test_groups_read_by_a_pipeline():
    from kedro.pipeline import Pipeline, node

    def f(*args):
        return 1

    pipeline = Pipeline([node(f, ["face_cache", "params:scratch", "params:transfer.head"], "x"),
                         node(f, ["params:device"], "y")])
    assert sorted(groups_read_by(pipeline)) == ["device", "scratch", "scratch_training", "transfer"]


def test_kedro_validates_a_node_annotated_with_a_schema_with_the_same_line(base):
    """Kedro 1.7 validates `params:` inputs of nodes typed with a pydantic model; the schemas work
    that way too and Kedro's error carries the one-line message."""
    from kedro.pipeline import Pipeline, node
    from kedro.validation.exceptions import ParameterValidationError
    from kedro.validation.parameter_validator import ParameterValidator

    def train(training: ScratchTraining) -> int:
        return training.epochs

    validator = ParameterValidator({"p": Pipeline([node(train, "params:scratch_training", "out")])})
    validated = validator.validate_raw_params(base)
    assert isinstance(validated["scratch_training"], ScratchTraining)
    with pytest.raises(ParameterValidationError, match="scratch_training.epochs must be an integer >= 1, got 'abc'"):
        validator.validate_raw_params(with_value(base, "scratch_training.epochs", "abc"))


def test_external_datasets_are_catalog_names_each_listed_once():
    from age_gender.params import ParameterError, validate_group

    assert validate_group("external", {"overlap": "drop", "datasets": ["fairface", "utk_copy"]}).datasets == [
        "fairface", "utk_copy"]
    with pytest.raises(ParameterError, match="datasets lists fairface more than once"):
        validate_group("external", {"overlap": "drop", "datasets": ["fairface", "fairface"]})
    with pytest.raises(ParameterError, match=r"external\.datasets\[0\] must be a string made of letters"):
        validate_group("external", {"overlap": "drop", "datasets": ["../x"]})
