"""scripts/compare_predictions.py on hand-made prediction tables: headlines, paired differences
against the first table, an ensemble, versioned folders and refusals."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from age_gender.reporting import prediction_table

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_predictions.py"
spec = importlib.util.spec_from_file_location("compare_predictions", SCRIPT)
compare_predictions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_predictions)


def _table(seed: int, model: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"file_name": [f"{i}.jpg" for i in range(200)], "cache_index": range(200),
                         "age": rng.integers(1, 80, 200), "gender": rng.integers(0, 2, 200), "race": 0})
    female = np.clip(rows["gender"] * 0.6 + rng.uniform(0, 0.5, 200), 0, 1)
    table = prediction_table(rows, rows["age"] + rng.normal(0, 5, 200), female.to_numpy())
    return table.assign(model=model) if model else table


def test_tables_are_compared_with_the_first_and_an_ensemble_is_their_mean(tmp_path):
    _table(1).to_parquet(tmp_path / "a.parquet")
    versioned = tmp_path / "evaluation_predictions.parquet"
    for version, seed in (("2026-01-01T00.00.00.000Z", 9), ("2026-02-01T00.00.00.000Z", 2)):
        (versioned / version).mkdir(parents=True)
        pd.concat([_table(seed, "scratch"), _table(seed + 10, "transfer")]).to_parquet(
            versioned / version / "evaluation_predictions.parquet")
    result = compare_predictions.main([f"a={tmp_path / 'a.parquet'}", f"b={versioned}:scratch",
                                       "--ensemble", "ab=a,b"])
    assert list(result["headlines"]) == ["a", "b", "ab"] and set(result["paired"]) == {"b", "ab"}
    b = _table(2)  # the newest version's scratch rows
    assert result["headlines"]["b"]["gender_accuracy"] == pytest.approx((b["gender"] == b["gender_pred"]).mean(), abs=1e-4)
    a = _table(1)
    mean = (a["age_pred"] + b["age_pred"]) / 2
    assert result["headlines"]["ab"]["age_mae"] == pytest.approx((mean - a["age"]).abs().mean(), abs=1e-3)
    paired = result["paired"]["b"]
    assert paired["n"] == 200 and paired["gender_accuracy_ci"][0] <= paired["gender_accuracy"] <= paired["gender_accuracy_ci"][1]


@pytest.mark.parametrize(("args", "message"), [
    (["nothing"], "name=path"),
    (["a={missing}"], "no such prediction table"),
    (["a={a}:transfer"], "holds no model 'transfer'"),
    (["a={a}", "b={a}", "--ensemble", "ab=a"], "at least two tables"),
    (["a={a}", "b={a}", "--ensemble", "ab=a,c"], "name a table not given"),
    (["a={a}", "b={a}", "--ensemble", "ab=a,a"], "at least two tables, each once"),
    (["a={a}", "b={a}", "--ensemble", "a=a,b"], "the name a is taken by a table"),
    (["a={a}", "a={a}"], "the name a is given twice"),
    (["a={both}", "b={a}"], r"holds the rows of several models \(scratch, transfer\): name one as a="),
    (["a={a}", "b={other}"], "b and a do not hold the same faces .* matched on cache_index and file_name"),
    (["a={a}", "b={fewer}"], r"b and a do not hold the same faces \(150 and 200 rows"),
])
def test_bad_arguments_are_one_line(tmp_path, args, message):
    _table(1, "scratch").to_parquet(tmp_path / "a.parquet")
    pd.concat([_table(1, "scratch"), _table(2, "transfer")]).to_parquet(tmp_path / "both.parquet")
    # the same row numbers, other files (another ingestion's cache), and a table of fewer faces
    _table(3, "scratch").assign(file_name=lambda t: "x" + t["file_name"]).to_parquet(tmp_path / "other.parquet")
    _table(4, "scratch").head(150).to_parquet(tmp_path / "fewer.parquet")
    paths = {name: tmp_path / f"{name}.parquet" for name in ("a", "missing", "both", "other", "fewer")}
    with pytest.raises(SystemExit, match=message):
        compare_predictions.main([arg.format(**paths) for arg in args])
