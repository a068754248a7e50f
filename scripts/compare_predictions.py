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
    elif "model" in table and table["model"].nunique() > 1:
        raise SystemExit(f"{path} holds the rows of several models ({', '.join(map(str, table['model'].unique()))}): "
                         f"name one as {name}={path}:<model>")
    return name, table.assign(model=name).reset_index(drop=True)


def check_same_faces(tables: dict[str, pd.DataFrame]) -> None:
    """Raise SystemExit (one line) unless every table holds the first one's faces: the same
    ``cache_index`` rows (else ``file_name``) and, where both are there, the same file in each row
    (tables from two ingestions can share row numbers and not faces)."""
    for name, table in tables.items():
        key = "cache_index" if "cache_index" in table else "file_name"
        if not table[key].is_unique:
            raise SystemExit(f"{name}: a face ({key}) is in the table more than once; give one model's rows")
    (first, reference), *others = tables.items()
    for name, table in others:
        key = "cache_index" if "cache_index" in table and "cache_index" in reference else "file_name"
        a, b = reference.sort_values(key, kind="stable"), table.sort_values(key, kind="stable")
        same = len(a) == len(b) and (a[key].to_numpy() == b[key].to_numpy()).all()
        if same and key == "cache_index" and "file_name" in a and "file_name" in b:
            same = bool((a["file_name"].to_numpy() == b["file_name"].to_numpy()).all())
        if not same:
            raise SystemExit(f"{name} and {first} do not hold the same faces ({len(b)} and {len(a)} rows, matched on "
                             f"{key}{' and file_name' if key == 'cache_index' else ''}): compare tables of one test split")


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
    tables: dict[str, pd.DataFrame] = {}
    for spec in args.tables:
        name, table = load_table(spec)
        if name in tables:
            raise SystemExit(f"{spec!r}: the name {name} is given twice; name each table once")
        tables[name] = table
    check_same_faces(tables)
    ensembles = {}
    for spec in args.ensemble:
        name, _, members = spec.partition("=")
        if name in tables or name in ensembles:
            raise SystemExit(f"--ensemble {spec!r}: the name {name} is taken by a table or another ensemble")
        ensembles[name] = [m for m in members.split(",") if m]
        if not name or len(ensembles[name]) < 2 or len(set(ensembles[name])) < len(ensembles[name]):
            raise SystemExit(f"--ensemble {spec!r}: give name=a,b with at least two tables, each once")
    result = compare(tables, ensembles, Bootstrap(2000, 0.95, 0))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
