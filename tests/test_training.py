import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from age_gender.models import build_multitask_cnn
from age_gender.training import FaceArrays, compile_multitask, make_dataset, resumable_fit


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    return FaceArrays(images, rng.uniform(1, 80, n).astype(np.float32),
                      rng.integers(0, 2, n).astype(np.float32), pd.DataFrame({"cache_index": range(n)}))


def _fit(tmp_path, epochs, callbacks=(), time_budget_s=None, restore_best_weights=True, **compile_options):
    data = _data()
    train = make_dataset(data, 16, shuffle=True, seed=1)
    val = make_dataset(_data(32, 1), 16, shuffle=False, seed=1)

    def build():
        return build_multitask_cnn(input_size=16, conv_pairs=2, dense_layers=1, dense_units=8,
                                   width_multiplier=0.125, split_point=1)

    return resumable_fit(build, lambda m: compile_multitask(m, 1e-3, {"age": 0.1, "gender": 1.0}, **compile_options),
                         train, val, epochs=epochs, patience=50, min_delta=0.0,
                         checkpoint_dir=tmp_path / "ckpt", config={"test": 1},
                         extra_callbacks=callbacks, time_budget_s=time_budget_s,
                         restore_best_weights=restore_best_weights)


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_where_it_stopped(tmp_path):
    import keras

    class KillAfterEpoch2(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupt()

    with pytest.raises(Interrupt):
        _fit(tmp_path, 4, callbacks=[KillAfterEpoch2()])
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert state["epoch"] == 1 and len(state["history"]["loss"]) == 2
    result = _fit(tmp_path, 4)
    assert result.resumed_from_epoch == 2
    assert len(result.history["loss"]) == 4  # 2 before the kill + 2 after
    assert not list((tmp_path / "ckpt").glob("*.tmp*"))


def test_ema_weights_are_the_ones_validated_kept_and_returned(tmp_path):
    result = _fit(tmp_path, 3, ema_momentum=0.5, label_smoothing=0.1)
    optimizer = result.model.optimizer
    assert optimizer.use_ema
    best = result.best_epoch
    val = make_dataset(_data(32, 1), 16, shuffle=False, seed=1)
    again = result.model.evaluate(val, verbose=0, return_dict=True)
    # the returned (best) weights are the averages the early stopping validated, not the raw ones
    assert again["loss"] == pytest.approx(result.history["val_loss"][best], rel=1e-4)
    raw = keras.models.load_model(tmp_path / "ckpt" / "latest.keras")
    assert not np.allclose(raw.get_weights()[0], result.model.get_weights()[0])


def test_restore_best_weights_false_keeps_the_last_epochs_averages(tmp_path):
    """The schedule's end, not the best val epoch: the last epoch's EMA weights, also when the
    finished fit is loaded again from its checkpoint (whose model holds the raw weights)."""
    val = make_dataset(_data(32, 1), 16, shuffle=False, seed=1)
    result = _fit(tmp_path, 4, ema_momentum=0.5, restore_best_weights=False)
    assert result.weights_kept == "last"
    last = result.model.evaluate(val, verbose=0, return_dict=True)["loss"]
    assert last == pytest.approx(result.history["val_loss"][-1], rel=1e-4)
    again = _fit(tmp_path, 4, ema_momentum=0.5, restore_best_weights=False)  # finished: nothing to fit
    assert again.resumed_from_epoch == 4
    assert np.allclose(again.model.get_weights()[0], result.model.get_weights()[0])
    best = _fit(tmp_path, 4, ema_momentum=0.5)  # same checkpoint: the setting is not part of its identity
    assert best.weights_kept == "best" and best.resumed_from_epoch == 4
    assert best.model.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(
        min(result.history["val_loss"]), rel=1e-4)


def test_a_resumed_fit_keeps_the_huber_delta_of_its_age_loss(tmp_path):
    """keras.losses.Huber drops delta from its config: a checkpoint came back with delta 1."""
    _fit(tmp_path, 1)
    loaded = keras.models.load_model(tmp_path / "ckpt" / "latest.keras")
    assert loaded.loss["age"].get_config()["delta"] == 5.0
    age = np.array([[20.0]], np.float32)
    assert float(loaded.loss["age"](age, age + 18.0)) == pytest.approx(5.0 * (18.0 - 2.5))


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    _fit(tmp_path, 1)
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    state["key"] = "something-else"
    (tmp_path / "ckpt" / "state.json").write_text(json.dumps(state))
    result = _fit(tmp_path, 2)
    assert result.resumed_from_epoch is None and len(result.history["loss"]) == 2


def test_input_pipeline_keeps_uint8_until_batches_and_shuffles_by_seed():
    data = _data(40)
    def ages(dataset):
        return [keras.ops.convert_to_numpy(y["age"]).ravel() for _, y in dataset]

    first = ages(make_dataset(data, 8, shuffle=True, seed=3))
    again = ages(make_dataset(data, 8, shuffle=True, seed=3))
    assert np.array_equal(np.concatenate(first), np.concatenate(again))
    x, _ = next(iter(make_dataset(data, 8, shuffle=False, seed=3)))
    x = keras.ops.convert_to_numpy(x)
    # tf.data (TensorFlow) casts in its map; the arrays path (other backends) leaves the cast to the model
    expected = "float32" if keras.backend.backend() == "tensorflow" else "uint8"
    assert x.dtype.name == expected and np.array_equal(x[0], data.images[0].astype(x.dtype))


def test_bad_loss_name_is_a_clear_error():
    model = build_multitask_cnn(input_size=16, conv_pairs=1, dense_layers=0, width_multiplier=0.125)
    with pytest.raises(ValueError, match="age_loss"):
        compile_multitask(model, 1e-3, {"age": 1, "gender": 1}, age_loss="l7")


def test_cosine_schedule_decays_and_unknown_schedule_is_an_error():
    from age_gender.training import learning_rate_schedule

    schedule = learning_rate_schedule(1e-3, "cosine", 100)
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(100)) == pytest.approx(1e-5)
    assert learning_rate_schedule(1e-3, "constant", 100) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate_schedule(1e-3, "step", 100)


