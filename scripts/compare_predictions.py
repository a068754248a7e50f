"""Compare saved test-split prediction tables: each model's headline with its 95 % bootstrap
interval and the paired difference of every model against the first, on the same faces.

    python scripts/compare_predictions.py \\
        default=data/08_reporting/abl_lr4_tta/lr4.parquet \\
        scratch=data/07_model_output/evaluation_predictions.parquet:scratch \\
        --ensemble both=default,scratch

A table is ``name=path[:model]``: an ablation variant's ``<out>/<variant>.parquet`` or one model's
rows of a (versioned) ``evaluation_predictions.parquet`` (a folder of versions: the newest is read).
``--ensemble name=a,b,...`` adds the mean of those tables' age and P(female) per face, as
``evaluation.ensembles`` does (``reporting.ensemble_predictions``). Intervals: ``metrics.Bootstrap``
(2,000 resamples, 95 %, seed 0), pairs: ``metrics.paired_difference``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from age_gender.metrics import Bootstrap, headline, model_metrics, paired_difference
from age_gender.reporting import ensemble_predictions


def load_table(spec: str) -> tuple[str, pd.DataFrame]:
    """``name=path[:model]`` -> (name, the table's rows with ``model`` = name)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"{spec!r}: give a table as name=path[:model]")
    path, _, model = rest.partition(":")
    file = Path(path)
    if file.is_dir():  # a versioned dataset: its newest version
        versions = sorted(file.glob(f"*/{file.name}"))
        if not versions:
            raise SystemExit(f"{path}: a folder without versions of {file.name}")
        file = versions[-1]
    if not file.is_file():
        raise SystemExit(f"{path}: no such prediction table")
    table = pd.read_parquet(file)
    if model:
        if "model" not in table or model not in set(table["model"]):
            raise SystemExit(f"{path} holds no model {model!r}")
        table = table[table["model"] == model]
    return name, table.assign(model=name).reset_index(drop=True)


def compare(tables: dict[str, pd.DataFrame], ensembles: dict[str, list[str]], setting: Bootstrap) -> dict:
    """Headlines of every table and ensemble, and each one minus the first table."""
    stacked, kept = ensemble_predictions(pd.concat(tables.values(), ignore_index=True), ensembles)
    missing = sorted(set(ensembles) - set(kept))
    if missing:
        raise SystemExit(f"ensemble(s) {', '.join(missing)} name a table not given")
    parts = {name: stacked[stacked["model"] == name] for name in [*tables, *kept]}
    first = next(iter(tables))
    return {"headlines": {name: headline(model_metrics(part, setting)) for name, part in parts.items()},
            "paired_against": first,
            "paired": {name: paired_difference(part, parts[first], setting)
                       for name, part in parts.items() if name != first}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="name=path[:model]")
    parser.add_argument("--ensemble", action="append", default=[], help="name=table,table,...")
    args = parser.parse_args(argv)
    tables = dict(load_table(spec) for spec in args.tables)
    ensembles = {}
    for spec in args.ensemble:
        name, _, members = spec.partition("=")
        ensembles[name] = [m for m in members.split(",") if m]
        if len(ensembles[name]) < 2:
            raise SystemExit(f"--ensemble {spec!r}: give name=a,b with at least two tables")
    result = compare(tables, ensembles, Bootstrap(2000, 0.95, 0))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
