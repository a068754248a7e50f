"""Training machinery shared by the scratch and transfer pipelines: data selection, the input
pipeline (batches sliced from the cached arrays on any Keras backend, or ``tf.data`` on
TensorFlow), Keras augmentation layers, device set-up, and a resumable ``fit`` with early
stopping whose state survives an interrupted run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


# --- data ------------------------------------------------------------------------------------


@dataclass
class FaceArrays:
    """Images (uint8, N x S x S x 3) with their labels, in one split or a union of splits."""

    images: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.age)


def cached_images(face_cache: Mapping[str, Any], size: int) -> np.ndarray:
    """The cache at ``size`` px (a partition loader or an array)."""
    key = f"{int(size)}px"
    if key not in face_cache:
        raise ValueError(f"No {key} image cache; cached sizes are {sorted(face_cache)}. Add {size} "
                         f"to ingestion.image_sizes and rerun `kedro run --pipeline ingestion`.")
    value = face_cache[key]
    return value() if callable(value) else value


def split_rows(face_splits: pd.DataFrame, splits: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``face_splits`` in ``splits``, in cache order (ascending ``cache_index``),
    index reset. The one definition of "rows of split X": images, labels, cached features and
    predictions of a split all follow this order.

    Raises ValueError (naming the fix) when the selection is empty."""
    rows = face_splits[face_splits["split"].isin(list(splits))].sort_values("cache_index", kind="stable")
    if rows.empty:
        raise ValueError(f"Split(s) {list(splits)} are empty; run `kedro run --pipeline split` first "
                         f"or check split parameters.")
    return rows.reset_index(drop=True)


def select_split(face_cache: Mapping[str, Any], face_splits: pd.DataFrame, size: int,
                 splits: list[str] | tuple[str, ...]) -> FaceArrays:
    """Rows of ``face_splits`` in ``splits`` (``split_rows``) with their images from the cache at
    ``size`` (uint8, N x size x size x 3) and labels (float32: age in years, gender 1 = female)."""
    from age_gender.lineage import check_same_ingestion  # refuse splits of another ingestion

    check_same_ingestion(face_cache, face_splits)
    rows = split_rows(face_splits, splits)
    images = cached_images(face_cache, size)
    index = rows["cache_index"].to_numpy()
    if index.max() >= len(images):
        raise ValueError("face_splits points past the image cache: rerun ingestion and split together.")
    return FaceArrays(np.ascontiguousarray(images[index]), rows["age"].to_numpy(np.float32),
                      rows["gender"].to_numpy(np.float32), rows)


def augmentation(params: Mapping[str, Any] | None, seed: int):
    """The study's augmentation as Keras preprocessing layers (None when switched off). With
    ``single_resampling`` the mirror, shift, zoom and rotation are one affine map resampled once
    (``models.RandomAffine``: sharper, one transform's work instead of three) instead of Keras's
    four layers in a row."""
    import keras

    if not params or not params.get("enabled", True):
        return None
    layers = keras.layers
    steps = []
    if params.get("single_resampling", False):
        from age_gender.models import RandomAffine

        steps.append(RandomAffine(params.get("flip", True), params.get("shift", 0), params.get("zoom", 0),
                                  params.get("rotation_degrees", 0), seed=seed, name="random_affine"))
    else:
        if params.get("flip", True):
            steps.append(layers.RandomFlip("horizontal", seed=seed))
        if params.get("shift", 0):
            steps.append(layers.RandomTranslation(params["shift"], params["shift"], fill_mode="reflect",
                                                  seed=seed + 1))
        if params.get("zoom", 0):
            steps.append(layers.RandomZoom((-params["zoom"], 0.0), fill_mode="reflect", seed=seed + 2))
        if params.get("rotation_degrees", 0):
            steps.append(layers.RandomRotation(params["rotation_degrees"] / 360.0, fill_mode="reflect",
                                               seed=seed + 3))
    if params.get("contrast", 0):
        steps.append(layers.RandomContrast(params["contrast"], seed=seed + 4))
    if keras.backend.backend() == "jax":
        # Keras marks its random affine layers (translation, zoom, rotation) as not XLA-compilable
        # (true of TensorFlow's ImageProjectiveTransform), and one such layer makes `compile` drop
        # jit_compile for the WHOLE model: on JAX, whose transform is jax.scipy's map_coordinates
        # and compiles, that ran the H200's train step op by op at 32 images/s with the GPU 2 % busy.
        for layer in steps:
            layer.supports_jit = True
    return keras.Sequential(steps, name="augmentation") if steps else None


