"""Trained models as files people can ship: TensorFlow SavedModel, TensorFlow Lite (float32 and
dynamic-range int8) and ONNX, each checked against its ``.keras`` model.

Every export holds the whole path from pixels to answers: it takes ``image``, float32
(batch, S, S, 3) RGB in 0-255 (a face crop like UTKFace's, S the model's input size; cast uint8
crops with ``astype("float32")``), and returns ``age`` (years) and ``female_prob`` (probability of
'female'), each float32 (batch, 1). The model's own preprocessing (scaling, a backbone's ImageNet
normalisation) is inside it, and so is the mirror-image averaging of ``inference.flip_average``
when the export is made with it (``flip_average`` in ``export_info.json``), so an export reproduces
the evaluation's numbers.

Formats (``FORMATS``), made with Keras 3's ``Model.export``:

* ``saved_model``: ``format="tf_saved_model"``, a folder; load with ``tf.saved_model.load(path).serve(x)``.
* ``tflite_float32`` / ``tflite_int8``: ``format="litert"`` (``tf.lite.TFLiteConverter``); int8 is
  dynamic-range quantisation (``tf.lite.Optimize.DEFAULT``, int8 weights, float activations,
  float32 input and output). Run with ``ai_edge_litert`` or ``tf.lite.Interpreter``.
* ``onnx``: ``format="onnx"`` (tf2onnx), run with ``onnxruntime``.

A format that fails to convert is recorded with a one-line reason and the others still export.
Mixed-precision models (``mixed_bfloat16``) are exported from a float32 copy with the same weights:
ONNX and TFLite need float32 graphs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import DatasetError

from age_gender.datasets import SwappedFolderDataset, _remove
from age_gender.tta import Views

logger = logging.getLogger(__name__)

FORMATS = ("saved_model", "tflite_float32", "tflite_int8", "onnx")
FILES = {"saved_model": "saved_model", "tflite_float32": "model_float32.tflite",
         "tflite_int8": "model_int8.tflite", "onnx": "model.onnx"}
INFO_FILE = "export_info.json"
INPUT_NAME = "image"
OUTPUTS = ("age", "female_prob")

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def weights_fingerprint(model) -> str:
    """sha256 (64 hex digits) over a Keras model's weights (shapes, dtypes and bytes, in order):
    the identity of the weights an export was made from."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight))
        digest.update(f"{weight.path}:{value.dtype}:{value.shape}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _float32_config(config: Any) -> Any:
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" or config.get("class_name") == "FloatDTypePolicy":
            return {**config, "config": {**config.get("config", {}), "name": "float32"}}
        return {key: _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def float32_copy(model):
    """``model`` itself when every layer computes in float32, else a copy built with a float32
    dtype policy everywhere and the same (float32) weights."""
    import keras

    if compute_policy(model) == "float32":
        return model
    config = _float32_config(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def compute_policy(model) -> str:
    """The dtype policy the .keras model computes in (``float32``, ``mixed_bfloat16`` ...): the
    exports compute in float32, so a mixed model's answers differ from them by its rounding."""
    names = {getattr(layer.dtype_policy, "name", "float32") for layer in model._flatten_layers()} - {"float32"}
    return ", ".join(sorted(names)) or "float32"


def keras_runner(model, views: Views) -> Runner:
    """The .keras model itself as a runner (``predict_on_batch``, averaging the test-time
    ``views``): the reference for speed."""
    runner = views.wrap(model)

    def run(images):
        out = runner.predict_on_batch(images)
        return _pair(out["age"], out["gender"])
    return run


def serving_model(model, views: Views):
    """A functional model ``image`` (float32 0-255 RGB, (B, S, S, 3)) -> {``age``, ``female_prob``}
    around ``model`` (outputs ``age`` and ``gender``), averaging the test-time ``views``
    (``age_gender.tta``), in inference mode whatever calls it (augmentation layers inside ``model``,
    as JAX trains it, stay the identity). Raises ValueError for a model without those outputs or a
    square RGB input."""
    import keras

    shape = tuple(model.input_shape)
    output = getattr(model, "output", None)
    names = set(output) if isinstance(output, dict) else set()
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or not {"age", "gender"} <= names:
        raise ValueError(f"Cannot export {model.name}: expected a square RGB input and outputs 'age' and "
                         f"'gender', got input {shape} and outputs {sorted(names)}.")
    model = float32_copy(model)
    image = keras.Input(shape=shape[1:], dtype="float32", name=INPUT_NAME)
    # training=False is recorded in the graph: a SavedModel's `serve` calls the model without a
    # training flag, and Keras's random augmentation layers (in the model when trained on JAX)
    # default to training=True, so without it every served face would be randomly transformed
    outputs = views.wrap(model)(image, training=False)
    age = keras.layers.Identity(name="age")(outputs["age"])
    female = keras.layers.Identity(name="female_prob")(outputs["gender"])
    return keras.Model(image, {"age": age, "female_prob": female}, name=f"{model.name}_serving")


def _quiet(call: Callable[[], Any]) -> Any:
    """Run a converter, keeping its console chatter out of the run's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        return call()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"


def exported_views(info: Mapping[str, Any]) -> Views:
    """The test-time views an export was made with (``export_info.json``; exports made before
    ``test_time_augmentation`` was recorded averaged the mirror image only)."""
    return Views.from_params({**(info.get("test_time_augmentation") or {}),
                              "flip_average": bool(info.get("flip_average", False))})


def export_model(model, folder: Path, formats: Sequence[str], views: Views,
                 onnx_opset: int | None = None) -> dict[str, Any]:
    """Write every format of ``formats`` (``FORMATS``) of ``model`` into ``folder`` (file names:
    ``FILES``) and ``export_info.json``; returns that info: ``input`` and ``outputs`` (names, dtype,
    shape), ``flip_average`` and ``test_time_augmentation`` (``Views.describe``), ``weights_sha256`` (``weights_fingerprint``), ``keras_version``,
    ``tensorflow_version`` and per format ``{"file": name}`` or ``{"error": one line}``.
    Raises ValueError for an unknown format or a model ``serving_model`` refuses."""
    import keras

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"Unknown export format(s) {unknown}: choose from {list(FORMATS)}.")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"Exporting needs the TensorFlow backend (KERAS_BACKEND is {keras.backend.backend()}): "
                         "run `KERAS_BACKEND=tensorflow kedro run --pipeline export`.")
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    serving = serving_model(model, views)
    size = int(model.input_shape[1])
    results: dict[str, Any] = {}
    for fmt in formats:
        target = folder / FILES[fmt]
        start = time.perf_counter()
        try:
            if fmt == "saved_model":
                _quiet(lambda target=target: serving.export(str(target), format="tf_saved_model", verbose=False))
            elif fmt == "tflite_float32":
                _quiet(lambda target=target: serving.export(str(target), format="litert", verbose=False))
            elif fmt == "tflite_int8":
                _quiet(lambda target=target: serving.export(str(target), format="litert", verbose=False,
                                              optimizations=[tf.lite.Optimize.DEFAULT]))
            else:
                _quiet(lambda target=target: serving.export(str(target), format="onnx", verbose=False, opset_version=onnx_opset))
            results[fmt] = {"file": FILES[fmt], "seconds": round(time.perf_counter() - start, 1)}
        except Exception as error:  # a format that cannot be made: say why, keep the others
            _remove(target)
            results[fmt] = {"error": _one_line(error)}
            logger.warning("Export of %s to %s failed: %s", model.name, fmt, results[fmt]["error"])
    info = {"input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, size, size, 3],
                      "range": "RGB 0-255"},
            "outputs": {"age": "years, float32 (batch, 1)", "female_prob": "probability of female, float32 (batch, 1)"},
            "flip_average": views.flip, "test_time_augmentation": views.describe(), "weights_sha256": weights_fingerprint(model),
            "keras_dtype_policy": compute_policy(model),
            "keras_version": keras.__version__, "tensorflow_version": tf.__version__, "formats": results}
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


# --- running an export --------------------------------------------------------------------------


def _litert_interpreter(path: str):
    try:  # the maintained runtime when installed; tf.lite.Interpreter is deprecated but present in TF 2.21
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=path)
    return Interpreter(model_path=path)


def load_runner(fmt: str, path: Path) -> Runner:
    """A function float32 images (B, S, S, 3, 0-255) -> (age years (B,), female probability (B,)),
    both float64, running the export ``path`` of format ``fmt`` with its own runtime."""
    path = Path(path)
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept referenced: its variables live as long as it

        def run(images):
            out = loaded.serve(tf.constant(images, dtype=tf.float32))
            return _pair(out["age"], out["female_prob"])
        return run
    if fmt.startswith("tflite"):
        interpreter = _litert_interpreter(str(path))
        runner = interpreter.get_signature_runner()

        def run(images):
            out = runner(**{INPUT_NAME: np.asarray(images, dtype=np.float32)})
            return _pair(out["age"], out["female_prob"])
        return run
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]

        def run(images):
            out = dict(zip(names, session.run(None, {session.get_inputs()[0].name: np.asarray(images, np.float32)})))
            return _pair(out["age"], out["female_prob"])
        return run
    raise ValueError(f"Unknown export format {fmt!r}: choose from {list(FORMATS)}.")


def _pair(age, female) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(age, dtype=np.float64).reshape(-1), np.asarray(female, dtype=np.float64).reshape(-1))


def predict_with(runner: Runner, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``runner`` over uint8 or float ``images`` (N, S, S, 3) a batch at a time: (age, female_prob)."""
    ages, females = [], []
    for start in range(0, len(images), batch_size):
        age, female = runner(np.asarray(images[start:start + batch_size], dtype=np.float32))
        ages.append(age)
        females.append(female)
    if not ages:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ages), np.concatenate(females)


def images_per_second(runner: Runner, images: np.ndarray, batch_size: int, repeats: int) -> float:
    """CPU throughput of ``runner`` on ``images`` in batches of ``batch_size``: the best of
    ``repeats`` timed passes after one warm-up pass (images per second)."""
    images = np.asarray(images, dtype=np.float32)
    predict_with(runner, images[:batch_size], batch_size)  # warm-up: first-call tracing, allocation
    best = float("inf")
    for _ in range(max(1, int(repeats))):
        start = time.perf_counter()
        predict_with(runner, images, batch_size)
        best = min(best, time.perf_counter() - start)
    return round(len(images) / best, 1)


def size_bytes(path: Path) -> int:
    """The size of a file, or of every file under a folder (bytes)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- the catalog's dataset -----------------------------------------------------------------------


class ExportedModelsDataset(SwappedFolderDataset):
    """Every model's export folder (``{model}/`` with ``FILES`` and ``export_info.json``), replaced
    in whole like ``SwappedFolderDataset``: a run killed at any moment leaves the previous set of
    exports or the new one, never a mix.

    ``save({model: folder})`` moves each finished folder (written by ``export_model`` anywhere,
    e.g. a temporary folder) into a new hidden sibling and swaps it in; ``load()`` gives
    ``{model: Path}`` of the current set. Raises ``DatasetError`` when nothing was exported yet.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(path, dataset="age_gender.datasets.AtomicJSONDataset", metadata=metadata)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def load(self) -> dict[str, Path]:
        if not self._path.is_dir():
            raise DatasetError(f"No exported model at '{self._path}': run `kedro run --pipeline export` first.")
        folder = self._path.resolve()
        return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and (p / INFO_FILE).is_file()}

    def _write_item(self, folder: Path, name: str, source: Any) -> None:
        """Move one finished export folder (written by the node in a temporary folder) into the set."""
        if not (Path(source) / INFO_FILE).is_file():
            raise DatasetError(f"'{source}' is not a finished export folder (no {INFO_FILE}).")
        shutil.move(str(source), str(folder / name))