def test_flip_average_scores_the_face_and_its_mirror():
    import keras

    from age_gender.reporting import predict_faces
    from age_gender.tta import Views

    # A model that reads only the left column: its mirror-averaged output is the mean of both edges.
    model = _column_model(keras)
    images = np.zeros((3, 4, 4, 3), np.uint8)
    images[:, :, 0, 0] = 10
    images[:, :, 3, 0] = 30
    plain, _ = predict_faces(model, images)
    averaged, _ = predict_faces(model, images, views=True)
    np.testing.assert_allclose(plain, 10)
    np.testing.assert_allclose(averaged, 20)
    assert Views.from_params({"flip_average": True}).flip and not Views.from_params(None).flip
    with pytest.raises(ValueError, match="inference.flip_average"):
        Views.from_params({"flip_average": "yes"})


@pytest.mark.parametrize("views", ["false", "no", 0, 1, None, (1.05, 1.1), {"flip_average": True, "zooms": [1.1]}])
def test_views_that_are_neither_views_nor_a_bool_are_refused_not_read_as_true(views):
    """``views="false"`` or a tuple of zooms used to become ``Views(flip=bool(views))``: the mirror
    image silently on and the zooms silently dropped. Both callers refuse them in one line."""
    import keras

    from age_gender.photos import PhotoPredictor
    from age_gender.reporting import predict_faces
    from age_gender.tta import Views

    model = _column_model(keras)
    with pytest.raises(ValueError, match=r"^views must be an age_gender.tta.Views or true/false, got "):
        predict_faces(model, np.zeros((2, 4, 4, 3), np.uint8), views=views)
    with pytest.raises(ValueError, match=r"^views must be an age_gender.tta.Views or true/false"):
        PhotoPredictor(model, views=views)
    assert Views.of(np.bool_(True)) == Views(flip=True) and Views.of(False) == Views()
    assert Views.of(Views(zooms=(1.1,))) == Views(zooms=(1.1,))


def _column_model(keras, size=4):
    """age = mean of the left pixel column's red channel, gender = 0."""
    inputs = keras.Input((size, size, 3))
    left = keras.layers.Lambda(lambda x: x[:, :, 0, 0])(inputs)
    age = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=1, keepdims=True), name="age")(left)
    gender = keras.layers.Lambda(lambda x: keras.ops.zeros_like(x), name="gender")(age)
    return keras.Model(inputs, {"age": age, "gender": gender})


