"""One prepared GPU check: training throughput and GPU utilisation on the JAX backend, and a short
Kedro run of the scratch pipeline on a carried sample of the archive.

    scripts/gpu_check.sh                 # on a bare GPU machine (installs carried wheels first)
    python scripts/gpu_check.py --cpu    # the same stages at tiny sizes, on the CPU (CI runs this)

Writes ``gpu_check.json`` and ``gpu_check.log`` into ``$OUT`` (or ``--out``; default
``gpu_check_out/``). The JSON is rewritten atomically after every stage, so a run stopped by its
time limit still leaves every finished stage's figures. Each stage runs in its own process with
its own timeout (a batch that does not fit in GPU memory fails alone), and a stage that cannot
finish before the overall limit (``--limit`` seconds) is skipped and listed as such.

Stages: ``env`` (GPU name, driver, versions), ``ingest`` (``kedro run`` of ingestion and split on
the sample), ``cnn10_*`` (the study's CNN 10 at 128 px and full widths, images/s of ``model.fit``
with augmentation in the model, float32 and mixed bfloat16, at batch 32 and the largest batch that
fits), ``finetune_*`` (MobileNetV2 and Xception, last 2 layers unfrozen), ``kedro_scratch``
(``kedro run --env paper --pipeline scratch`` with its epochs cut by ``--params``). GPU
utilisation is ``nvidia-smi``'s ``utilization.gpu`` sampled every 200 ms during each timed fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CNN10 = {"conv_pairs": 5, "dense_layers": 3, "dense_units": 300, "split_point": 1}
AUGMENT = {"enabled": True, "flip": True, "shift": 0.1, "zoom": 0.1, "rotation_degrees": 10}
DEFAULT_SAMPLE = REPO / ".gpu_sample" / "UTKFace_3000.tar.gz"

# Sizes per mode. gpu: the study's settings; cpu: tiny, so CI runs every stage in about a minute.
MODES = {
    "gpu": {"size": 128, "width": 1.0, "small_batch": 32, "large_batches": [2048, 1024, 512, 256],
            "ft_batches": [32, 256], "ft_policy": "mixed_bfloat16", "ft_size": 128, "timed_seconds": 8.0,
            "calibration_images": 1024,
            "split": {"test_size": 300, "subset_size": 2500}, "scratch_epochs": 3, "scratch_batch": 32,
            "backbones": ["mobilenet_v2", "xception"], "float32": True},
    "cpu": {"size": 64, "width": 0.125, "small_batch": 8, "large_batches": [16],
            "ft_batches": [8], "ft_policy": "float32", "ft_size": 64, "timed_seconds": 1.0,
            "calibration_images": 32,
            "split": {"test_size": 40, "subset_size": 200}, "scratch_epochs": 1, "scratch_batch": 32,
            "backbones": ["mobilenet_v2"], "float32": False},  # CI: one compile per code path
}


# --- helpers -------------------------------------------------------------------------------------


class Report:
    """The JSON result, rewritten atomically after every change, and a log beside it."""

    def __init__(self, out: Path, payload: dict):
        self.out = out
        self.payload = payload
        out.mkdir(parents=True, exist_ok=True)
        self.log_path = out / "gpu_check.log"
        self.log_file = self.log_path.open("a", buffering=1)
        self.save()

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def stage(self, name: str, result: dict) -> None:
        self.payload["stages"][name] = result
        self.save()

    def save(self) -> None:
        path = self.out / "gpu_check.json"
        fd, tmp = tempfile.mkstemp(dir=self.out, prefix=".gpu_check.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(self.payload, handle, indent=1)
        os.replace(tmp, path)


def nvidia_smi(*fields: str) -> list[list[str]] | None:
    """Rows of ``nvidia-smi --query-gpu`` (None without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        text = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return [[part.strip() for part in line.split(",")] for line in text.strip().splitlines()]


class UtilisationSampler:
    """``nvidia-smi`` GPU utilisation (%) and memory used (MiB) every ``interval`` s, in a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.samples, self._stop = interval, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self):
        if not self.available:
            return
        process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                    "--format=csv,noheader,nounits", f"--loop-ms={int(self.interval * 1000)}"],
                                   stdout=subprocess.PIPE, text=True)
        try:
            for line in process.stdout:
                if self._stop.is_set():
                    break
                parts = [p.strip() for p in line.split(",")]
                try:
                    self.samples.append((float(parts[0]), float(parts[1])))
                except (ValueError, IndexError):
                    continue
        finally:
            process.terminate()
            process.wait(timeout=5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict:
        if not self.available:
            return {"gpu_utilisation_mean_pct": None, "gpu_utilisation_samples": 0}
        samples = self.samples[1:]  # the first sample may predate the timed fit
        if not samples:
            return {"gpu_utilisation_mean_pct": None, "gpu_utilisation_samples": 0}
        util = [s[0] for s in samples]
        return {"gpu_utilisation_mean_pct": round(sum(util) / len(util), 1),
                "gpu_utilisation_min_pct": min(util),
                "gpu_busy_ge80_share": round(sum(u >= 80 for u in util) / len(util), 3),
                "gpu_memory_used_max_mib": max(s[1] for s in samples),
                "gpu_utilisation_samples": len(samples)}


# --- child: one throughput measurement --------------------------------------------------------


def _load_faces(project: Path, size: int):
    import numpy as np
    import pandas as pd

    from age_gender.training import FaceArrays

    images = np.load(project / "data" / "03_primary" / "face_cache" / f"{size}px.npy")
    manifest = pd.read_parquet(project / "data" / "03_primary" / "face_manifest.parquet")
    if len(manifest) != len(images):
        raise SystemExit(f"cache ({len(images)}) and manifest ({len(manifest)}) disagree: rerun ingestion")
    return FaceArrays(images, manifest["age"].to_numpy(np.float32), manifest["gender"].to_numpy(np.float32),
                      manifest)


def _build(kind: str, size: int, width: float, policy: str | None, seed: int, age_mean: float, age_std: float):
    import keras

    from age_gender import models
    from age_gender.training import augmentation, dtype_policy

    augment = augmentation(AUGMENT, seed)
    if kind == "cnn10":
        return models.build_multitask_cnn(input_size=size, width_multiplier=width, dtype=policy,
                                          age_mean=age_mean, age_std=age_std, augmentation=augment, **CNN10)
    from age_gender.models.heads import build_feature_extractor

    with dtype_policy(policy):
        backbone = models.build_backbone(kind, size, None)  # speed does not depend on the weights' values
        models.unfreeze_last(backbone, 2)
        extractor = build_feature_extractor(kind, backbone, size)
        top = models.build_two_headed_top(int(extractor.output_shape[-1]), "dense-dropout", 512, 0.5,
                                          age_mean=age_mean, age_std=age_std)
        for layer in top.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        return models.build_transfer_model(extractor, top, augment)


def child(args) -> int:
    """Images/s of ``model.fit`` for one model, batch size and dtype policy; JSON on stdout."""
    import keras
    import numpy as np

    from age_gender.training import accelerators, compile_multitask, make_dataset, set_seeds

    args.kind = args.child
    policy = None if args.policy == "float32" else args.policy
    result = {"model": args.kind, "batch_size": args.batch, "policy": args.policy, "input_size": args.size,
              "width_multiplier": args.width if args.kind == "cnn10" else None,
              "backend": keras.backend.backend(), "jit_compile": True,
              "steps_per_execution": args.steps_per_execution, "devices": accelerators() or ["cpu"]}
    try:
        data = _load_faces(Path(args.project), args.size)
        set_seeds(42)
        started = time.perf_counter()
        model = _build(args.kind, args.size, args.width, policy, 42, float(data.age.mean()), float(data.age.std()))
        compile_multitask(model, 1e-4, {"age": 1.0, "gender": 100.0}, "mse", jit_compile=True)
        result["jit_compile"] = bool(model.jit_compile)  # Keras drops it if any layer cannot be compiled
        if args.steps_per_execution > 1:
            model.steps_per_execution = args.steps_per_execution  # Keras reads it when it builds the step
        result["parameters"] = int(model.count_params())
        result["trainable_parameters"] = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        spe = args.steps_per_execution

        def batches(steps):
            steps = -(-steps // spe) * spe
            return make_dataset(data, args.batch, shuffle=True, seed=1, steps=steps, pipeline="arrays",
                                workers=args.workers)

        model.fit(batches(2 * spe), epochs=1, verbose=0)  # compiles the train step
        result["build_compile_seconds"] = round(time.perf_counter() - started, 1)
        calibrate = batches(max(3, -(-args.calibration_images // args.batch)))
        t0 = time.perf_counter()
        history = model.fit(calibrate, epochs=1, verbose=0)
        float(history.history["loss"][-1])
        rate = len(calibrate) * args.batch / (time.perf_counter() - t0)
        timed = batches(max(4, int(rate * args.seconds / args.batch)))
        # The input alone (slicing, no model): can it keep up?
        t0 = time.perf_counter()
        probe = min(len(timed), 50, max(2, 20000 // args.batch))
        for i in range(probe):
            timed[i]
        result["input_only_images_per_s"] = round(probe * args.batch / (time.perf_counter() - t0), 1)
        with UtilisationSampler() as sampler:
            t0 = time.perf_counter()
            history = model.fit(timed, epochs=1, verbose=0)
            loss = float(history.history["loss"][-1])  # waits for the last step
            seconds = time.perf_counter() - t0
        result.update({"timed_steps": len(timed), "timed_images": len(timed) * args.batch,
                       "timed_seconds": round(seconds, 2),
                       "images_per_s": round(len(timed) * args.batch / seconds, 1),
                       "final_loss_finite": bool(np.isfinite(loss)), **sampler.summary()})
    except Exception as error:  # reported, never raised: the parent goes on with the next stage
        text = f"{type(error).__name__}: {error}"
        result["error"] = text.splitlines()[0][:500]
        result["oom"] = any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if "error" not in result else (3 if result.get("oom") else 1)


# --- parent: the stages ------------------------------------------------------------------------


class Runner:
    def __init__(self, args, report: Report, mode: dict):
        self.args, self.report, self.mode = args, report, mode
        self.deadline = time.monotonic() + args.limit
        self.env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax"),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
                    "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92"),
                    "PYTHONUNBUFFERED": "1"}
        if args.cpu:
            self.env["JAX_PLATFORMS"] = "cpu"
            self.env["CUDA_VISIBLE_DEVICES"] = ""

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def call(self, name: str, command: list[str], timeout: float, need: float = 0.0) -> tuple[int | None, str]:
        """Run ``command`` with at most ``timeout`` s (and never past the overall limit)."""
        budget = min(timeout, self.left() - 5)
        if budget < max(need, 5):
            self.report.log(f"{name}: skipped, {self.left():.0f} s left of the overall limit")
            return None, "skipped: overall time limit"
        self.report.log(f"{name}: {' '.join(command[-12:])} (timeout {budget:.0f} s)")
        log = self.report.out / "stages.log"
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=self.args.project, env=self.env, capture_output=True, text=True,
                                  timeout=budget)
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            output = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) \
                else (expired.stdout or "")
            output += f"\nTIMEOUT after {budget:.0f} s"
            code = None
        with log.open("a") as handle:
            handle.write(f"\n===== {name} ({time.perf_counter() - started:.1f} s, exit {code}) =====\n{output}\n")
        self.report.log(f"{name}: exit {code} in {time.perf_counter() - started:.1f} s")
        return code, output

    def kedro(self, name: str, pipeline: str, params: dict, timeout: float, env: str | None = None) -> dict:
        command = [sys.executable, "-m", "kedro", "run", "--pipelines", pipeline,
                   "--params", ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                         for k, v in params.items())]
        if env:
            command += ["--env", env]
        started = time.perf_counter()
        code, output = self.call(name, command, timeout)
        result = {"command": " ".join(["kedro"] + command[3:]), "seconds": round(time.perf_counter() - started, 1),
                  "ok": code == 0}
        if code != 0:
            tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
            result["error"] = " | ".join(tail)[-600:] if tail else str(code)
        return result

    def throughput(self, name: str, kind: str, batch: int, policy: str, size: int, width: float,
                   spe: int = 1, timeout: float = 120, need: float = 20) -> dict:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--batch", str(batch),
                   "--policy", policy, "--size", str(size), "--width", str(width), "--project",
                   str(self.args.project), "--seconds", str(self.mode["timed_seconds"]),
                   "--steps-per-execution", str(spe), "--calibration-images", str(self.mode["calibration_images"])]
        code, output = self.call(name, command, timeout, need)
        for line in reversed(output.splitlines()):
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                break
        else:
            result = {"model": kind, "batch_size": batch, "policy": policy,
                      "error": output if code is None else (output.strip().splitlines() or ["no output"])[-1][-500:]}
        self.report.stage(name, result)
        if "images_per_s" in result:
            self.report.log(f"{name}: {result['images_per_s']} images/s, GPU busy "
                            f"{result.get('gpu_utilisation_mean_pct')} % (batch {batch}, {policy})")
        return result


def make_project(root: Path) -> Path:
    """A throw-away copy of the project's configuration, so the check never writes into data/."""
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()
    for layer in ("01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input",
                  "06_models", "07_model_output", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    return root


def env_stage(report: Report, runner: Runner) -> None:
    rows = nvidia_smi("name", "memory.total", "driver_version")
    code, output = runner.call("env", [sys.executable, "-c", (
        "import json, keras, numpy, jax; from age_gender.training import accelerators; "
        "print('RESULT ' + json.dumps({'backend': keras.backend.backend(), 'keras': keras.__version__, "
        "'jax': jax.__version__, 'numpy': numpy.__version__, 'devices': [str(d) for d in jax.devices()], "
        "'accelerators': accelerators()}))")], 300)  # imports only; 120 s was too short on a loaded 2-core CI box
    result = {"gpu": None if not rows else [{"name": r[0], "memory_total_mib": r[1], "driver": r[2]} for r in rows],
              "python": sys.version.split()[0]}
    for line in output.splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[7:]))
    if code != 0:
        result["error"] = output.strip().splitlines()[-1][-500:] if output.strip() else str(code)
    report.payload["gpu_name"] = rows[0][0] if rows else None
    report.stage("env", result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", default=os.environ.get("GPU_CHECK_CPU") == "1",
                        help="tiny sizes on the CPU (also GPU_CHECK_CPU=1)")
    parser.add_argument("--archive", default=os.environ.get("GPU_CHECK_ARCHIVE", str(DEFAULT_SAMPLE)))
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "gpu_check_out"))
    parser.add_argument("--limit", type=float, default=float(os.environ.get("GPU_CHECK_LIMIT", 420)),
                        help="overall limit in seconds")
    parser.add_argument("--only", default="", help="comma-separated stage-name prefixes to run (rerun what is missing)")
    parser.add_argument("--project", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8.0, help=argparse.SUPPRESS)
    parser.add_argument("--steps-per-execution", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--calibration-images", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    archive = Path(args.archive)
    if not archive.is_file():
        print(f"gpu_check: no archive sample at {archive}; make one with scripts/gpu_sample.py "
              f"(or pass --archive / GPU_CHECK_ARCHIVE)", file=sys.stderr)
        return 2
    mode_name = "cpu" if args.cpu else "gpu"
    mode = dict(MODES[mode_name])
    if os.environ.get("GPU_CHECK_LARGE"):  # e.g. "1024": the large batches to try, largest first
        mode["large_batches"] = [int(b) for b in os.environ["GPU_CHECK_LARGE"].split(",")]
    if os.environ.get("GPU_CHECK_TIMED"):  # seconds of each timed fit
        mode["timed_seconds"] = float(os.environ["GPU_CHECK_TIMED"])
    out = Path(args.out)
    report = Report(out, {"mode": mode_name, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "limit_s": args.limit, "archive": archive.name, "gpu_name": None, "stages": {},
                          "settings": {k: v for k, v in mode.items()}, "finished": False})
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    args.project = str(make_project(work / "project"))
    runner = Runner(args, report, mode)
    runner.env["UTKFACE_ARCHIVE"] = str(archive.resolve())
    wanted = [p for p in args.only.split(",") if p]

    def want(name: str) -> bool:
        return not wanted or any(name.startswith(p) for p in wanted)

    size, width = mode["size"], mode["width"]
    try:
        if want("env"):
            env_stage(report, runner)
        # Ingestion and split are needed by every later stage.
        split = {f"split.{k}": v for k, v in mode["split"].items()}
        # The face check only reports (it never changes the training data by default), and the
        # H200 image's OpenCV build has no CascadeClassifier: it is off here.
        result = runner.kedro("ingest", "ingestion", {"ingestion.face_check.enabled": False}, 240)
        if result["ok"]:
            result2 = runner.kedro("split", "split", split, 120)
            result = {"ingestion": result, "split": result2, "ok": result2["ok"]}
            summary = Path(args.project) / "data" / "03_primary" / "face_manifest.parquet"
            if summary.exists():
                import pandas as pd

                result["faces_kept"] = int(len(pd.read_parquet(summary)))
        report.stage("ingest", result)
        if not result["ok"]:
            report.log("ingestion/split failed: no later stage can run")
            return 1

        small, ft_policy = mode["small_batch"], mode["ft_policy"]
        short = {"mixed_bfloat16": "bf16", "float32": "float32"}
        if want("cnn10"):  # most wanted first: a run cut short by its limit keeps these
            runner.throughput(f"cnn10_bf16_b{small}", "cnn10", small, "mixed_bfloat16", size, width, timeout=150)
            largest = None
            for batch in mode["large_batches"]:
                result = runner.throughput(f"cnn10_bf16_b{batch}", "cnn10", batch, "mixed_bfloat16", size, width,
                                           timeout=150, need=30)
                if "images_per_s" in result:
                    largest = batch
                    break
                if not result.get("oom"):
                    break
            report.payload["largest_batch_bf16"] = largest
            report.save()
            if mode["float32"]:
                runner.throughput(f"cnn10_float32_b{small}", "cnn10", small, "float32", size, width, timeout=150)
        if want("kedro_scratch"):
            epochs = mode["scratch_epochs"]
            # Every parameter the run depends on is given here, whatever conf/paper holds.
            params = {"scratch_training.epochs": epochs, "scratch_training.patience": epochs,
                      "scratch_training.input_size": size, "scratch_training.width_multiplier": width,
                      "scratch_training.batch_size": mode["scratch_batch"], "scratch_training.time_budget_minutes": 3,
                      "scratch_training.min_delta": 0.1, "scratch.use_search_winner": False,
                      "device.mixed_precision": "auto", "device.jit_compile": True,
                      **split}  # the split settings the table was drawn with, or the run is refused
            result = runner.kedro("kedro_scratch", "scratch,evaluation", params, 200, env="paper")
            metrics_file = Path(args.project) / "data" / "08_reporting" / "test_metrics" / "scratch.json"
            if metrics_file.exists():
                result["scratch_test_metrics"] = json.loads(metrics_file.read_text())
            report.stage("kedro_scratch", result)
        for batch in mode["ft_batches"] if want("finetune") else []:
            for name in mode["backbones"]:
                runner.throughput(f"finetune_{name}_{short[ft_policy]}_b{batch}", name, batch, ft_policy,
                                  mode["ft_size"], 1.0, timeout=120, need=30)
            if batch == small and want("cnn10") and not args.cpu:  # fewer, larger dispatches at batch 32
                runner.throughput(f"cnn10_bf16_b{small}_spe16", "cnn10", small, "mixed_bfloat16", size, width,
                                  spe=16, timeout=120, need=30)
        if want("cnn10") and mode["float32"] and report.payload.get("largest_batch_bf16"):
            for batch in [b for b in mode["large_batches"] if b <= report.payload["largest_batch_bf16"]]:
                result = runner.throughput(f"cnn10_float32_b{batch}", "cnn10", batch, "float32", size, width,
                                           timeout=150, need=30)
                if "images_per_s" in result or not result.get("oom"):
                    report.payload["largest_batch_float32"] = batch if "images_per_s" in result else None
                    report.save()
                    break
    finally:
        report.payload["finished"] = True
        report.payload["elapsed_s"] = round(args.limit - runner.left(), 1)
        report.save()
        shutil.rmtree(work, ignore_errors=True)
        report.log(f"done in {report.payload['elapsed_s']} s; results in {out / 'gpu_check.json'}")
    failed = [n for n, r in report.payload["stages"].items() if r.get("error") or r.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
