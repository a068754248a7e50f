"""Speed and memory benchmarks. Prints a table and writes data/08_reporting/benchmarks.json.

``--only`` adds its results to that file's others (of the same kind: ``--quick`` or not, the same
machine); a run of another kind than the file's is refused before it starts (``--output`` elsewhere).

    python benchmarks/run.py            # everything (about 5 minutes on a 2-core CPU)
    python benchmarks/run.py --quick    # smaller samples, for a smoke check
    python benchmarks/run.py --only bench_predict --predict-model data/06_models/transfer.keras

Each benchmark runs in its own process, so its peak memory (max RSS) is its own. Throughputs
are images per second after a warm-up; ratios compare two ways of doing the same work measured
in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

AUGMENT = {"enabled": True, "flip": True, "shift": 0.1, "zoom": 0.1, "rotation_degrees": 10}
BASE = {"input_size": 64, "width_multiplier": 0.25, "batch_size": 64}
PAPER = {"input_size": 128, "width_multiplier": 1.0, "batch_size": 32}
CNN10 = {"conv_pairs": 5, "dense_layers": 3, "dense_units": 300, "split_point": 1}


def archive_path() -> Path:
    return Path(os.environ.get("UTKFACE_ARCHIVE", REPO.parent / "shared" / "data" / "UTKFace.tar.gz"))


def weights_dir() -> Path:
    return Path(os.environ.get("UTKFACE_WEIGHTS_DIR", REPO.parent / "shared" / "weights"))


def _sample(n: int, size: int):
    """n real faces at ``size`` px with labels, decoded straight from the archive."""
    import tarfile

    import numpy as np

    from age_gender.faces import decode_face, parse_utkface_name

    images, ages, genders, blobs = [], [], [], []
    with tarfile.open(archive_path()) as archive:
        for member in archive:
            label = parse_utkface_name(member.name) if member.isfile() else "dir"
            if isinstance(label, str):
                continue
            data = archive.extractfile(member).read()
            decoded = decode_face(data, (size,), 10**8)
            if decoded.arrays is None:
                continue
            images.append(decoded.arrays[size])
            ages.append(label.age)
            genders.append(label.gender)
            blobs.append((member.name.rsplit("/", 1)[-1], data))
            if len(images) == n:
                break
    return np.stack(images), np.array(ages, np.float32), np.array(genders, np.float32), blobs


def _timed_fit(model, dataset, steps: int, warmup: int = 3) -> float:
    """Images per second of ``model.train_on_batch`` over ``steps`` batches after a warm-up."""
    iterator = iter(dataset.repeat())
    for _ in range(warmup):
        x, y = next(iterator)
        model.train_on_batch(x, y)
    seen, started = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(iterator)
        model.train_on_batch(x, y)
        seen += len(x)
    return seen / (time.perf_counter() - started)


def _cnn(size, width, age_mean=33.0, dtype=None):
    from age_gender.models import build_multitask_cnn
    from age_gender.training import compile_multitask

    model = build_multitask_cnn(input_size=size, width_multiplier=width, age_mean=age_mean, dtype=dtype, **CNN10)
    compile_multitask(model, 1e-3, {"age": 0.1, "gender": 1.0})
    return model


# --- benchmarks (each runs in a child process) -------------------------------------------------


def bench_ingestion(quick: bool) -> dict:
    from age_gender.datasets import FaceSourceDataset
    from age_gender.pipelines.ingestion.nodes import check_faces, decode_faces

    params = {"image_sizes": [64, 128], "max_pixels": 25_000_000, "workers": None,
              "exclude_files": [], "face_check": {"enabled": True, "drop_suspects": False, "min_neighbors": 3}}
    started = time.perf_counter()
    source = FaceSourceDataset(str(archive_path())).load()
    if quick:
        source.members = source.members[:3000]
    read = time.perf_counter() - started
    manifest, images, _ = decode_faces(source, params)
    decoded = time.perf_counter() - started
    check_faces(images, params)
    checked = time.perf_counter() - started
    n = len(source.members)
    return {"files": n, "read_seconds": round(read, 1), "decode_seconds": round(decoded - read, 1),
            "face_check_seconds": round(checked - decoded, 1),
            "ingestion_images_per_s": round(n / decoded, 1),
            "ingestion_with_face_check_images_per_s": round(n / checked, 1)}


def bench_input_vs_model(quick: bool) -> dict:
    """Cached tf.data (with augmentation) against the model it feeds, and against the study's
    way of feeding Keras: decode and augment JPEG files from disk every epoch."""
    import keras
    import numpy as np
    import pandas as pd
    from PIL import Image

    from age_gender.training import FaceArrays, augmentation, make_dataset

    n = 1000 if quick else 4500
    size, width, batch = BASE["input_size"], BASE["width_multiplier"], BASE["batch_size"]
    images, ages, genders, blobs = _sample(n, size)
    data = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(n)}))
    dataset = make_dataset(data, batch, shuffle=True, seed=0, augment=augmentation(AUGMENT, 0))
    for _ in dataset.take(2):
        pass
    started = time.perf_counter()
    count = sum(len(x) for x, _ in dataset)
    pipeline_rate = count / (time.perf_counter() - started)

    folder = Path(tempfile.mkdtemp(prefix="jpeg_baseline_"))
    for name, blob in blobs:
        (folder / name).write_bytes(blob)
    files = [folder / name for name, _ in blobs]
    rng = np.random.default_rng(0)

    class JpegFromDisk(keras.utils.PyDataset):
        """What ImageDataGenerator.flow_from_dataframe does: open, decode, resize and augment
        each JPEG file with PIL, every epoch, in Python."""

        def __len__(self):
            return len(files) // batch

        def __getitem__(self, index):
            xs = []
            for path in files[index * batch:(index + 1) * batch]:
                image = Image.open(path).convert("RGB").resize((size, size), Image.NEAREST)
                if rng.random() < 0.5:
                    image = image.transpose(Image.FLIP_LEFT_RIGHT)
                zoom = 1 - rng.uniform(0, 0.1)
                shift = rng.uniform(-0.1, 0.1, 2) * size
                image = image.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR,
                                     translate=tuple(shift), center=(size / 2, size / 2))
                crop = int(size * zoom)
                image = image.crop((0, 0, crop, crop)).resize((size, size), Image.BILINEAR)
                xs.append(np.asarray(image, np.float32))
            sl = slice(index * batch, (index + 1) * batch)
            return np.stack(xs), {"age": ages[sl, None], "gender": genders[sl, None]}

    baseline = JpegFromDisk()
    started = time.perf_counter()
    count = sum(len(baseline[i][0]) for i in range(len(baseline)))
    baseline_rate = count / (time.perf_counter() - started)

    steps = 10 if quick else 30
    model = _cnn(size, width, float(ages.mean()))
    cached_train = _timed_fit(model, dataset, steps)
    import tensorflow as tf

    def gen():
        while True:
            for i in range(len(baseline)):
                yield baseline[i]

    spec = (tf.TensorSpec((None, size, size, 3), tf.float32),
            {"age": tf.TensorSpec((None, 1), tf.float32), "gender": tf.TensorSpec((None, 1), tf.float32)})
    jpeg_dataset = tf.data.Dataset.from_generator(gen, output_signature=spec)
    jpeg_train = _timed_fit(model, jpeg_dataset, steps)
    shutil.rmtree(folder)
    return {"images": n, "input_size": size,
            "input_pipeline_images_per_s": round(pipeline_rate, 1),
            "baseline_jpeg_images_per_s": round(baseline_rate, 1),
            "input_pipeline_vs_jpeg_ratio": round(pipeline_rate / baseline_rate, 2),
            "scratch_train_images_per_s": round(cached_train, 1),
            "scratch_train_from_jpeg_images_per_s": round(jpeg_train, 1),
            "train_speedup_cached_vs_jpeg": round(cached_train / jpeg_train, 2),
            "input_pipeline_vs_model_ratio": round(pipeline_rate / cached_train, 1)}


def bench_input_pipelines(quick: bool) -> dict:
    """On the TensorFlow backend: which input path trains the base CNN faster, ``tf.data`` with
    the augmentation in its parallel map (today's default on TensorFlow), or the backend-free
    arrays path (``keras.utils.PyDataset`` of uint8 batches) with the augmentation inside the
    model (the JAX/GPU path)? One warm-up epoch each, then one timed epoch of ``model.fit``."""
    import keras
    import pandas as pd

    from age_gender.training import FaceArrays, augmentation, make_dataset

    n = 1000 if quick else 3000
    size, width, batch = BASE["input_size"], BASE["width_multiplier"], BASE["batch_size"]
    images, ages, genders, _ = _sample(n, size)
    data = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(n)}))
    rates = {}
    for name in ("tf.data", "arrays"):
        keras.utils.set_random_seed(0)
        in_model = name == "arrays"
        from age_gender.models import build_multitask_cnn
        from age_gender.training import compile_multitask

        model = build_multitask_cnn(input_size=size, width_multiplier=width, age_mean=float(ages.mean()),
                                    augmentation=augmentation(AUGMENT, 0) if in_model else None, **CNN10)
        compile_multitask(model, 1e-3, {"age": 0.1, "gender": 1.0})
        dataset = make_dataset(data, batch, shuffle=True, seed=0, pipeline=name,
                               augment=None if in_model else augmentation(AUGMENT, 0))
        model.fit(dataset, epochs=1, verbose=0)
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        rates[name] = n / (time.perf_counter() - started)
    return {"images": n, "tfdata_augment_in_map_fit_images_per_s": round(rates["tf.data"], 1),
            "arrays_augment_in_model_fit_images_per_s": round(rates["arrays"], 1),
            "tfdata_over_arrays": round(rates["tf.data"] / rates["arrays"], 2)}


def bench_mixed_precision(quick: bool) -> dict:
    """Scratch CNN 10 at the base size: float32 against mixed bfloat16, same data, same machine
    (CPUs with AVX512-BF16 or AMX run bfloat16 convolutions natively through oneDNN)."""
    import numpy as np
    import pandas as pd

    from age_gender.training import FaceArrays, augmentation, make_dataset

    size, batch = BASE["input_size"], BASE["batch_size"]
    images, ages, genders, _ = _sample(batch * 8, size)
    data = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(len(ages))}))
    dataset = make_dataset(data, batch, shuffle=True, seed=0, augment=augmentation(AUGMENT, 0))
    steps = 5 if quick else 10
    models = {"float32": _cnn(size, BASE["width_multiplier"], float(np.mean(ages))),
              "bfloat16": _cnn(size, BASE["width_multiplier"], float(np.mean(ages)), dtype="mixed_bfloat16")}
    best = dict.fromkeys(models, 0.0)
    for _ in range(1 if quick else 3):  # alternate rounds, keep each one's best: a shared machine is noisy
        for name, model in models.items():
            best[name] = max(best[name], _timed_fit(model, dataset, steps))
    float32, bfloat16 = best["float32"], best["bfloat16"]
    # Fine-tuning MobileNetV2 (depthwise convolutions): the same comparison.
    from age_gender.training import dtype_policy

    _, fine_data = _fine_tune_data(128, 128, 32)
    fine = {}
    for policy in ("float32", "mixed_bfloat16"):
        with dtype_policy(policy):
            model = _fine_tune_model("mobilenet_v2", 128, 40)
        fine[policy] = max(_timed_fit(model, fine_data, 3 if quick else 6) for _ in range(1 if quick else 2))
    return {"scratch_train_float32_images_per_s": round(float32, 1),
            "scratch_train_mixed_bfloat16_images_per_s": round(bfloat16, 1),
            "mixed_bfloat16_vs_float32_ratio": round(bfloat16 / float32, 2),
            "fine_tune_float32_images_per_s": round(fine["float32"], 1),
            "fine_tune_mixed_bfloat16_images_per_s": round(fine["mixed_bfloat16"], 1),
            "fine_tune_mixed_bfloat16_vs_float32_ratio": round(fine["mixed_bfloat16"] / fine["float32"], 2)}


def _determinism_run(deterministic: bool, quick: bool, threads: tuple[int, int] | None = None) -> dict:
    """Scratch CNN 10 at the base size (the dtype policy ``auto`` picks, as the pipeline does) and
    MobileNetV2 fine-tuning at 128 px, each trained from a fixed seed on fixed real faces: images/s
    and a hash of the weights after, per model, and the thread pools TensorFlow ran with."""
    import hashlib

    import numpy as np
    import pandas as pd
    import tensorflow as tf

    import age_gender.training
    from age_gender.training import (
        FaceArrays,
        augmentation,
        configure_determinism,
        device_setup,
        make_dataset,
        set_seeds,
    )

    def digest(model) -> str:
        return hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()[:16]

    if threads:
        age_gender.training.DETERMINISTIC_THREADS = threads
    applied = configure_determinism({"deterministic": deterministic})  # first: before TF starts
    set_seeds(0)
    _, dtype, _ = device_setup({"mixed_precision": "auto"}, cpu_bfloat16=True)
    size, batch = BASE["input_size"], BASE["batch_size"]
    images, ages, genders, _ = _sample(batch * 8, size)
    data = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(len(ages))}))
    set_seeds(0)
    model = _cnn(size, BASE["width_multiplier"], float(np.mean(ages)), dtype=dtype)
    dataset = make_dataset(data, batch, shuffle=True, seed=0, augment=augmentation(AUGMENT, 0))
    scratch = {"images_per_s": _timed_fit(model, dataset, 8 if quick else 24), "weights": digest(model)}
    set_seeds(0)
    _, fine_data = _fine_tune_data(128, 128, 32)
    set_seeds(0)
    fine_model = _fine_tune_model("mobilenet_v2", 128, 40)
    fine = {"images_per_s": _timed_fit(fine_model, fine_data, 3 if quick else 8), "weights": digest(fine_model)}
    return {"scratch": scratch, "fine_tune": fine, "applied": applied,
            "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                        tf.config.threading.get_inter_op_parallelism_threads()]}


def _determinism_off(quick: bool) -> dict:
    return _determinism_run(False, quick)


def _determinism_on(quick: bool) -> dict:
    return _determinism_run(True, quick)


def _determinism_single(quick: bool) -> dict:
    return _determinism_run(True, quick, (1, 1))


def _determinism_inter_op_per_core(quick: bool) -> dict:
    import os

    return _determinism_run(True, quick, (os.cpu_count() or 1,) * 2)


def bench_determinism(quick: bool) -> dict:
    """``device.deterministic``: training speed of the scratch CNN (base size) and of MobileNetV2
    fine-tuning (128 px, last 40 layers) with the project's setting (``on``: TensorFlow's op
    determinism, one intra-op thread per core, one inter-op thread), with op determinism and one
    inter-op thread per core too (``inter_op_per_core``) and on single-threaded pools
    (``single``), against the default kernels (``off``); each in a fresh process (threads are fixed
    per process), alternating, best of two; and whether the two runs of each give bit-identical
    weights (both models)."""
    runs = {"off": [], "on": [], "inter_op_per_core": [], "single": []}
    for _ in range(2):
        for name in runs:
            runs[name].append(run_isolated(f"_determinism_{name}", quick))
    result = {}
    for model in ("scratch", "fine_tune"):
        speed = {name: max(r[model]["images_per_s"] for r in rows) for name, rows in runs.items()}
        result[f"{model}_images_per_s"] = {name: round(v, 1) for name, v in speed.items()}
        result[f"{model}_ratio_to_default"] = {name: round(v / speed["off"], 2) for name, v in speed.items()}
        result[f"{model}_runs_identical"] = {name: rows[0][model]["weights"] == rows[1][model]["weights"]
                                             for name, rows in runs.items()}
    result["threads"] = {name: rows[0]["threads"] for name, rows in runs.items()}
    result["deterministic_applied"] = all(r["applied"] for name in ("on", "inter_op_per_core", "single") for r in runs[name])
    return result


def bench_paper_scratch(quick: bool) -> dict:
    import numpy as np
    import pandas as pd

    from age_gender.training import FaceArrays, augmentation, make_dataset

    size, batch = PAPER["input_size"], 16 if quick else PAPER["batch_size"]
    images, ages, genders, _ = _sample(batch * 4, size)
    data = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(len(ages))}))
    dataset = make_dataset(data, batch, shuffle=True, seed=0, augment=augmentation(AUGMENT, 0))
    model = _cnn(size, PAPER["width_multiplier"], float(np.mean(ages)))
    return {"paper_scratch_train_images_per_s": round(_timed_fit(model, dataset, 2 if quick else 4, warmup=1), 2),
            "input_size": size, "batch_size": batch}


def _fine_tune_model(backbone_name: str, size: int, unfreeze_last: int):
    from age_gender.models import (
        BACKBONES,
        build_backbone,
        build_transfer_model,
        build_two_headed_top,
    )
    from age_gender.models import unfreeze_last as unfreeze_layers
    from age_gender.models.heads import build_feature_extractor
    from age_gender.training import compile_multitask

    weights = weights_dir() / BACKBONES[backbone_name].local_file
    backbone = build_backbone(backbone_name, size, str(weights))
    extractor = build_feature_extractor(backbone_name, backbone, size)
    model = build_transfer_model(extractor, build_two_headed_top(extractor.output_shape[-1], "dense-dropout", 256))
    unfreeze_layers(backbone, unfreeze_last)
    compile_multitask(model, 1e-4, {"age": 0.1, "gender": 1.0})
    return model


def _fine_tune_data(n: int, size: int, batch: int):
    import pandas as pd

    from age_gender.training import FaceArrays, augmentation, make_dataset

    images, ages, genders, _ = _sample(n, size)
    data = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(len(ages))}))
    return images, make_dataset(data, batch, shuffle=True, seed=0, augment=augmentation(AUGMENT, 0))


def bench_fine_tune_and_inference(quick: bool) -> dict:
    """Base size: MobileNetV2 at 128 px, last 40 layers trainable (conf/base), and inference of
    the exported .keras file."""
    import keras
    import numpy as np

    size, batch = 128, 32
    images, dataset = _fine_tune_data(256, size, batch)
    model = _fine_tune_model("mobilenet_v2", size, 40)
    fine = _timed_fit(model, dataset, 3 if quick else 8)
    path = Path(tempfile.mkdtemp()) / "exported.keras"
    model.save(path)
    exported = keras.models.load_model(path)
    x = images.astype(np.float32)
    exported.predict(x[:64], batch_size=64, verbose=0)  # warm-up at the measured batch size: no retrace
    started = time.perf_counter()
    exported.predict(x, batch_size=64, verbose=0)
    inference = len(x) / (time.perf_counter() - started)
    shutil.rmtree(path.parent)
    return {"fine_tune_images_per_s": round(fine, 1), "inference_images_per_s": round(inference, 1),
            "backbone": "mobilenet_v2", "input_size": size, "unfrozen_layers": 40}


def bench_paper_fine_tune(quick: bool) -> dict:
    """Paper size: Xception at 128 px with the study's last 2 layers trainable (conf/paper)."""
    size, batch = 128, 16 if quick else 32
    _, dataset = _fine_tune_data(batch * 4, size, batch)
    model = _fine_tune_model("xception", size, 2)
    return {"paper_fine_tune_images_per_s": round(_timed_fit(model, dataset, 2 if quick else 4, warmup=1), 1),
            "backbone": "xception", "input_size": size, "unfrozen_layers": 2, "batch_size": batch}