def test_test_time_views_average_zooms_shifts_and_mirrors():
    """Each view computed by hand (reflected shifts, symmetric centre crops resized back, mirror
    images) and averaged equals what ``predict_faces`` gives with ``Views``."""
    import keras

    from age_gender.reporting import predict_faces
    from age_gender.tta import Views

    size = 8
    model = _column_model(keras, size)
    images = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    views = Views(flip=True, zooms=(1.25,), shift=0.125)
    assert views.count == 12 and Views().count == 1 and Views().wrap(model) is model
    x = images.astype("float32")
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    by_hand = [x, keras.ops.convert_to_numpy(keras.ops.image.resize(x[:, 1:7, 1:7], (size, size)))]
    by_hand += [padded[:, 1 - dy:1 - dy + size, 1 - dx:1 - dx + size] for dx, dy in ((1, 0), (-1, 0), (0, -1), (0, 1))]
    by_hand += [v[:, :, ::-1] for v in by_hand]
    expected = np.mean([v[:, :, 0, 0].mean(axis=1) for v in by_hand], axis=0)
    age, female = predict_faces(model, images, batch_size=2, views=views)  # ragged last batch
    np.testing.assert_allclose(age, expected, rtol=1e-5)
    assert np.all(female == 0)
    # mirrored faces give the same answers: the view set is symmetric
    np.testing.assert_allclose(predict_faces(model, images[:, :, ::-1], views=views)[0], age, rtol=1e-5)


@pytest.mark.parametrize("inference,message", [
    ({"flip_average": True, "zooms": [0.9]}, "inference.zooms must be factors in"),
    ({"flip_average": True, "zooms": 1.1}, "inference.zooms must be a list"),
    ({"flip_average": True, "zooms": [1.5, 1.5]}, "inference.zooms lists 1.5 more than once; list each zoom once"),
    ({"flip_average": True, "shift": 0.5}, "inference.shift must be a fraction"),
    ({"flip_average": "yes"}, "inference.flip_average must be true or false"),
])
def test_bad_test_time_views_are_refused_in_one_line(inference, message):
    from age_gender.tta import Views

    with pytest.raises(ValueError, match=message):
        Views.from_params(inference)


@pytest.mark.parametrize("zooms,message", [
    (0.5, "zooms must be a list of factors in (1, 1.5], e.g. [1.05, 1.1], got 0.5"),
    ("1.1", "zooms must be a list of factors in (1, 1.5], e.g. [1.05, 1.1], got '1.1'"),
    ((0.5,), "zooms must be factors in (1, 1.5], e.g. [1.05, 1.1], got [0.5]"),
    ((1.1, 1.2, 1.1), "zooms lists 1.1 more than once; list each zoom once"),
])
def test_predict_faces_refuses_bad_zooms_naming_its_argument(zooms, message, tmp_path):
    """The Python API names its own argument (not conf's inference.zooms), with a ValueError (not
    a TypeError from deep inside), before the model is even loaded."""
    from age_gender import predict_faces
    from age_gender.tta import zoom_factors

    face = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError) as refused:
        predict_faces(str(tmp_path / "never_loaded.keras"), face, zooms=zooms)
    assert str(refused.value) == message
    with pytest.raises(ValueError, match=r"^--zooms "):
        zoom_factors(zooms, "--zooms")
    assert zoom_factors(None) == zoom_factors([]) == () and zoom_factors([1.05, 1.1]) == (1.05, 1.1)


