"""Exports of a tiny two-headed CNN: every format runs with its own runtime and gives the .keras
model's answers; failures are recorded, not fatal; the folder set is swapped in whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":  # exporting is TensorFlow-only (tested on JAX: refused)
    pytestmark = pytest.mark.skip(reason="exports need the TensorFlow backend")

from age_gender.export import (  # noqa: E402
    FILES,
    FORMATS,
    INFO_FILE,
    ExportedModelsDataset,
    export_model,
    exported_views,
    float32_copy,
    images_per_second,
    load_runner,
    predict_with,
    serving_model,
    size_bytes,
    weights_fingerprint,
)
from age_gender.models import build_multitask_cnn  # noqa: E402
from age_gender.reporting import predict_faces  # noqa: E402
from age_gender.tta import Views  # noqa: E402

# every kind of test-time view, built into every export format
VIEWS = Views(flip=True, zooms=(1.1,), shift=0.0625)


def _model(dtype=None, seed=1):
    keras.utils.set_random_seed(seed)
    return build_multitask_cnn(input_size=32, conv_pairs=2, dense_layers=1, dense_units=8, width_multiplier=0.125,
                               age_mean=30.0, age_std=15.0, dtype=dtype)


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _model()
    folder = tmp_path_factory.mktemp("export") / "scratch"
    info = export_model(model, folder, FORMATS, VIEWS)
    return model, folder, info


def test_every_format_is_written_with_its_info(exported):
    model, folder, info = exported
    assert set(info["formats"]) == set(FORMATS)
    for fmt in FORMATS:
        assert "error" not in info["formats"][fmt], info["formats"][fmt]
        assert size_bytes(folder / FILES[fmt]) > 1000
    stored = json.loads((folder / INFO_FILE).read_text())
    assert stored["weights_sha256"] == weights_fingerprint(model) and stored["flip_average"] is True
    assert stored["test_time_augmentation"] == VIEWS.describe() and exported_views(stored) == VIEWS
    assert stored["input"] == {"name": "image", "dtype": "float32", "shape": [None, 32, 32, 3], "range": "RGB 0-255"}
    # int8 weights: about a quarter of the float32 file
    assert size_bytes(folder / FILES["tflite_int8"]) < 0.5 * size_bytes(folder / FILES["tflite_float32"])


@pytest.mark.parametrize("fmt,age_tol,prob_tol", [("saved_model", 1e-3, 1e-5), ("tflite_float32", 1e-3, 1e-5),
                                                  ("onnx", 1e-3, 1e-5), ("tflite_int8", 1.0, 0.05)])
def test_each_export_gives_the_keras_answers_from_0_255_crops(exported, faces, fmt, age_tol, prob_tol):
    model, folder, _ = exported
    age0, female0 = predict_faces(model, faces, views=VIEWS)  # the evaluation's own path
    age, female = predict_with(load_runner(fmt, folder / FILES[fmt]), faces, batch_size=10)  # ragged last batch
    assert age.shape == female.shape == (24,)
    assert np.abs(age - age0).max() <= age_tol and np.abs(female - female0).max() <= prob_tol
    # the views are inside the graph: a mirrored face gives the same answer
    mirrored, _ = predict_with(load_runner(fmt, folder / FILES[fmt]), faces[:, :, ::-1], batch_size=24)
    assert np.abs(mirrored - age).max() <= max(age_tol, 1e-3)


def test_speed_is_a_positive_rate(exported, faces):
    _, folder, _ = exported
    assert images_per_second(load_runner("onnx", folder / FILES["onnx"]), faces, 8, 1) > 0


@pytest.mark.parametrize("single_resampling", [True, False])
def test_augmentation_inside_the_model_is_off_in_every_export(tmp_path, faces, single_resampling):
    # as JAX trains a model: the augmentation layers at its start (training.augmentation_in_model)
    from age_gender.training import augmentation

    keras.utils.set_random_seed(2)
    augment = augmentation({"enabled": True, "flip": True, "shift": 0.1, "zoom": 0.1, "rotation_degrees": 10,
                            "contrast": 0.0, "single_resampling": single_resampling}, 0)
    model = build_multitask_cnn(input_size=32, conv_pairs=2, dense_layers=1, dense_units=8, width_multiplier=0.125,
                                age_mean=30.0, age_std=15.0, augmentation=augment)
    info = export_model(model, tmp_path, ["saved_model", "onnx"], Views())
    assert all("error" not in value for value in info["formats"].values()), info["formats"]
    age0, _ = predict_faces(model, faces)
    for fmt in ("saved_model", "onnx"):
        age, _ = predict_with(load_runner(fmt, tmp_path / FILES[fmt]), faces, batch_size=24)
        assert np.abs(age - age0).max() <= 1e-3, fmt  # was up to 2.4 years off: served faces were augmented


def test_mixed_bfloat16_model_is_exported_from_a_float32_copy(faces):
    model = _model("mixed_bfloat16")
    copy = float32_copy(model)
    assert copy is not model and all(layer.dtype_policy.name == "float32" for layer in copy._flatten_layers())
    assert weights_fingerprint(copy) == weights_fingerprint(model)
    assert float32_copy(_model()) is not None
    serving = serving_model(model, Views())
    out = serving.predict(faces.astype("float32"), verbose=0)
    age0, _ = predict_faces(model, faces)
    assert np.abs(out["age"].reshape(-1) - age0).max() < 0.5  # bfloat16 rounding only


def test_a_format_that_fails_is_recorded_in_one_line_and_the_others_still_export(tmp_path, monkeypatch):
    import tensorflow as tf

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded\n  with a long trace")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", broken)
    info = export_model(_model(), tmp_path / "m", ["tflite_int8", "onnx"], Views())
    assert info["formats"]["tflite_int8"] == {"error": "RuntimeError: converter exploded with a long trace"}
    assert not (tmp_path / "m" / FILES["tflite_int8"]).exists()
    assert "file" in info["formats"]["onnx"] and (tmp_path / "m" / FILES["onnx"]).is_file()


def test_bad_formats_and_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown export format"):
        export_model(_model(), tmp_path / "m", ["tflite_int4"], Views())
    plain = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="expected a square RGB input and outputs 'age' and 'gender'"):
        serving_model(plain, Views())


def test_the_export_folder_set_is_swapped_in_whole(tmp_path):
    dataset = ExportedModelsDataset(str(tmp_path / "exported"))
    first = tmp_path / "a"
    first.mkdir()
    (first / INFO_FILE).write_text("{}")
    dataset.save({"scratch": first})
    assert list(dataset.load()) == ["scratch"] and not first.exists()  # moved in, nothing left behind
    unfinished = tmp_path / "b"
    unfinished.mkdir()
    with pytest.raises(Exception, match="not a finished export folder"):
        dataset.save({"transfer": unfinished})
    assert list(dataset.load()) == ["scratch"]  # the previous set is intact
    current = (tmp_path / "exported").resolve().name  # the one generation the link points at
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported")] == [current]