def _fine_tune_variant(variant: dict):
    """A MobileNetV2 fine-tuning model built as ``_fine_tune_model`` with one lever changed."""
    from age_gender.models import (
        BACKBONES,
        build_backbone,
        build_transfer_model,
        build_two_headed_top,
    )
    from age_gender.models import unfreeze_last as unfreeze_layers
    from age_gender.models.heads import build_feature_extractor
    from age_gender.training import compile_multitask, dtype_policy

    size = variant.get("size", 128)
    with dtype_policy(variant.get("dtype")):
        backbone = build_backbone("mobilenet_v2", size, str(weights_dir() / BACKBONES["mobilenet_v2"].local_file))
        extractor = build_feature_extractor("mobilenet_v2", backbone, size)
    model = build_transfer_model(extractor, build_two_headed_top(extractor.output_shape[-1], "dense-dropout", 256))
    unfreeze_layers(backbone, variant.get("unfreeze", 40))
    compile_multitask(model, 1e-4, {"age": 0.1, "gender": 1.0}, jit_compile=variant.get("jit", False))
    return model


TRANSFER_AUGMENT = {**AUGMENT, "single_resampling": True}  # conf/base's transfer augmentation
TRANSFER_LEVERS = {  # name -> what differs from conf/base's fine-tuning (MobileNetV2, 128 px, last 40, batch 32)
    "configured": {},
    "xla_jit": {"jit": True},
    "mixed_bfloat16": {"dtype": "mixed_bfloat16"},
    "batch_64": {"batch": 64},
    "unfreeze_20": {"unfreeze": 20},
    "unfreeze_0_frozen_forward": {"unfreeze": 0},
    "input_96px": {"size": 96},
    "four_layer_augmentation": {"augment": {"single_resampling": False}},
}


