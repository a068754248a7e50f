"""Every environment in conf/ resolves and validates for every registered pipeline; the paper
environment's own code path runs on CPU with its sizes shrunk by runtime parameters; its Airflow
route (`kedro airflow create`) makes one task per grid candidate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from age_gender.params import GROUPS, ParameterError, groups_read_by, validate_parameters
from tests.conftest import make_project, run_kedro, saved

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted(p.name for p in (REPO / "conf").iterdir() if p.is_dir() and p.name != "base")


def _resolve(project: Path, env: str | None):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        params = context.config_loader["parameters"]
        context.catalog  # noqa: B018  (the catalog resolves too)
    return params


@pytest.fixture(scope="module")
def env_project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("environments"))


@pytest.mark.parametrize("env", ENVS)
def test_environment_resolves_and_validates_for_every_pipeline(env_project, env, weights_dir, monkeypatch):
    from kedro.framework.project import pipelines

    monkeypatch.setenv("UTKFACE_WEIGHTS_DIR", str(weights_dir))
    params = _resolve(env_project, env)
    read: set[str] = set()
    for name, pipeline in pipelines.items():
        groups = groups_read_by(pipeline)
        try:
            validate_parameters(params, groups)
        except ParameterError as error:
            pytest.fail(f"--env {env} --pipeline {name}: {error}")
        read |= set(groups)
    assert read == set(GROUPS), f"groups no pipeline reads: {set(GROUPS) - read}"
    validate_parameters(params)  # and nothing unknown at the top level


@pytest.mark.parametrize("env", [e for e in ENVS if e != "local"])
def test_environment_states_only_what_it_changes(env):
    """A soft merge makes a value repeated from conf/base dead weight: none may be repeated."""
    base: dict = {}
    for path in sorted((REPO / "conf" / "base").glob("parameters*.yml")):
        base.update(yaml.safe_load(path.read_text()))

    def repeated(changes, defaults, prefix=""):
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(defaults.get(key), dict) and value:
                yield from repeated(value, defaults[key], f"{prefix}{key}.")
            elif key in defaults and defaults[key] == value:
                yield f"{prefix}{key}"

    for path in sorted((REPO / "conf" / env).glob("parameters*.yml")):
        same = list(repeated(yaml.safe_load(path.read_text()) or {}, base))
        assert same == [], f"{path.name} repeats conf/base values: {same}"


def test_paper_soft_merge_keeps_what_paper_does_not_state(env_project, weights_dir, monkeypatch):
    monkeypatch.setenv("UTKFACE_WEIGHTS_DIR", str(weights_dir))
    params = _resolve(env_project, "paper")
    transfer = params["transfer"]
    assert transfer["backbone"] == "xception" and transfer["seed"] == 42  # base's seed kept
    assert transfer["head_search"]["structures"] and transfer["hyperband"]["units_max"] == 1024
    assert params["scratch_search"]["grid"]["cnn10"]["dense_units"] == 300  # base's grid kept
    assert params["scratch_training"]["time_budget_minutes"] is None
    assert params["scratch_training"]["augmentation"]["rotation_degrees"] == 10


# --- the paper environment runs ------------------------------------------------------------------

# The paper's settings, shrunk to a few images and one epoch by runtime parameters only. XLA
# (device.jit_compile) is off: compiling the CNN on this CPU took 111 s against 15 s without;
# the GPU check (scripts/gpu_check.sh) runs the paper environment with it. The final backbone is
# MobileNetV2 at 32 px instead of Xception at >= 71 px (same code path, 100 s against ~30 s here).
SHRINK = {
    "device": {"jit_compile": False},
    "ingestion": {"image_sizes": [32], "face_check": {"enabled": False}},
    "split": {"test_size": 30, "subset_size": 150},
    "scratch_training": {"input_size": 32, "width_multiplier": 0.125, "epochs": 1, "batch_size": 32},
    "scratch_search": {"max_candidates": 2, "training": {"epochs": 1}},
    "transfer": {"backbone": "mobilenet_v2", "compare": ["mobilenet_v2"], "input_size": 32, "head": {"epochs": 1},
                 "head_search": {"structures": ["dense-dropout"]},
                 "hyperband": {"max_epochs": 3, "factor": 3, "units_max": 128},
                 "fine_tune": {"epochs": 1}},
}


@pytest.fixture(scope="module")
def paper_project(tmp_path_factory, sample_archive, weights_dir):
    root = make_project(tmp_path_factory.mktemp("paper"))
    os.environ["UTKFACE_ARCHIVE"] = str(sample_archive)
    os.environ["UTKFACE_WEIGHTS_DIR"] = str(weights_dir)
    for name in ("ingestion", "split"):
        run_kedro(root, name, SHRINK, env="paper")
    return root


@pytest.mark.pipeline
def test_paper_transfer_runs_on_cpu(paper_project):
    run_kedro(paper_project, "transfer", SHRINK, env="paper")
    model = saved(paper_project / "data" / "06_models" / "transfer.keras")
    assert model.stat().st_size > 1_000_000
    metrics = yaml.safe_load(saved(paper_project / "data" / "08_reporting" / "transfer_training_info.json").read_text())
    assert metrics["pretrained"] is True and metrics["unfrozen_layers"] == 2  # the paper's fine-tuning
    best = yaml.safe_load((paper_project / "data" / "08_reporting" / "transfer_best_head.json").read_text())
    assert best["structure"] == "dense-dropout"


@pytest.mark.pipeline
def test_paper_scratch_runs_on_cpu(paper_project):
    run_kedro(paper_project, "scratch", SHRINK, env="paper")
    assert saved(paper_project / "data" / "06_models" / "scratch.keras").stat().st_size > 10_000


@pytest.mark.pipeline
def test_paper_scratch_search_runs_on_cpu(paper_project):
    run_kedro(paper_project, "scratch_search", SHRINK, env="paper")
    results = (paper_project / "data" / "08_reporting" / "scratch_search_results.csv").read_text()
    assert "cnn10" in results and "cnn06" in results  # max_candidates 2: the first two


@pytest.mark.pipeline
def test_a_bad_runtime_value_stops_the_paper_run_before_any_node(paper_project):
    before = {p: p.stat().st_mtime_ns for p in (paper_project / "data").rglob("*") if p.is_file()}
    with pytest.raises(ParameterError, match=r"^scratch_training\.epoch is not a parameter; did you mean scratch_training\.epochs\?$"):
        run_kedro(paper_project, "scratch", {**SHRINK, "scratch_training": {"epoch": 1}}, env="paper")
    after = {p: p.stat().st_mtime_ns for p in (paper_project / "data").rglob("*") if p.is_file()}
    assert after == before


def _kedro(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kedro", *args], cwd=project, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.pipeline
def test_kedro_run_prints_a_parameter_error_as_one_line(paper_project):
    done = _kedro(paper_project, "run", "--env", "paper", "--pipeline", "scratch",
                  "--params", "scratch_training.epochs=abc")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == \
        "ERROR: scratch_training.epochs must be an integer >= 1, got 'abc'"
    assert "Traceback" not in done.stderr


@pytest.mark.pipeline
def test_imagenet_weights_without_network_fail_with_one_clear_line(paper_project, tmp_path):
    """The paper's backbones say `imagenet`; with no network (a dead proxy, an empty Keras cache)
    the first node stops with one line naming the setting to change."""
    done = _kedro(paper_project, "run", "--env", "paper", "--pipeline", "transfer", "--params",
                  "split.test_size=30,split.subset_size=150,"  # as the table was drawn (SHRINK)
                  "transfer.backbone=mobilenet_v2,transfer.compare=[vgg16],transfer.input_size=32",
                  env={"KERAS_HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9",
                       "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "", "COLUMNS": "2000"})
    assert done.returncode != 0
    last = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert last.startswith("ERROR in node extract_features: WeightsUnavailable: Could not fetch ImageNet "
                           "weights for 'vgg16'"), last
    assert last.endswith("Without internet, point transfer.backbone_weights.vgg16 at a local file or set "
                         "transfer.allow_random_init: true."), last
    assert not (paper_project / "data" / "04_feature" / "transfer_features" / "vgg16__train.npy").exists()


# --- Airflow -------------------------------------------------------------------------------------


@pytest.mark.pipeline
def test_airflow_dag_for_the_paper_search_has_one_task_per_candidate(env_project, weights_dir):
    params = _resolve(env_project, "paper")
    candidates = list(params["scratch_search"]["grid"])
    done = _kedro(env_project, "airflow", "create", "--pipelines", "scratch_search", "--env", "paper",
                  env={"UTKFACE_WEIGHTS_DIR": str(weights_dir)})
    assert done.returncode == 0, done.stderr[-3000:]
    dags = list((env_project / "airflow_dags").glob("*.py"))
    assert len(dags) == 1
    source = dags[0].read_text()
    compile(source, str(dags[0]), "exec")
    tasks = re.findall(r'task_id="([^"]+)"', source)
    for name in candidates:
        mine = [t for t in tasks if re.search(rf"(^|-){re.escape(name)}(-|$)", t)]
        assert len(mine) == 1, f"{name}: {mine}"
    assert len(candidates) == 24


def test_the_smoke_sample_the_readme_makes_is_git_ignored():
    """README and docs/configuration.md make the smoke sample as ``sample.tar.gz`` in the clone:
    UTKFace images, which must never be committed by a ``git add -A``."""
    command = re.search(r"python scripts/gpu_sample.py \d+ --out (\S+?)`", (REPO / "README.md").read_text())
    assert command, "README no longer shows how to make the smoke sample; update this test"
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", command.group(1)], cwd=REPO)
    assert ignored.returncode == 0, f"{command.group(1)} is not git-ignored: add it to .gitignore"