def keras_backend() -> str:
    """The Keras backend in use: ``tensorflow`` (the default), ``jax`` or ``torch`` (``KERAS_BACKEND``)."""
    import keras

    return keras.backend.backend()


def _array_batches_class():
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        """Batches sliced from in-memory arrays, for any Keras backend.

        Images stay uint8 (the model casts them on its device: 4x less to copy than float32);
        targets are ``{"age": (B, 1) float32, "gender": (B, 1) float32}``. With ``shuffle`` each
        epoch visits the rows in a new seeded order; ``augment`` (Keras layers) is applied per
        batch here, on the backend's default device: prefer putting augmentation inside the model
        (``build_multitask_cnn(augmentation=...)``), where it is compiled with the train step.
        """

        def __init__(self, data: FaceArrays, batch_size: int, shuffle: bool, seed: int, augment=None,
                     steps: int | None = None, **kwargs):
            super().__init__(**kwargs)
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            if len(data) == 0:
                raise ValueError("make_dataset got no images: the split is empty")
            self.images, self.batch_size, self.shuffle, self.augment = data.images, int(batch_size), shuffle, augment
            self.targets = {"age": data.age.reshape(-1, 1).astype(np.float32),
                            "gender": data.gender.reshape(-1, 1).astype(np.float32)}
            self.rng = np.random.default_rng(seed)
            self.steps, self.rows = steps, len(data)
            self.order = np.arange(self.rows)
            self._new_order()

        def _new_order(self):
            n = self.rows
            if self.steps:  # a fixed number of batches, cycling through the rows (benchmarks)
                need = self.steps * self.batch_size
                reps = -(-need // n)
                self.order = np.concatenate([self.rng.permutation(n) if self.shuffle else np.arange(n)
                                             for _ in range(reps)])[:need]
            elif self.shuffle:
                self.order = self.rng.permutation(n)

        def __len__(self) -> int:
            return self.steps or -(-len(self.order) // self.batch_size)

        def __getitem__(self, index):
            rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
            if not self.steps and not self.shuffle:
                rows = slice(int(rows[0]), int(rows[-1]) + 1)  # contiguous: a view, no copy
            else:
                rows = np.sort(rows)  # gathers in memory order (the batch is a set: order is free)
            images = self.images[rows]
            if self.augment is not None:
                import keras

                images = keras.ops.convert_to_numpy(self.augment(images.astype(np.float32), training=True))
            return images, {name: value[rows] for name, value in self.targets.items()}

        def on_epoch_end(self):
            if self.shuffle:
                self._new_order()

    return ArrayBatches


def augmentation_in_model() -> bool:
    """Where the augmentation layers belong on the current backend.

    True (JAX, PyTorch): at the start of the model (``build_multitask_cnn(augmentation=...)``,
    ``build_transfer_model(..., augmentation)``), compiled into the train step and run on the GPU;
    give ``make_dataset`` no ``augment``. False (TensorFlow): in ``make_dataset``'s ``tf.data`` map,
    in parallel on the CPU; TensorFlow's affine transforms are not XLA-compilable, so inside the
    model they would make Keras drop ``jit_compile`` for the whole model.
    """
    return keras_backend() != "tensorflow"


def make_dataset(data: FaceArrays, batch_size: int, *, shuffle: bool, seed: int,
                 augment=None, cache_in_memory: bool = True, pipeline: str = "auto",
                 steps: int | None = None, workers: int = 1):
    """Training or validation batches over cached uint8 arrays.

    ``pipeline``: ``tf.data`` (TensorFlow backend only: shuffle, batch, augment in parallel,
    prefetch), ``arrays`` (a ``keras.utils.PyDataset`` slicing the arrays, any backend), or
    ``auto``: ``tf.data`` on TensorFlow, ``arrays`` elsewhere. Images are uint8 until the model
    (or ``augment``) casts them; targets ``{"age", "gender"}`` are (B, 1) float32. ``steps`` fixes
    the number of batches per epoch, cycling through the rows (``arrays`` only, for benchmarks).
    No file is decoded per epoch.
    """
    backend = keras_backend()
    if pipeline == "auto":
        pipeline = "tf.data" if backend == "tensorflow" and not steps else "arrays"
    if pipeline == "arrays":
        return _array_batches_class()(data, batch_size, shuffle, seed, augment, steps=steps,
                                      workers=workers, use_multiprocessing=False,
                                      max_queue_size=max(10, 2 * workers))
    if pipeline != "tf.data":
        raise ValueError(f"pipeline must be auto, tf.data or arrays, got {pipeline!r}")
    if backend != "tensorflow":
        raise ValueError(f"pipeline 'tf.data' needs the TensorFlow backend (KERAS_BACKEND is {backend!r}); "
                         f"use pipeline 'arrays' or 'auto'")
    import tensorflow as tf

    targets = {"age": data.age.reshape(-1, 1), "gender": data.gender.reshape(-1, 1)}
    dataset = tf.data.Dataset.from_tensor_slices((data.images, targets))
    if cache_in_memory:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def to_float(images, labels):
        images = tf.cast(images, tf.float32)
        if augment is not None:
            images = augment(images, training=True)
        return images, labels

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --- device ---------------------------------------------------------------------------------


class SingleDevice:
    """The strategy stand-in for one device (or a Keras distribution): ``scope()`` and
    ``num_replicas_in_sync`` like a ``tf.distribute`` strategy."""

    def __init__(self, replicas: int = 1, distribution=None):
        self.num_replicas_in_sync = replicas
        self.distribution = distribution

    def scope(self):
        return nullcontext()


def accelerators() -> list[str]:
    """Names of the GPUs the current Keras backend sees (empty on CPU)."""
    backend = keras_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform in ("gpu", "cuda", "rocm")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def device_setup(params: Mapping[str, Any], cpu_bfloat16: bool = False):
    """A distribution scope, the dtype policy for the layers, and whether a GPU is used.

    Returns ``(strategy, policy, on_gpu)``; ``strategy`` has ``scope()`` and
    ``num_replicas_in_sync`` (multiply the per-device batch by it). Several GPUs: on TensorFlow
    ``tf.distribute.MirroredStrategy``; on JAX ``keras.distribution.DataParallel`` over all GPUs
    (set globally for the process; also Keras's route to several machines). One device: no
    distribution (several machines on TensorFlow: ``age_gender.multiworker``).
    ``mixed_precision: auto`` means bfloat16 compute (float32 weights and outputs) on a GPU, and
    on a CPU with AVX512-BF16 or AMX for callers that pass ``cpu_bfloat16`` (the scratch CNN:
    oneDNN runs its convolutions about 1.3x faster; fine-tuning MobileNetV2 gained 0.96-1.16x
    there, too little to trade float32 for, so it stays float32 on CPUs).
    """
    mixed = params.get("mixed_precision", "auto")
    if mixed not in ("auto", False, None, "none", "float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"device.mixed_precision must be auto, none, mixed_float16 or mixed_bfloat16; got {mixed!r}")
    backend = keras_backend()
    gpus = accelerators()
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    elif backend == "jax" and len(gpus) > 1:
        import keras

        distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices("gpu"))
        keras.distribution.set_distribution(distribution)
        strategy = SingleDevice(len(gpus), distribution)
    else:
        strategy = SingleDevice()
    if mixed == "auto":
        mixed = "mixed_bfloat16" if gpus or (cpu_bfloat16 and cpu_has_bfloat16()) else None
    elif mixed in (False, None, "none", "float32"):
        mixed = None
    logger.info("Training on %s backend, %s (%d GPU); %s; dtype policy %s", backend, "GPU" if gpus else "CPU",
                len(gpus), type(strategy).__name__, mixed or "float32")
    return strategy, mixed, bool(gpus)


def cpu_has_bfloat16() -> bool:
    """True on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX), per /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


@contextmanager
def dtype_policy(policy: str | None):
    """Build layers under ``policy`` (e.g. mixed_bfloat16), then restore the previous policy:
    for models such as ``keras.applications`` that take no dtype argument."""
    import keras

    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def set_seeds(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(int(seed))


# Threads of TensorFlow's CPU pools when ``device.deterministic`` is set: (intra-op, inter-op);
# None: (one per core, 1). A fixed intra-op count keeps the work split the same way run after run
# (a reduction split over another number of threads adds in another order); one inter-op thread
# runs independent ops in one order. Measured (benchmarks/run.py --only bench_determinism): runs
# with one intra-op thread per core and with a single thread both repeat bit for bit; the first
# is the faster on a quiet machine.
DETERMINISTIC_THREADS: tuple[int, int] | None = None


def deterministic_threads() -> tuple[int, int]:
    """(intra-op, inter-op) threads a deterministic run uses (``DETERMINISTIC_THREADS``)."""
    return DETERMINISTIC_THREADS or (os.cpu_count() or 1, 1)


def configure_determinism(device: Mapping[str, Any]) -> bool:
    """With ``device['deterministic']`` true (TensorFlow backend): TensorFlow's op determinism
    (``tf.config.experimental.enable_op_determinism``, which also makes ``tf.data`` map and
    shuffle deterministic) and fixed CPU thread pools (``deterministic_threads()``), so the same
    configuration on the same machine gives the same model. Seeds are ``set_seeds``'s job.

    Threads can only be fixed before TensorFlow starts its runtime: call this first (the project's
    ``before_pipeline_run`` hook does, before any node). Afterwards, a mismatch is logged as a
    warning (results may then differ between runs) rather than raised. Returns True when the run
    is deterministic as configured. Op determinism cannot be switched off again within a process
    (TensorFlow keeps it on); a warning says so.
    """
    import keras

    wanted = bool(device.get("deterministic", False))
    if keras.config.backend() != "tensorflow":
        if wanted:
            logger.warning("device.deterministic applies to the TensorFlow backend only; the %s backend "
                           "runs with its default kernels.", keras.config.backend())
        return False
    import tensorflow as tf
    from tensorflow.python.framework import (
        config as tf_config,  # is_op_determinism_enabled: not public
    )

    if not wanted:
        if getattr(tf_config, "is_op_determinism_enabled", lambda: False)():
            logger.warning("device.deterministic is false, but op determinism was switched on earlier "
                           "in this process and stays on.")
        return False
    tf.config.experimental.enable_op_determinism()
    intra, inter = deterministic_threads()
    current = (tf.config.threading.get_intra_op_parallelism_threads(),
               tf.config.threading.get_inter_op_parallelism_threads())
    if current != (intra, inter):
        try:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        except RuntimeError:
            logger.warning("device.deterministic: TensorFlow was started before its threads could be fixed "
                           "(intra/inter-op %s, wanted %s): results may differ between runs. Run it with "
                           "`kedro run`, or set TF_NUM_INTRAOP_THREADS=%d TF_NUM_INTEROP_THREADS=%d.",
                           current, (intra, inter), intra, inter)
            return False
    return True


def learning_rate_schedule(learning_rate: float, schedule: str | None, total_steps: int,
                           warmup_steps: int = 0):
    """A constant rate, or cosine decay to 1 % over ``total_steps`` (steadier ends of short runs),
    after ``warmup_steps`` of linear warm-up (cosine only: it keeps Adam's first, poorly scaled
    steps from wrecking pretrained weights when fine-tuning).

    The schedule lives in the optimizer's step count, so a resumed run continues on it.
    """
    import keras

    if schedule in (None, "constant"):
        return float(learning_rate)
    if schedule == "cosine":
        warmup = max(0, int(warmup_steps))
        decay = max(1, int(total_steps) - warmup)
        if warmup:
            return keras.optimizers.schedules.CosineDecay(0.0, decay, alpha=0.01, warmup_target=float(learning_rate),
                                                          warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(float(learning_rate), decay, alpha=0.01)
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")


def compile_multitask(model, learning_rate, loss_weights: Mapping[str, float],
                      age_loss: str = "huber", jit_compile: bool | str = False, *,
                      label_smoothing: float = 0.0, ema_momentum: float | None = None,
                      soft_gender_targets: bool = False) -> None:
    """Adam, Huber/MAE/MSE on age (years), binary cross-entropy on gender, per-task weights.
    ``soft_gender_targets``: the gender targets are probabilities (a teacher's), so the gender
    accuracy is measured against them rounded (``models.HardTargetBinaryAccuracy``).
    ``learning_rate`` is a float or a Keras schedule. ``label_smoothing`` (in [0, 1)) softens the
    gender targets (Szegedy et al. 2016); ``ema_momentum`` (None: off) makes Adam keep an
    exponential moving average of the weights (Polyak averaging), which ``resumable_fit``
    validates, checkpoints as the best weights and returns."""
    import keras

    from age_gender.models import AgeHuber

    losses = {"mae": keras.losses.MeanAbsoluteError(), "mse": keras.losses.MeanSquaredError(),
              "huber": AgeHuber(delta=5.0)}
    if age_loss not in losses:
        raise ValueError(f"age_loss must be one of {sorted(losses)}, got {age_loss!r}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, use_ema=ema_momentum is not None,
                                        ema_momentum=0.99 if ema_momentum is None else float(ema_momentum)),
        loss={"age": losses[age_loss], "gender": keras.losses.BinaryCrossentropy(label_smoothing=float(label_smoothing))},
        loss_weights={"age": float(loss_weights["age"]), "gender": float(loss_weights["gender"])},
        metrics={"age": [keras.metrics.MeanAbsoluteError(name="mae")],
                 "gender": [_gender_accuracy(soft_gender_targets)]},
        jit_compile=jit_compile,
    )


def _gender_accuracy(soft_targets: bool):
    import keras

    if soft_targets:
        from age_gender.models import HardTargetBinaryAccuracy

        return HardTargetBinaryAccuracy(name="accuracy")
    return keras.metrics.BinaryAccuracy(name="accuracy")


# --- resumable fit ---------------------------------------------------------------------------


def data_key(*frames: pd.DataFrame) -> str:
    """A short hash of which images, with which labels, a run trains and validates on."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(pd.util.hash_pandas_object(frame[["cache_index", "age", "gender"]], index=False).values.tobytes())
    return digest.hexdigest()[:16]


def fingerprint(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _make_callback_class():
    import keras

    class ResumableEarlyStopping(keras.callbacks.Callback):
        """Early stopping on a monitored value, restoring the best weights, with its whole state
        (model, optimizer, epoch, history, best weights, patience counter) checkpointed
        atomically after every epoch, so an interrupted run continues where it stopped.
        With ``time_budget_s``, training also stops after the first epoch that ends past the
        budget (seconds of training, summed over resumed runs)."""

        def __init__(self, directory: Path, key: str, monitor: str, patience: int,
                     min_delta: float, state: dict | None = None, time_budget_s: float | None = None,
                     swap_ema: Callable[[], None] | None = None):
            super().__init__()
            self.swap_ema = swap_ema  # with an EMA optimizer: the best weights saved are the averages
            self.directory, self.key = directory, key
            self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
            state = state or {}
            self.history: dict[str, list[float]] = state.get("history", {})
            self.best = state.get("best", float("inf"))
            self.best_epoch = state.get("best_epoch", -1)
            self.wait = state.get("wait", 0)
            self.seconds_before = float(state.get("seconds", 0.0))
            self.seconds = self.seconds_before
            self.stopped_early = False
            self.time_budget_s = time_budget_s
            self.out_of_time = bool(state.get("out_of_time", False))
            self._started = time.perf_counter()

        def on_train_begin(self, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            for name, value in logs.items():
                self.history.setdefault(name, []).append(float(value))
            self.seconds = self.seconds_before + time.perf_counter() - self._started
            current = logs.get(self.monitor)
            if current is None:
                raise KeyError(f"Early stopping monitors {self.monitor!r}, not in {sorted(logs)}")
            if not np.isfinite(current):
                self.model.stop_training = True
                return
            if current < self.best - self.min_delta:
                self.best, self.best_epoch, self.wait = float(current), epoch, 0
                tmp = self.directory / "best.tmp.weights.h5"
                if self.swap_ema:
                    self.swap_ema()
                try:
                    self.model.save_weights(tmp)
                finally:
                    if self.swap_ema:
                        self.swap_ema()
                os.replace(tmp, self.directory / "best.weights.h5")
            else:
                self.wait += 1
                if self.wait >= self.patience:
                    self.model.stop_training = True
                    self.stopped_early = True
            last_epoch = epoch + 1 >= self.params["epochs"]
            if self.time_budget_s is not None and self.seconds >= self.time_budget_s and not (
                    self.model.stop_training or last_epoch):
                logger.warning("Training stops after epoch %d: its %.0f s budget is spent", epoch + 1,
                               self.time_budget_s)
                self.model.stop_training = True
                self.out_of_time = True
            tmp = self.directory / "latest.tmp.keras"
            self.model.save(tmp)
            os.replace(tmp, self.directory / "latest.keras")
            _write_json_atomic(self.directory / "state.json", {
                "key": self.key, "epoch": epoch, "history": self.history, "best": self.best,
                "best_epoch": self.best_epoch, "wait": self.wait, "seconds": self.seconds,
                "out_of_time": self.out_of_time,
                "stopped": bool(self.model.stop_training) or last_epoch})

    return ResumableEarlyStopping


class NothingTrainedError(ValueError):
    """A fit that would train no epoch: its model must never be saved over a trained one."""


def check_epochs(epochs: Any, name: str = "epochs") -> None:
    """Raise NothingTrainedError unless ``epochs`` is an integer >= 1 (call it before any work)."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise NothingTrainedError(f"{name} must be an integer >= 1, got {epochs!r}: a fit of no epoch "
                                  f"would save an untrained model over a trained one")


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    resumed_from_epoch: int | None
    stopped_early: bool
    out_of_time: bool = False
    weights_kept: str = "best"  # "best": the best monitored epoch's; "last": the last epoch's


def resumable_fit(build: Callable[[], Any], compile_model: Callable[[Any], None], train, validation,
                  *, epochs: int, patience: int, min_delta: float, checkpoint_dir: str | Path,
                  config: Mapping[str, Any], monitor: str = "val_loss", extra_callbacks=(),
                  time_budget_s: float | None = None, restore_best_weights: bool = True) -> FitResult:
    """Build, compile and fit a model, or continue an interrupted fit of the same ``config``.

    The checkpoint directory holds the latest model (with optimizer state), the best weights and
    a JSON state; all are replaced atomically, so a kill at any moment leaves a usable
    checkpoint. A checkpoint of another configuration is discarded, not resumed.
    ``time_budget_s`` caps the seconds of training (the model keeps its best epoch so far); it is
    not part of ``config``, so a run stopped by its budget continues when rerun with a larger one.
    ``restore_best_weights``: return the weights of the epoch with the best ``monitor`` (as Keras'
    ``EarlyStopping``); False: those of the last epoch run (with an EMA optimizer, its averages).
    """
    import keras

    check_epochs(epochs)
    directory = Path(checkpoint_dir)
    key = fingerprint(config)
    state = None
    state_file = directory / "state.json"
    if state_file.exists():
        try:
            state = json.loads(state_file.read_text())
        except json.JSONDecodeError:
            state = None
        if not state or state.get("key") != key or not (directory / "latest.keras").exists():
            logger.warning("Discarding checkpoint in %s: it belongs to another configuration", directory)
            shutil.rmtree(directory)
            state = None
    directory.mkdir(parents=True, exist_ok=True)

    import age_gender.models  # noqa: F401  (custom layers for load_model)

    if state and state.get("out_of_time") and (time_budget_s is None or state.get("seconds", 0) < time_budget_s):
        state = {**state, "stopped": False, "out_of_time": False}  # more time now: carry on
    if state and not state.get("stopped"):
        model = keras.models.load_model(directory / "latest.keras")
        initial_epoch = int(state["epoch"]) + 1
        logger.info("Resuming training from %s at epoch %d", directory, initial_epoch + 1)
    elif state:
        model = keras.models.load_model(directory / "latest.keras")
        initial_epoch = epochs  # already finished: nothing left to fit
    else:
        model = build()
        compile_model(model)
        initial_epoch = 0
    ema_callbacks = []
    if getattr(model.optimizer, "use_ema", False):
        # validation sees the averaged weights; latest.keras keeps the raw ones (and the averages
        # in the optimizer state), so a resumed run continues exactly
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=False)
        ema_callbacks = [swap]
    callback = _make_callback_class()(directory, key, monitor, patience, min_delta, state, time_budget_s,
                                      swap_ema=ema_callbacks[0]._swap_variables if ema_callbacks else None)
    if initial_epoch < epochs:
        model.fit(train, validation_data=validation, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=[keras.callbacks.TerminateOnNaN(), *ema_callbacks, callback, *extra_callbacks],
                  verbose=2)
    seconds = callback.seconds
    if not callback.history:
        raise NothingTrainedError(f"The fit in {directory} trained no epoch, so there is no model to "
                                  f"save; check the epochs and time budget settings.")
    kept = "best" if restore_best_weights and (directory / "best.weights.h5").exists() else "last"
    if kept == "best":
        model.load_weights(directory / "best.weights.h5")
    elif getattr(model.optimizer, "use_ema", False):
        # the last epoch's averages (fit assigns them at its end; a finished fit loaded from
        # latest.keras still holds the raw weights, its averages in the optimizer)
        model.optimizer.finalize_variable_values(model.trainable_variables)
    state_now = json.loads(state_file.read_text()) if state_file.exists() else {}
    state_now.update(seconds=seconds, stopped=True)
    _write_json_atomic(state_file, state_now)
    return FitResult(model, callback.history, callback.best_epoch,
                     len(next(iter(callback.history.values()), [])), seconds,
                     initial_epoch if state else None, callback.stopped_early, callback.out_of_time, kept)


def budget_seconds(minutes: Any) -> float | None:
    """A ``time_budget_minutes`` parameter in seconds (None: no budget)."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
        raise ValueError(f"time_budget_minutes must be a positive number or null, got {minutes!r}")
    return float(minutes) * 60.0


def run_scope(strategy):
    return strategy.scope() if strategy is not None else nullcontext()


# --- one fit for every model ------------------------------------------------------------------

# settings that may change without restarting a fit: how long it may run, which of its weights it keeps
CHECKPOINT_FREE_KEYS = ("time_budget_minutes", "restore_best_weights")


def fit_identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings that define a checkpoint: all but the time budget (a run stopped by
    its budget continues when rerun with a larger one) and which weights the fit keeps."""
    return {k: v for k, v in settings.items() if k not in CHECKPOINT_FREE_KEYS}


def fit_model(build: Callable[[str | None, Any], Any], train: FaceArrays, val: FaceArrays, *,
              settings: Mapping[str, Any], device: Mapping[str, Any], checkpoint_dir: str | Path,
              identity: Mapping[str, Any], cpu_bfloat16: bool = False) -> FitResult:
    """Train any multi-task model on ``train``, early-stopping on ``val``: the one fit that the
    scratch CNN, the search candidates and transfer fine-tuning share.

    ``build(dtype_policy, augment)`` returns an uncompiled Keras model with ``age``/``gender``
    outputs taking uint8-valued images (N x S x S x 3); ``augment`` (Keras layers or None) goes at
    the start of the model where the backend wants it there (``augmentation_in_model``: JAX,
    PyTorch), else it runs in the input pipeline and ``build`` gets None. ``settings``: ``seed``, ``batch_size``
    (per replica), ``epochs``, ``patience``, ``min_delta``, ``learning_rate``, ``lr_schedule``,
    ``warmup_epochs`` (optional), ``loss_weights``, ``age_loss``, ``augmentation`` (optional),
    ``time_budget_minutes`` (optional, None: no budget), ``restore_best_weights`` (optional,
    default true: the best val epoch's weights; false: the last epoch's). ``identity`` names the model (its
    architecture, backbone ...); with the settings (``fit_identity``), the data key of both
    splits and the dtype policy it is the checkpoint's fingerprint: an interrupted fit of the
    same fingerprint resumes, any other is discarded.

    Raises NothingTrainedError when no epoch would be or was trained.
    """
    check_epochs(settings["epochs"])
    seed = int(settings["seed"])
    configure_determinism(device)
    set_seeds(seed)
    strategy, dtype, _ = device_setup(device, cpu_bfloat16=cpu_bfloat16)
    batch = int(settings["batch_size"]) * strategy.num_replicas_in_sync
    augment = augmentation(settings.get("augmentation"), seed)
    in_model = augmentation_in_model()
    train_ds = make_dataset(train, batch, shuffle=True, seed=seed, augment=None if in_model else augment)
    val_ds = make_dataset(val, batch, shuffle=False, seed=seed)
    epochs = settings["epochs"]

    def compile_model(model):
        per_epoch = -(-len(train) // batch)
        rate = learning_rate_schedule(float(settings["learning_rate"]), settings.get("lr_schedule"),
                                      int(epochs) * per_epoch,
                                      round(float(settings.get("warmup_epochs", 0)) * per_epoch))
        compile_multitask(model, rate, settings["loss_weights"], settings.get("age_loss", "huber"),
                          device.get("jit_compile", False), label_smoothing=settings.get("label_smoothing", 0.0),
                          ema_momentum=settings.get("ema_momentum"),
                          soft_gender_targets=bool(settings.get("soft_gender_targets", False)))

    config = {"model": dict(identity), "training": fit_identity(settings),
              "data": data_key(train.rows, val.rows), "dtype": dtype, "backend": keras_backend()}
    set_seeds(seed)
    with run_scope(strategy):
        return resumable_fit(lambda: build(dtype, augment if in_model else None), compile_model, train_ds, val_ds,
                             epochs=epochs, patience=int(settings["patience"]),
                             min_delta=float(settings["min_delta"]), checkpoint_dir=checkpoint_dir,
                             config=config, time_budget_s=budget_seconds(settings.get("time_budget_minutes")),
                             restore_best_weights=bool(settings.get("restore_best_weights", True)))


def training_info(result: FitResult, **described: Any) -> dict[str, Any]:
    """How a model trained (the ``{model}_training_info`` JSON): what ``described`` says (its name,
    architecture ...) plus seconds, epochs run, best epoch (1-based), which weights the model
    holds (``weights_kept``: best or last epoch), early stop, budget, parameter count and the
    epoch a resumed fit continued from."""
    return {**described, "train_seconds": round(result.train_seconds, 1), "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch + 1, "weights_kept": result.weights_kept,
            "stopped_early": result.stopped_early,
            "out_of_time": result.out_of_time, "parameters": int(result.model.count_params()),
            "resumed_from_epoch": result.resumed_from_epoch}