def bench_transfer_levers(quick: bool) -> dict:
    """What bounds a fine-tuning epoch of the default ``transfer`` on this CPU: images/s of the
    configured step against one lever changed at a time (alternating rounds, best of each), and
    the frozen forward pass alone (``unfreeze_0``: no backward at all) as the floor of any
    backbone-in-the-loop step. Augmentation runs in the tf.data pipeline as in training, under
    conf/base's ``device.deterministic: true`` (op determinism runs that map sequentially)."""
    import pandas as pd

    from age_gender.training import FaceArrays, augmentation, configure_determinism, make_dataset

    configure_determinism({"deterministic": True})  # as training runs (before TensorFlow starts)

    data = {}
    for size in sorted({v.get("size", 128) for v in TRANSFER_LEVERS.values()}):
        images, ages, genders, _ = _sample(192, size)
        data[size] = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(len(ages))}))
    models, datasets = {}, {}
    for name, variant in TRANSFER_LEVERS.items():
        if quick and name not in ("configured", "four_layer_augmentation"):
            continue
        models[name] = _fine_tune_variant(variant)
        datasets[name] = make_dataset(data[variant.get("size", 128)], variant.get("batch", 32), shuffle=True,
                                      seed=0, augment=augmentation({**TRANSFER_AUGMENT, **variant.get("augment", {})}, 0))
    best = dict.fromkeys(models, 0.0)
    for _ in range(1 if quick else 2):
        for name, model in models.items():
            best[name] = max(best[name], _timed_fit(model, datasets[name], 2 if quick else 5, warmup=2))
    base = best["configured"]
    return {"images_per_s": {k: round(v, 1) for k, v in best.items()},
            "ratio_to_configured": {k: round(v / base, 2) for k, v in best.items()}}


