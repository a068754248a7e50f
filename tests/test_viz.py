"""`kedro viz build` exports a static site that holds every pipeline's DAG."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.pipeline


def test_kedro_viz_build_exports_every_pipeline(kedro_project: Path):
    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    shutil.copy(REPO / ".telemetry", kedro_project / ".telemetry")
    result = subprocess.run([str(kedro), "viz", "build"], cwd=kedro_project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    main = json.loads((kedro_project / "build" / "api" / "main").read_text())
    pipelines = {p["id"] for p in main["pipelines"]}
    assert {"ingestion", "split", "scratch_search", "scratch", "transfer", "evaluation",
            "evaluate_external", "predict", "__default__"} <= pipelines
    names = {n["name"] for n in main["nodes"]}
    assert {"ingestion_report", "face_splits", "transfer_training_info"} <= {n.split(".")[-1] for n in names} | names
    # the grid search shows its candidates by name, one namespaced pipeline each
    search = json.loads((kedro_project / "build" / "api" / "pipelines" / "scratch_search").read_text())
    assert {"scratch_search.cnn10", "scratch_search.cnn06"} <= set(search["modular_pipelines"])
    # evaluate_external's side-by-side report (one or several external datasets)
    external = json.loads((kedro_project / "build" / "api" / "pipelines" / "evaluate_external").read_text())
    assert "external_report" in {n["name"] for n in external["nodes"]}
    assert (kedro_project / "build" / "index.html").exists()
