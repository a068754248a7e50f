"""Keras 3 on more than one backend: the scratch pipeline on TensorFlow (in process, the default)
and on JAX (CPU, in a subprocess with KERAS_BACKEND=jax), a model saved on TensorFlow loaded and
used on JAX, and the GPU check's CPU mode. The GPU path's code (uint8 batches from the cached
arrays, augmentation inside the model, jit-compiled steps, bfloat16) runs here on every change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, make_project, run_kedro, saved

pytestmark = pytest.mark.pipeline

TINY = {
    "ingestion": {"image_sizes": [32]},
    "split": {"test_size": 60, "subset_size": 300},
    "scratch_training": {"input_size": 32, "epochs": 3, "patience": 3, "batch_size": 32,
                         "width_multiplier": 0.125, "time_budget_minutes": None},
    "scratch": {"architecture": {"conv_pairs": 3, "dense_layers": 1, "dense_units": 16, "split_point": 1}},
    "device": {"mixed_precision": "none", "jit_compile": False},
}


def _jax_env() -> dict:
    return {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}


def _params_arg(params: dict, prefix: str = "") -> list[str]:
    items = []
    for key, value in params.items():
        if isinstance(value, dict) and key != "architecture":
            items += _params_arg(value, f"{prefix}{key}.")
        elif isinstance(value, dict):
            items += [f"{prefix}{key}.{k}={v}" for k, v in value.items()]
        elif isinstance(value, list):
            items.append(f"{prefix}{key}=[{';'.join(map(str, value))}]")
        else:
            items.append(f"{prefix}{key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}")
    return items


@pytest.fixture(scope="module")
def projects(tmp_path_factory, sample_archive):
    """Ingestion and split once; scratch on TensorFlow here and on JAX in a subprocess."""
    import shutil

    os.environ["UTKFACE_ARCHIVE"] = str(sample_archive)
    tf_root = make_project(tmp_path_factory.mktemp("tf"))
    for name in ("ingestion", "split"):
        run_kedro(tf_root, name, TINY)
    jax_root = tmp_path_factory.mktemp("jax") / "project"
    shutil.copytree(tf_root, jax_root)
    run_kedro(tf_root, "scratch", TINY)
    run_kedro(tf_root, "evaluation", TINY)  # evaluation owns the test split
    scratch_params = {k: TINY[k] for k in ("split", "scratch_training", "scratch", "device")}
    command = [sys.executable, "-m", "kedro", "run", "--pipelines", "scratch,evaluation",
               "--params", ",".join(_params_arg(scratch_params))]
    done = subprocess.run(command, cwd=jax_root, env=_jax_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tf_root, jax_root


def _metrics(root: Path) -> dict:
    return json.loads((root / "data" / "08_reporting" / "test_metrics" / "scratch.json").read_text())


def test_scratch_pipeline_trains_on_tensorflow_and_on_jax_with_comparable_metrics(projects):
    tf_root, jax_root = projects
    tf_metrics, jax_metrics = _metrics(tf_root), _metrics(jax_root)
    for metrics in (tf_metrics, jax_metrics):
        assert metrics["n"] == 60 and metrics["epochs_run"] == 3
        assert np.isfinite(metrics["age_mae"]) and 0 <= metrics["gender_accuracy"] <= 1
    # Same data, seeds and architecture; the backends' random streams and kernels differ, so the
    # runs are not bit-equal. After 3 epochs on 240 faces both sit near the label baseline:
    # within 0.15 of each other in gender accuracy and 25 % in age MAE.
    assert abs(tf_metrics["gender_accuracy"] - jax_metrics["gender_accuracy"]) <= 0.15
    assert abs(tf_metrics["age_mae"] - jax_metrics["age_mae"]) <= 0.25 * max(tf_metrics["age_mae"], jax_metrics["age_mae"])
    assert saved(jax_root / "data" / "06_models" / "scratch.keras").stat().st_size > 0


def test_model_saved_on_tensorflow_predicts_the_same_on_jax(projects, tmp_path):
    """Both directions: the TF-trained .keras on JAX and the JAX-trained one here on TF."""
    import keras

    import age_gender.models  # noqa: F401  (custom layers)
    from age_gender.reporting import predict_faces

    tf_root, jax_root = projects
    images = np.load(tf_root / "data" / "03_primary" / "face_cache" / "32px.npy")[:64]
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras, age_gender.models\n"
        "from age_gender.reporting import predict_faces\n"
        "assert keras.backend.backend() == 'jax'\n"
        "images = np.load(sys.argv[1])\n"
        "for name in ('tf', 'jax'):\n"
        "    model = keras.models.load_model(sys.argv[2] if name == 'tf' else sys.argv[3])\n"
        "    np.save(sys.argv[4] + f'_{name}.npy', np.stack(predict_faces(model, images, views=True)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images.npy"),
                           str(saved(tf_root / "data" / "06_models" / "scratch.keras")),
                           str(saved(jax_root / "data" / "06_models" / "scratch.keras")), str(tmp_path / "on_jax")],
                          env=_jax_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert keras.backend.backend() == "tensorflow"
    for name, root in (("tf", tf_root), ("jax", jax_root)):
        here = np.stack(predict_faces(keras.models.load_model(saved(root / "data" / "06_models" / "scratch.keras")),
                                      images, views=True))
        there = np.load(tmp_path / f"on_jax_{name}.npy")
        # float32 models: the backends' convolutions sum in other orders; 1e-3 years / 1e-4 in probability.
        np.testing.assert_allclose(here[0], there[0], atol=1e-3, rtol=0)
        np.testing.assert_allclose(here[1], there[1], atol=1e-4, rtol=0)


def test_gpu_check_cpu_mode_runs_every_stage(sample_archive, tmp_path):
    # Generous limits: a check of what runs, not of how fast (on a loaded 2-core host 400 s
    # skipped the last stage).
    env = {**_jax_env(), "GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_LIMIT": "1200"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu", "--archive", str(sample_archive),
                           "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=1300)
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert done.returncode == 0, (done.stdout[-2000:], json.dumps(result["stages"])[-3000:])
    assert (tmp_path / "out" / "gpu_check.log").stat().st_size > 0
    stages = result["stages"]
    assert result["mode"] == "cpu" and result["finished"]
    assert stages["env"]["backend"] == "jax"
    assert stages["ingest"]["ok"] and stages["ingest"]["faces_kept"] > 400
    for name in ("cnn10_bf16_b8", "cnn10_bf16_b16", "finetune_mobilenet_v2_float32_b8"):
        assert stages[name]["images_per_s"] > 0 and stages[name]["final_loss_finite"], stages[name]
        assert stages[name]["jit_compile"], f"{name}: Keras dropped jit_compile (a layer it cannot compile)"
    assert result["largest_batch_bf16"] == 16 and stages["cnn10_bf16_b16"]["images_per_s"] > 0
    assert stages["kedro_scratch"]["ok"] and stages["kedro_scratch"]["scratch_test_metrics"]["n"] == 40
    assert pd.notna(stages["cnn10_bf16_b8"]["input_only_images_per_s"])


def test_unit_tests_of_models_training_and_metrics_pass_on_jax():
    """The library's unit tests (models, input pipeline, fit, metrics, transfer) again under
    KERAS_BACKEND=jax, in a fresh process (the backend is fixed at Keras' import)."""
    files = ["tests/test_models.py", "tests/test_training.py", "tests/test_metrics.py", "tests/test_transfer.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not pipeline",
                           *files], cwd=REPO, env=_jax_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