SCRATCH_LEVERS = {  # name -> what differs from conf/base's scratch CNN 10 (64 px, x0.25, bfloat16, batch 64)
    "configured": {},
    "float32": {"dtype": None},
    "xla_jit": {"jit": True},
    "batch_128": {"batch": 128},
    "avg_pooling": {"pooling": "avg"},
    "single_resampling": {"augment": {"single_resampling": True}},
}


def bench_scratch_levers(quick: bool) -> dict:
    """What bounds a training epoch of the default ``scratch`` on this CPU: images/s of the
    configured step (mixed bfloat16 where the CPU has it, as ``device.mixed_precision: auto``
    picks) against one lever changed at a time, alternating rounds, best of each; deterministic
    as conf/base trains (``device.deterministic: true``)."""
    import numpy as np
    import pandas as pd

    from age_gender.models import build_multitask_cnn
    from age_gender.training import (
        FaceArrays,
        augmentation,
        compile_multitask,
        configure_determinism,
        cpu_has_bfloat16,
        make_dataset,
    )

    configure_determinism({"deterministic": True})  # as training runs (before TensorFlow starts)

    size = BASE["input_size"]
    images, ages, genders, _ = _sample(512, size)
    data = FaceArrays(images, ages, genders, pd.DataFrame({"cache_index": range(len(ages))}))
    configured_dtype = "mixed_bfloat16" if cpu_has_bfloat16() else None
    models, datasets = {}, {}
    for name, variant in SCRATCH_LEVERS.items():
        if quick and name not in ("configured", "single_resampling"):
            continue
        model = build_multitask_cnn(input_size=size, width_multiplier=BASE["width_multiplier"],
                                    age_mean=float(np.mean(ages)), dtype=variant.get("dtype", configured_dtype),
                                    pooling=variant.get("pooling", "flatten"), **CNN10)
        compile_multitask(model, 1e-3, {"age": 0.1, "gender": 1.0}, jit_compile=variant.get("jit", False))
        models[name] = model
        datasets[name] = make_dataset(data, variant.get("batch", BASE["batch_size"]), shuffle=True, seed=0,
                                      augment=augmentation({**AUGMENT, **variant.get("augment", {})}, 0))
    best = dict.fromkeys(models, 0.0)
    for _ in range(1 if quick else 3):
        for name, model in models.items():
            best[name] = max(best[name], _timed_fit(model, datasets[name], 3 if quick else 6, warmup=2))
    base = best["configured"]
    return {"configured_dtype": configured_dtype or "float32",
            "images_per_s": {k: round(v, 1) for k, v in best.items()},
            "ratio_to_configured": {k: round(v / base, 2) for k, v in best.items()}}