@pytest.mark.parametrize("setting,message", [
    ({"flip_average": "no"}, "flip_average must be True or False, got 'no'"),
    ({"flip_average": None}, "flip_average must be True or False, got None"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
    ({"images": np.zeros((64, 64), np.uint8)}, "images must be an H x W x 3 uint8 RGB array, a stack of them or a "
     "list, got an array of shape (64, 64); a grayscale image: np.repeat(gray[..., None], 3, axis=-1)"),
])
def test_predict_faces_refuses_settings_and_arrays_it_would_have_to_guess(setting, message, tmp_path):
    """``flip_average="no"`` was read as ``bool("no")``, True: the mirror image averaged in; a
    grayscale (H, W) array was read as H images of one row each."""
    from age_gender import predict_faces

    with pytest.raises(ValueError) as refused:
        predict_faces(str(tmp_path / "never_loaded.keras"), **{"images": np.zeros((64, 64, 3), np.uint8), **setting})
    assert str(refused.value) == message


def test_cosine_schedule_warms_up_linearly_then_decays():
    from age_gender.training import learning_rate_schedule

    schedule = learning_rate_schedule(1e-3, "cosine", 100, warmup_steps=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates[0] == 0.0 and abs(rates[1] - 5e-4) < 1e-9 and abs(rates[2] - 1e-3) < 1e-9
    assert rates[2] > rates[3] > rates[4] >= 1e-5 - 1e-12


def test_dtype_policy_scope_restores_the_previous_policy():
    import keras

    from age_gender.training import dtype_policy

    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
    assert layer.dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    with dtype_policy(None):
        assert keras.config.dtype_policy().name == before


def test_time_budget_stops_after_the_epoch_that_spends_it_and_a_larger_one_continues(tmp_path):
    stopped = _fit(tmp_path, epochs=4, time_budget_s=0.0)
    assert stopped.out_of_time and stopped.epochs_run == 1 and not stopped.stopped_early
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["out_of_time"]
    again = _fit(tmp_path, epochs=4, time_budget_s=0.0)  # same budget: nothing more to do
    assert again.epochs_run == 1
    finished = _fit(tmp_path, epochs=4)
    assert finished.resumed_from_epoch == 1 and finished.epochs_run == 4 and not finished.out_of_time


def test_time_budget_parameter_is_checked():
    from age_gender.training import budget_seconds

    assert budget_seconds(None) is None and budget_seconds(1.5) == 90.0
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="time_budget_minutes"):
            budget_seconds(bad)


def test_array_batches_work_on_any_backend_keep_uint8_and_shuffle_by_seed():
    data = _data(40)
    batches = make_dataset(data, 16, shuffle=True, seed=3, pipeline="arrays")
    again = make_dataset(data, 16, shuffle=True, seed=3, pipeline="arrays")
    assert len(batches) == 3  # 16 + 16 + 8
    seen = np.concatenate([batches[i][1]["age"].ravel() for i in range(len(batches))])
    assert np.array_equal(seen, np.concatenate([again[i][1]["age"].ravel() for i in range(len(again))]))
    assert sorted(seen) == sorted(data.age)  # every row once per epoch
    batches.on_epoch_end()
    assert not np.array_equal(seen, np.concatenate([batches[i][1]["age"].ravel() for i in range(3)]))
    x, y = make_dataset(data, 16, shuffle=False, seed=3, pipeline="arrays")[1]
    assert x.dtype == np.uint8 and np.array_equal(x, data.images[16:32])
    np.testing.assert_array_equal(y["gender"].ravel(), data.gender[16:32])
    fixed = make_dataset(data, 32, shuffle=True, seed=3, pipeline="arrays", steps=5)
    assert len(fixed) == 5 and all(len(fixed[i][0]) == 32 for i in range(5))  # cycles through the rows
    fixed.on_epoch_end()
    assert len(fixed[4][0]) == 32


def test_make_dataset_refuses_an_unknown_pipeline_and_an_empty_split():
    with pytest.raises(ValueError, match="pipeline must be"):
        make_dataset(_data(8), 4, shuffle=False, seed=0, pipeline="torch")
    with pytest.raises(ValueError, match="no images"):
        make_dataset(_data(0), 4, shuffle=False, seed=0, pipeline="arrays")


def test_augmentation_inside_the_model_acts_in_training_only():
    from age_gender.training import augmentation, augmentation_in_model

    aug = augmentation({"enabled": True, "flip": True, "shift": 0.2, "rotation_degrees": 10}, 0)
    model = build_multitask_cnn(input_size=16, conv_pairs=2, dense_layers=1, dense_units=8,
                                width_multiplier=0.125, augmentation=aug)
    assert model.get_layer("augmentation") is aug
    images = _data(8).images
    plain = model(images, training=False)["age"]
    np.testing.assert_allclose(np.asarray(model(images, training=False)["age"]), np.asarray(plain))
    augmented = model.get_layer("augmentation")(images.astype(np.float32), training=True)
    assert not np.allclose(np.asarray(augmented), images)
    # TensorFlow augments in tf.data; JAX and PyTorch inside the model
    assert augmentation_in_model() is (keras.backend.backend() != "tensorflow")


def test_the_python_api_and_console_default_views_are_conf_bases():
    import yaml

    from age_gender.tta import DEFAULT_ZOOMS

    base = yaml.safe_load((Path(__file__).parents[1] / "conf/base/parameters.yml").read_text())
    assert list(DEFAULT_ZOOMS) == base["inference"]["zooms"]
