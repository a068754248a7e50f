"""benchmarks/run.py's output file: ``--only`` adds to it instead of wiping a full run's figures,
and a run of another kind (``--quick`` over full-size figures, another machine) is refused."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
spec = importlib.util.spec_from_file_location("bench_run", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

MACHINE = {"machine": "AMD EPYC", "cpu": "AMD EPYC", "gpu": None, "cores": 2}


def _report(quick, results, **machine):
    return {**MACHINE, **machine, "quick": quick, "results": results}


def test_a_partial_run_keeps_the_results_it_did_not_rerun():
    full = _report(False, {"bench_ingestion": {"ingestion_images_per_s": 1046.5}, "bench_predict": {"old": 1}})
    merged = bench.merge_report(full, _report(False, {"bench_predict": {"mtcnn_photos_per_s": 22.2}}))
    assert merged["results"] == {"bench_ingestion": {"ingestion_images_per_s": 1046.5},
                                 "bench_predict": {"mtcnn_photos_per_s": 22.2}}
    assert bench.merge_report(None, _report(True, {"b": {}})) == _report(True, {"b": {}})
    # every benchmark rerun at full size replaces a --quick file
    assert bench.merge_report(_report(True, {"b": {"x": 1}}), _report(False, {"b": {"x": 2}}))["results"] == {"b": {"x": 2}}


@pytest.mark.parametrize("previous, report", [
    (_report(False, {"a": {}, "b": {}}), _report(True, {"b": {}})),       # --quick beside full-size figures
    (_report(False, {"b": {"x": 1}}), _report(True, {"b": {"x": 2}})),    # --quick over full-size figures
    (_report(False, {"a": {}}), _report(False, {"b": {}}, machine="NVIDIA H200", cores=16)),  # another machine
])
def test_results_of_another_kind_are_neither_mixed_nor_replaced(previous, report):
    with pytest.raises(ValueError, match=r"^out.json holds .* pass --output another.json"):
        bench.merge_report(previous, report, "out.json")


def test_the_script_refuses_before_running_anything_and_leaves_the_file(tmp_path):
    output = tmp_path / "benchmarks.json"
    full = {**bench.machine(), "quick": False, "results": {"bench_ingestion": {"ingestion_images_per_s": 1046.5}}}
    output.write_text(json.dumps(full))
    env = {**os.environ, "UTKFACE_ARCHIVE": os.environ.get("UTKFACE_ARCHIVE", str(SCRIPT))}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "bench_crop_framing",
                           "--output", str(output)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"ERROR: {output} holds full-size results on ")
    assert "bench_crop_framing {" not in done.stdout  # refused before the benchmark ran
    assert json.loads(output.read_text()) == full