def _predict_sample(per_race: int, train: int, seed: int = 0):
    """Race-balanced, seeded random archive crops for the predict benchmark (``per_race`` per
    group) and ``train`` other crops to train a small model on: (name, label, bytes) lists."""
    import tarfile

    import numpy as np

    from age_gender.faces import parse_utkface_name

    with tarfile.open(archive_path()) as archive:
        members = [(m.name, parse_utkface_name(m.name)) for m in archive if m.isfile()]
    members = [(name, label) for name, label in members if not isinstance(label, str)]
    order = np.random.default_rng(seed).permutation(len(members))
    chosen, rest, count = [], [], dict.fromkeys(range(5), 0)
    for index in order:
        name, label = members[index]
        if count[label.race] < per_race:
            count[label.race] += 1
            chosen.append(index)
        elif len(rest) < train:
            rest.append(index)
    wanted = {members[i][0] for i in chosen + rest}
    with tarfile.open(archive_path()) as archive:
        data = {m.name: archive.extractfile(m).read() for m in archive if m.name in wanted}
    pick = lambda indices: [(members[i][0], members[i][1], data[members[i][0]]) for i in indices]  # noqa: E731
    return pick(chosen), pick(rest)


def _small_model(train, size: int = 64, epochs: int = 4):
    """A scratch CNN of the project's family trained for a few epochs on ``train`` crops, with
    the pipelines' augmentation (flip, shift, zoom, rotation) inside the model."""
    import numpy as np

    from age_gender.faces import decode_face
    from age_gender.models import build_multitask_cnn
    from age_gender.training import augmentation, compile_multitask

    x = np.stack([decode_face(data, (size,), 10**8).arrays[size] for _, _, data in train])
    ages = np.array([label.age for _, label, _ in train], np.float32)
    genders = np.array([label.gender for _, label, _ in train], np.float32)
    model = build_multitask_cnn(input_size=size, width_multiplier=0.25, age_mean=float(ages.mean()),
                                augmentation=augmentation(AUGMENT, seed=0), **CNN10)
    compile_multitask(model, 1e-3, {"age": 0.1, "gender": 1.0})
    model.fit(x, {"age": ages, "gender": genders}, batch_size=64, epochs=epochs, verbose=0)
    return model


def _synthetic_photo(rng, face):
    """``face`` (a 200 px UTKFace crop) scaled to 64-200 px, rotated up to 20 degrees and pasted
    off-centre into a 640x480 scene of other content; the photo and the face's centre (px)."""
    import numpy as np
    from PIL import Image

    grid = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    scene = Image.fromarray(grid).resize((640, 480), Image.BICUBIC)
    side = int(rng.integers(64, 201))
    angle = float(rng.uniform(-20, 20))
    image = Image.fromarray(face).resize((side, side), Image.BILINEAR).convert("RGBA")
    image = image.rotate(angle, resample=Image.BILINEAR, expand=True)
    x = int(rng.integers(0, 640 - image.width))
    y = int(rng.integers(0, 480 - image.height))
    scene.paste(image, (x, y), image)
    return np.asarray(scene), (x + image.width / 2, y + image.height / 2, side)


def bench_crop_framing(quick: bool) -> dict:
    """Where UTKFace's crops put a face, the measurement behind ``age_gender.detection``'s framing
    constants: on race-balanced archive crops, MTCNN's eye midpoint and eye distance as shares of
    the crop side (on the bare 200 px crops), and the Haar box against the crop when the crop is
    pasted upright at 90-199 px into a 640x480 scene (crop side / box width, and how far the
    crop's centre lies below the box's, in box heights)."""
    import numpy as np
    from PIL import Image

    from age_gender.detection import HaarDetector, MtcnnDetector
    from age_gender.faces import decode_face

    sample, _ = _predict_sample(8 if quick else 40, 0, seed=2)
    faces = [np.asarray(decode_face(data, (200,), 10**8).arrays[200]) for _, _, data in sample]
    eyes = []
    for found in MtcnnDetector(min_face=40).detect(faces):
        if found:
            (lx, ly), (rx, ry) = found[0].eyes
            eyes.append(((lx + rx) / 400, (ly + ry) / 400, float(np.hypot(rx - lx, ry - ly)) / 200))
    rng = np.random.default_rng(3)
    haar = HaarDetector()
    boxes = []
    for face in faces:
        side = int(rng.integers(90, 200))
        scene = np.array(Image.fromarray(rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)).resize((640, 480), Image.BICUBIC))
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        scene[y:y + side, x:x + side] = np.asarray(Image.fromarray(face).resize((side, side), Image.BILINEAR))
        inside = [f for f in haar.detect([scene])[0]
                  if x <= f.box[0] + f.box[2] / 2 <= x + side and y <= f.box[1] + f.box[3] / 2 <= y + side]
        if inside:
            bx, by, bw, bh = inside[0].box
            boxes.append((side / bw, (y + side / 2 - by - bh / 2) / bh))
    eyes, boxes = np.array(eyes), np.array(boxes)

    def spread(values):
        low, mid, high = np.percentile(values, [25, 50, 75])
        return {"median": round(float(mid), 4), "iqr": [round(float(low), 4), round(float(high), 4)]}

    return {"crops": len(sample), "mtcnn_found": len(eyes), "haar_found": len(boxes),
            "eye_centre_x": spread(eyes[:, 0]), "eye_centre_y": spread(eyes[:, 1]),
            "eye_distance": spread(eyes[:, 2]), "haar_crop_scale": spread(boxes[:, 0]),
            "haar_crop_shift": spread(boxes[:, 1])}


