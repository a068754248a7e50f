"""scripts/ablation.py: variants parse like ``kedro run --params`` and bad ones stop before work."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablation.py"
spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def test_overrides_nest_and_read_values_as_yaml():
    assert ablation.parse_overrides("transfer.fine_tune.learning_rate=1e-4, transfer.age_head.kind=distribution") == {
        "transfer": {"fine_tune": {"learning_rate": 1e-4}, "age_head": {"kind": "distribution"}}}
    assert ablation.parse_variants(["base=", "b=a.b=3"]) == {"base": {}, "b": {"a": {"b": 3}}}


@pytest.mark.parametrize("variants, message", [
    (["base=", "base=a=1"], "needs a new, non-empty name"),
    (["x=novalue"], "has no '='"),
])
def test_bad_variants_are_refused_in_one_line(variants, message):
    with pytest.raises(SystemExit, match=message):
        ablation.parse_variants(variants)


def test_nothing_to_score_is_refused_before_kedro_starts():
    result = subprocess.run([sys.executable, str(SCRIPT), "--pipeline", "transfer"], capture_output=True, text=True)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].startswith("ERROR: nothing to score")
