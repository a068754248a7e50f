"""Speed and memory benchmarks. Prints a table and writes data/08_reporting/benchmarks.json.

    python benchmarks/run.py            # everything (about 5 minutes on a 2-core CPU)
    python benchmarks/run.py --quick    # smaller samples, for a smoke check

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
    """Scratch CNN 10 at the base size (the dtype policy ``auto`` picks, as the pipeline does),
    trained from a fixed seed on fixed real faces: images/s and a hash of the weights after."""
    import hashlib

    import numpy as np
    import pandas as pd

    import age_gender.training
    from age_gender.training import (
        FaceArrays,
        augmentation,
        configure_determinism,
        device_setup,
        make_dataset,
        set_seeds,
    )

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
    speed = _timed_fit(model, dataset, 8 if quick else 24)
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()[:16]
    return {"images_per_s": speed, "weights": digest, "applied": applied}


def _determinism_off(quick: bool) -> dict:
    return _determinism_run(False, quick)


def _determinism_on(quick: bool) -> dict:
    return _determinism_run(True, quick)


def _determinism_single(quick: bool) -> dict:
    return _determinism_run(True, quick, (1, 1))


def bench_determinism(quick: bool) -> dict:
    """``device.deterministic``: the scratch CNN's training speed with the project's setting
    (``on``: TensorFlow's op determinism, one intra-op thread per core, one inter-op thread) and
    with op determinism on single-threaded pools (``single``), against the default kernels
    (``off``); each in a fresh process (threads are fixed per process), alternating, best of two;
    and whether the two runs of each give bit-identical weights."""
    runs = {"off": [], "on": [], "single": []}
    for _ in range(2):
        for name in runs:
            runs[name].append(run_isolated(f"_determinism_{name}", quick))
    speed = {name: max(r["images_per_s"] for r in rows) for name, rows in runs.items()}
    same = {name: rows[0]["weights"] == rows[1]["weights"] for name, rows in runs.items()}
    return {"scratch_train_default_images_per_s": round(speed["off"], 1),
            "scratch_train_deterministic_images_per_s": round(speed["on"], 1),
            "scratch_train_deterministic_single_thread_images_per_s": round(speed["single"], 1),
            "deterministic_vs_default_ratio": round(speed["on"] / speed["off"], 2),
            "deterministic_single_thread_vs_default_ratio": round(speed["single"] / speed["off"], 2),
            "default_runs_identical": same["off"], "deterministic_runs_identical": same["on"],
            "deterministic_single_thread_runs_identical": same["single"],
            "deterministic_applied": all(r["applied"] for r in runs["on"] + runs["single"])}


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


TRACKING_PARAMETERS = """
split: {test_size: 60, subset_size: 300}
scratch_training: {input_size: 32, epochs: 2, patience: 2, batch_size: 32, width_multiplier: 0.125}
scratch: {architecture: {conv_pairs: 2, dense_layers: 1, dense_units: 8, split_point: 1}}
"""


def bench_tracking_overhead(quick: bool) -> dict:
    """The same tiny `kedro run --pipeline scratch` (2 epochs, 32 px, 240 training faces), each
    run a fresh CLI process, with AGE_GENDER_TRACKING=off and =on alternately (after one tracked
    run that creates the SQLite store, timed apart): median wall seconds of each and their ratio.
    Tracking's cost is mostly fixed per run (MLflow import, store, model copy), so the ratio on a
    tiny run is an upper bound for a real one."""
    import statistics
    import subprocess
    import tarfile

    sys.path.insert(0, str(REPO))
    from tests.conftest import make_project, write_tar

    root = make_project(Path(tempfile.mkdtemp(prefix="bench_tracking_")))
    (root / "conf" / "local" / "parameters.yml").write_text(TRACKING_PARAMETERS)
    (root / "conf" / "local" / "parameters_ingestion.yml").write_text("ingestion: {image_sizes: [32], face_check: {enabled: false}}\n")
    members = {}
    with tarfile.open(archive_path()) as archive:
        for index, member in enumerate(archive):
            if member.isfile() and index % 40 == 0:
                members[member.name] = archive.extractfile(member).read()
    sample = write_tar(root / "sample.tar.gz", members)
    env = {**os.environ, "UTKFACE_ARCHIVE": str(sample), "KEDRO_DISABLE_TELEMETRY": "true",
           "MLFLOW_ENABLE_TELEMETRY": "false", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)

    def kedro(pipeline: str, tracking: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kedro", "run", "--pipeline", pipeline], cwd=root, check=True,
                       env={**env, "AGE_GENDER_TRACKING": tracking}, capture_output=True)
        return time.perf_counter() - started

    try:
        kedro("ingestion", "off")
        kedro("split", "off")
        first_tracked = kedro("scratch", "on")  # creates mlflow.db (schema migrations) and the experiment
        off, on = [], []
        for _ in range(1 if quick else 3):
            off.append(kedro("scratch", "off"))
            on.append(kedro("scratch", "on"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    median_off, median_on = statistics.median(off), statistics.median(on)
    return {"tracking_overhead_ratio": round(median_on / median_off, 3),
            "tracking_added_seconds": round(median_on - median_off, 1),
            "untracked_seconds": [round(t, 1) for t in off], "tracked_seconds": [round(t, 1) for t in on],
            "first_tracked_run_seconds": round(first_tracked, 1),
            "pipeline": "scratch, 2 epochs, 32 px, width 0.125, 240 training faces, kedro CLI process per run"}


BENCHMARKS = ("bench_ingestion", "bench_input_vs_model", "bench_input_pipelines", "bench_mixed_precision",
              "bench_determinism", "bench_paper_scratch", "bench_fine_tune_and_inference", "bench_paper_fine_tune",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, for a smoke check")
    parser.add_argument("--output", default=str(REPO / "data" / "08_reporting" / "benchmarks.json"))
    parser.add_argument("--only", nargs="*", help="names of benchmarks to run")
    args = parser.parse_args()
    if not archive_path().exists():
        sys.exit(f"benchmarks need the UTKFace archive at {archive_path()} (set UTKFACE_ARCHIVE)")
    unknown = [name for name in args.only or () if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    names = args.only or list(BENCHMARKS)
    report = {**machine(), "quick": args.quick, "results": {}}
    for name in names:
        started = time.perf_counter()
        report["results"][name] = run_isolated(name, args.quick)
        report["results"][name]["wall_seconds"] = round(time.perf_counter() - started, 1)
        print(name, json.dumps(report["results"][name]), flush=True)
    flat = {k: v for result in report["results"].values() for k, v in result.items()
            if k.endswith(("_per_s", "_ratio", "speedup_cached_vs_jpeg"))}
    report.update(flat)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, output)
    print(f"\n{'metric':45s} value\n" + "\n".join(f"{k:45s} {v}" for k, v in flat.items()))
    print(f"\nmachine: {report['machine']} ({report['cores']} cores); written to {output}")
    failed = {name: result["error"] for name, result in report["results"].items() if "error" in result}
    if failed:
        sys.exit(f"{len(failed)} benchmark(s) failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))


if __name__ == "__main__":
    main()