def bench_predict(quick: bool) -> dict:
    """The predict path on synthetic photos: archive crops (race-balanced, seeded) scaled down,
    rotated up to 20 degrees and pasted off-centre into scenes go through ``PhotoPredictor``
    (detect, cut, predict) with each detector. Per detector: share of faces found (overall and per
    race group, largest gap between groups), the model's gender accuracy and age MAE on the faces
    found against the same faces' original crops, photos per second; and the ingestion face
    check's rate per group on the bare crops. The model: ``AGE_GENDER_BENCH_MODEL`` (a .keras
    path, ``--predict-model``), else a small scratch CNN trained here on other archive crops."""
    import numpy as np

    from age_gender.faces import RACES, crops_with_faces, decode_face
    from age_gender.photos import DetectSettings, PhotoPredictor, load_model
    from age_gender.reporting import predict_faces

    per_race = 12 if quick else 60
    sample, train = _predict_sample(per_race, 300 if quick else 2000)
    started = time.perf_counter()
    given = os.environ.get("AGE_GENDER_BENCH_MODEL")
    model = load_model(given) if given else _small_model(train, epochs=1 if quick else 5)
    train_seconds = round(time.perf_counter() - started, 1)
    size = int(model.input_shape[1])
    rng = np.random.default_rng(1)
    faces = [np.asarray(decode_face(data, (200,), 10**8).arrays[200]) for _, _, data in sample]
    photos, centres = zip(*(_synthetic_photo(rng, face) for face in faces))
    races = np.array([label.race for _, label, _ in sample])
    ages = np.array([label.age for _, label, _ in sample], float)
    genders = np.array([label.gender for _, label, _ in sample])
    crops = np.stack([decode_face(data, (size,), 10**8).arrays[size] for _, _, data in sample])
    crop_age, crop_female = predict_faces(model, crops, views=True)

    def scores(index, age_pred, female):
        return {"gender_accuracy": round(float(np.mean((female >= 0.5) == genders[index])), 4),
                "age_mae": round(float(np.mean(np.abs(age_pred - ages[index]))), 3)}

    result = {"faces": len(sample), "per_race_n": {RACES[r]: int((races == r).sum()) for r in range(5)},
              "model": given or f"small scratch CNN, {size} px, trained on {len(train)} other crops",
              "model_seconds": train_seconds, "on_crops": scores(np.arange(len(sample)), crop_age, crop_female),
              "photo": "640x480 scene, face 64-200 px, rotated -20..20 degrees, off-centre"}
    for name in ("mtcnn", "haar"):
        predictor = PhotoPredictor(model, DetectSettings(detector=name), views=True)
        predictor.predict(list(photos[:4]))  # warm-up: graphs traced, cascade loaded
        tick = time.perf_counter()
        rows = [r for start in range(0, len(photos), 32) for r in predictor.predict(list(photos[start:start + 32]))]
        seconds = time.perf_counter() - tick
        found, age_pred, female = [], [], []
        for i, (faces_found, (cx, cy, side)) in enumerate(zip(rows, centres)):
            near = [r for r in faces_found if abs(r["x"] + r["w"] / 2 - cx) < side / 2 and abs(r["y"] + r["h"] / 2 - cy) < side / 2]
            if near:
                found.append(i)
                age_pred.append(near[0]["age"])
                female.append(near[0]["female_prob"])
        found = np.array(found, int)
        rates = {RACES[r]: round(float(np.isin(np.flatnonzero(races == r), found).mean()), 4) for r in range(5)}
        extra = sum(len(r) for r in rows) - len(found)
        result[name] = {
            "found": round(len(found) / len(photos), 4), "found_by_race": rates,
            "largest_gap": round(max(rates.values()) - min(rates.values()), 4),
            "other_detections": int(extra),
            "on_photos": scores(found, np.array(age_pred), np.array(female)),
            "same_faces_on_crops": scores(found, crop_age[found], crop_female[found]),
            "photos_per_s": round(len(photos) / seconds, 2)}
        tick = time.perf_counter()
        checked = crops_with_faces(np.stack([np.asarray(decode_face(d, (64,), 10**8).arrays[64]) for _, _, d in sample]),
                                   detector=name)
        check_rates = {RACES[r]: round(float(checked[races == r].mean()), 4) for r in range(5)}
        result[name]["face_check_by_race"] = check_rates
        result[name]["face_check_largest_gap"] = round(max(check_rates.values()) - min(check_rates.values()), 4)
        result[name]["face_check_crops_per_s"] = round(len(sample) / (time.perf_counter() - tick), 1)
    result["mtcnn_photos_per_s"] = result["mtcnn"]["photos_per_s"]
    result["haar_photos_per_s"] = result["haar"]["photos_per_s"]
    return result

TRACKING_PIPELINES = ("scratch", "evaluation", "transfer")


def tracking_stages(store: str, model_path: str) -> dict:
    """Wall seconds of each step tracking adds to a run, in this (fresh) process, after what every
    run pays anyway (TensorFlow, Keras, Kedro, the project): importing MLflow and kedro-mlflow,
    opening the SQLite store ``store`` (creating it when absent: the first run only), starting a run,
    35 parameters one ``log_param`` each (kedro-mlflow's way) and in one ``log_batch`` (this
    project's), 200 metric points, 10 small artifacts, the Keras flavour of the model at
    ``model_path`` (MLflow's installed-packages scan, then the save and copy), ending the run."""
    import json as _json

    import keras  # noqa: F401  (every run)
    from kedro.framework.session import KedroSession  # noqa: F401

    import age_gender.models  # noqa: F401

    times: dict[str, float] = {}
    fresh = not Path(store).exists()

    def tick(name: str, since: float) -> float:
        times[name] = round(time.perf_counter() - since, 3)
        return time.perf_counter()

    model = keras.saving.load_model(model_path)
    t = time.perf_counter()
    import mlflow
    import mlflow.keras

    t = tick("import_mlflow", t)
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook  # noqa: F401

    t = tick("import_kedro_mlflow", t)
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store}"
    client = MlflowClient(uri)
    client.search_experiments()
    t = tick("create_store_first_run_only" if fresh else "open_store", t)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("stages")
    run = mlflow.start_run()
    t = tick("start_run", t)
    for i in range(35):
        mlflow.log_param(f"p{i}", i)
    t = tick("params_35_one_commit_each", t)
    client.log_batch(run.info.run_id, params=[Param(f"q{i}", str(i)) for i in range(35)])
    t = tick("params_35_one_batch", t)
    client.log_batch(run.info.run_id, metrics=[Metric(f"m{i}", 0.5, 0, step) for i in range(20) for step in range(10)])
    t = tick("metrics_200_points", t)
    artifact = Path(store).parent / "report.json"
    artifact.write_text(_json.dumps({"a": 1}))
    for i in range(10):
        client.log_artifact(run.info.run_id, str(artifact), artifact_path=f"outputs/{i}")
    t = tick("artifacts_10_small", t)
    from mlflow.utils.requirements_utils import _init_packages_to_modules_map

    _init_packages_to_modules_map()
    t = tick("keras_model_installed_packages_scan", t)
    mlflow.keras.log_model(model, name="model", pip_requirements=["age_gender"])
    t = tick("keras_model_save_and_copy", t)
    mlflow.end_run()
    tick("end_run", t)
    return times


def bench_tracking_overhead(quick: bool) -> dict:
    """Tracking's cost on real pipelines of a small real project (542 archive faces, ``--env
    smoke``: 32 px, 300 training faces, 60 test faces) in data/ of this checkout: ``scratch``,
    ``evaluation`` (of the scratch and transfer models) and ``transfer`` (backbone comparison,
    head search, Hyperband, fine-tuning), each run a fresh ``kedro run`` process with
    AGE_GENDER_TRACKING=off and =on alternately (off-on, then on-off, ...: a load that drifts hits
    both), after one tracked run that creates the SQLite store, timed apart. Per pipeline: every
    time, the medians, the added seconds (median on - median off) and the ratio; then
    :func:`tracking_stages` three times in fresh processes (medians), the breakdown of that cost.
    Wall and CPU (user + system) seconds: on a shared machine the CPU seconds vary far less.
    ``AGE_GENDER_BENCH_TRACKING_PIPELINES=scratch,evaluation`` and ``AGE_GENDER_BENCH_REPETITIONS=4``
    choose the pipelines timed and the pairs of runs (default: all three, 3; ``--quick``: two, 1)."""
    import statistics
    import subprocess
    import tarfile

    sys.path.insert(0, str(REPO))
    from tests.conftest import make_project, write_tar

    home = REPO / "data" / "benchmarks"
    home.mkdir(parents=True, exist_ok=True)
    root = make_project(Path(tempfile.mkdtemp(prefix="tracking_", dir=home)))
    members = {}
    with tarfile.open(archive_path()) as archive:
        for index, member in enumerate(archive):
            if member.isfile() and index % 40 == 0:
                members[member.name] = archive.extractfile(member).read()
    sample = write_tar(root / "sample.tar.gz", members)
    env = {**os.environ, "UTKFACE_SMOKE_ARCHIVE": str(sample), "UTKFACE_WEIGHTS_DIR": str(weights_dir()),
           "KEDRO_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    pipelines = [name for name in os.environ.get("AGE_GENDER_BENCH_TRACKING_PIPELINES", "").split(",") if name] \
        or (TRACKING_PIPELINES[:2] if quick else TRACKING_PIPELINES)
    repetitions = int(os.environ.get("AGE_GENDER_BENCH_REPETITIONS", 1 if quick else 3))
    if not set(pipelines) <= set(TRACKING_PIPELINES) or repetitions < 1:
        raise ValueError(f"AGE_GENDER_BENCH_TRACKING_PIPELINES must name some of {', '.join(TRACKING_PIPELINES)} "
                         "and AGE_GENDER_BENCH_REPETITIONS be at least 1")

    def kedro(pipeline: str, tracking: str) -> tuple[float, float]:
        """Wall seconds and CPU seconds (user + system of the run's process and its children)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kedro", "run", "--env", "smoke", "--pipeline", pipeline],
                              cwd=root, env={**env, "AGE_GENDER_TRACKING": tracking}, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"kedro run --pipeline {pipeline} (tracking {tracking}) failed: "
                               + " | ".join(done.stderr.strip().splitlines()[-3:]))
        wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    def stages(store: Path) -> dict:
        model = sorted((root / "data" / "smoke" / "06_models" / "scratch.keras").glob("*/scratch.keras"))[-1]
        code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); from run import tracking_stages; "
                f"print('STAGES', json.dumps(tracking_stages({str(store)!r}, {str(model)!r})))")
        done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
        return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("STAGES"))[7:])

    try:
        for setup in ("ingestion", "split", "scratch", "transfer"):
            kedro(setup, "off")
        first_tracked, _ = kedro("scratch", "on")  # creates mlflow.db (schema migrations) and the experiment
        times = {name: {"off": [], "on": []} for name in pipelines}
        for repetition in range(repetitions):
            for name in pipelines:
                for tracking in (("off", "on") if repetition % 2 == 0 else ("on", "off")):
                    times[name][tracking].append(kedro(name, tracking))
        store = root / "stages" / "mlflow.db"
        store.parent.mkdir()
        created = stages(store)
        measured = [stages(store) for _ in range(1 if quick else 3)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result: dict = {"first_tracked_run_seconds": round(first_tracked, 1)}
    for name, both in times.items():
        result[name] = {}
        for index, unit in enumerate(("wall", "cpu")):
            off = [t[index] for t in both["off"]]
            on = [t[index] for t in both["on"]]
            result[name].update({f"untracked_{unit}_seconds": [round(t, 1) for t in off],
                                 f"tracked_{unit}_seconds": [round(t, 1) for t in on],
                                 f"median_untracked_{unit}": round(statistics.median(off), 1),
                                 f"median_tracked_{unit}": round(statistics.median(on), 1),
                                 f"added_{unit}_seconds": round(statistics.median(on) - statistics.median(off), 1),
                                 f"paired_added_{unit}_seconds": [round(b - a, 1) for a, b in zip(off, on)]})
            result[f"{name}_tracking_overhead_{unit}_ratio"] = round(statistics.median(on) / statistics.median(off), 3)
    result["stages_median_seconds"] = {key: round(statistics.median(m[key] for m in measured), 3) for key in measured[0]}
    result["stages_spread_seconds"] = {key: [m[key] for m in measured] for key in measured[0]}
    result["store_creation_seconds"] = created["create_store_first_run_only"]
    result["pipeline"] = ("--env smoke on 542 archive faces (index % 40), a kedro CLI process per run, "
                          f"{repetitions} repetitions alternating off/on; wall and CPU (user + system) seconds")
    return result


BENCHMARKS = ("bench_ingestion", "bench_input_vs_model", "bench_input_pipelines", "bench_mixed_precision",
              "bench_determinism", "bench_paper_scratch", "bench_fine_tune_and_inference", "bench_paper_fine_tune",
              "bench_transfer_levers", "bench_scratch_levers", "bench_crop_framing", "bench_predict",
              "bench_tracking_overhead")


def _child(name: str, quick: bool, queue) -> None:
    try:
        result = globals()[name](quick)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except Exception as error:  # reported by the parent: one failed benchmark never hangs the run
        result = {"error": f"{type(error).__name__}: {error}"}
    queue.put(result)


def run_isolated(name: str, quick: bool) -> dict:
    """Run one benchmark in a fresh process; a crash or a kill (out of memory) becomes
    ``{"error": ...}`` instead of a parent waiting forever."""
    import queue as queues

    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, quick, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if not process.is_alive():
                result = {"error": f"the benchmark process died (exit code {process.exitcode})"}
                break
    process.join()
    return result


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import subprocess

        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"machine": gpu or cpu, "cpu": cpu, "gpu": gpu or None, "cores": os.cpu_count()}


def merge_report(previous: dict | None, report: dict, output: str = "the output file") -> dict:
    """``report`` (this run: ``machine()``, ``quick`` and ``results`` by benchmark name) plus the
    results in ``previous`` (the output file's contents, or None) of benchmarks this run did not
    rerun, so ``--only`` adds to a full run's file instead of wiping it. Raises ValueError (one
    line) when ``previous`` holds such results of another kind (``--quick`` or not, another machine
    or core count), or full-size results a ``--quick`` run would replace: mixing would mislabel their
    figures, replacing would lose them."""
    if not isinstance(previous, dict) or not isinstance(previous.get("results"), dict):
        return report
    kept = {name: result for name, result in previous["results"].items() if name not in report["results"]}
    quick_over_full = report.get("quick") and not previous.get("quick") and previous["results"]
    if not kept and not quick_over_full:
        return report  # every benchmark rerun, at full size or over --quick figures: the file is replaced

    def kind(r: dict) -> str:
        return f"{'--quick' if r.get('quick') else 'full-size'} results on {r.get('machine')} ({r.get('cores')} cores)"

    if any(previous.get(key) != report.get(key) for key in ("quick", "machine", "cores")):
        raise ValueError(f"{output} holds {kind(previous)} of {', '.join(sorted(previous['results']))}; this run makes "
                         f"{kind(report)}, which would mix with them or replace them: pass --output another.json "
                         f"(or move that file away)")
    return {**report, "results": {**kept, **report["results"]}}


def headline_figures(results: dict) -> dict:
    """The top-level keys of the report: every ``*_per_s``, ``*_ratio`` and
    ``speedup_cached_vs_jpeg`` figure of ``results`` (benchmark name -> its result)."""
    return {k: v for result in results.values() for k, v in result.items()
            if k.endswith(("_per_s", "_ratio", "speedup_cached_vs_jpeg"))}


def _previous_report(output: Path) -> dict | None:
    try:
        return json.loads(output.read_text())
    except (OSError, ValueError):  # none yet, or not JSON: nothing to keep
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, for a smoke check")
    parser.add_argument("--output", default=str(REPO / "data" / "08_reporting" / "benchmarks.json"))
    parser.add_argument("--only", nargs="*", help="names of benchmarks to run")
    parser.add_argument("--predict-model", help="bench_predict: a trained .keras model (default: a "
                                                "small CNN trained in the benchmark)")
    args = parser.parse_args()
    if args.predict_model:
        if not Path(args.predict_model).is_file():
            sys.exit(f"no model file at {args.predict_model} (--predict-model)")
        os.environ["AGE_GENDER_BENCH_MODEL"] = str(Path(args.predict_model).resolve())
    if not archive_path().exists():
        sys.exit(f"benchmarks need the UTKFace archive at {archive_path()} (set UTKFACE_ARCHIVE)")
    unknown = [name for name in args.only or () if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    names = args.only or list(BENCHMARKS)
    output = Path(args.output)
    try:  # before any benchmark runs: would this run mix with or wipe the file's other results?
        merge_report(_previous_report(output), {**machine(), "quick": args.quick, "results": dict.fromkeys(names)},
                     str(output))
    except ValueError as error:
        sys.exit(f"ERROR: {error}")
    report = {**machine(), "quick": args.quick, "results": {}}
    for name in names:
        started = time.perf_counter()
        report["results"][name] = run_isolated(name, args.quick)
        report["results"][name]["wall_seconds"] = round(time.perf_counter() - started, 1)
        print(name, json.dumps(report["results"][name]), flush=True)
    ran = report["results"]  # this run's: printed and judged below; the file keeps the others too
    # the file: this run's results beside those of benchmarks it did not rerun (same kind, checked above)
    report = merge_report(_previous_report(output), report, str(output))
    report.update(headline_figures(report["results"]))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, output)
    print(f"\n{'metric':45s} value\n" + "\n".join(f"{k:45s} {v}" for k, v in headline_figures(ran).items()))
    print(f"\nmachine: {report['machine']} ({report['cores']} cores); written to {output}")
    failed = {name: result["error"] for name, result in ran.items() if "error" in result}
    if failed:
        sys.exit(f"{len(failed)} benchmark(s) failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))


if __name__ == "__main__":
    main()
