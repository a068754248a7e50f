"""Ablation runner: retrain one model (the final training node of ``transfer`` or ``scratch``) under
named parameter variants and compare each with the first variant on the held-out test split.

    python scripts/ablation.py --pipeline transfer \\
        --variant baseline= \\
        --variant unfreeze_all=transfer.fine_tune.unfreeze_last=200,transfer.fine_tune.learning_rate=1e-4

Each variant is ``name=overrides`` in ``kedro run --params`` form (``key.sub=value,...``; an empty
override is the configured recipe). The inputs the node needs (face cache, splits, cached
features, the tuned head ...) must exist: run ``kedro run --pipeline transfer`` (or ``scratch``)
once first. Every variant is validated before the first one trains. The project's own outputs
(models, metrics) are not touched; a variant with overrides keeps its checkpoint under
``<out>/checkpoints/<name>`` (rerun: it resumes), the configured recipe reuses the pipeline's.
Predictions go to ``<out>/<name>.parquet`` and the comparison
to ``<out>/ablation.json`` and ``<out>/ablation.md`` (default out: data/08_reporting/ablation_<pipeline>).
Rows: test-split gender accuracy and age MAE with 95 % bootstrap intervals, and the paired
difference to the first variant with its interval (``metrics.paired_difference``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

NODES = {  # pipeline -> (node inputs from the catalog, parameter groups, model name)
    "transfer": (["face_cache", "face_splits", "transfer_features", "backbone_provenance", "transfer_best_head",
                  "transfer_checkpoints"], ["transfer", "device"]),
    "scratch": (["face_cache", "face_splits", "scratch_search_winner", "scratch_checkpoints"],
                ["scratch", "scratch_training", "device"]),
}


def parse_overrides(text: str) -> dict:
    """``a.b=1,c=x`` -> {"a": {"b": 1}, "c": "x"} (numbers as numbers, like ``kedro run --params``)."""
    result: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise SystemExit(f"ERROR: override {item!r} has no '='. Fix: write key.sub=value.")
        key, value = item.split("=", 1)
        target = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = _value(value.strip())
    return result


def _value(text: str):
    """A number where the text is one (``1e-4`` too, which YAML 1.1 reads as a string), else YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_variants(texts: list[str]) -> dict[str, dict]:
    variants = {}
    for text in texts:
        name, _, overrides = text.partition("=")
        if not name or name in variants:
            raise SystemExit(f"ERROR: variant {text!r} needs a new, non-empty name. Fix: --variant name=overrides.")
        variants[name] = parse_overrides(overrides)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", choices=sorted(NODES), required=True)
    parser.add_argument("--variant", action="append", default=[], help="name=overrides (first: the reference)")
    parser.add_argument("--env", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--reference", action="store_true",
                        help="score the pipeline's saved model (catalog entry <pipeline>_model) as the "
                             "reference row instead of retraining the first variant")
    args = parser.parse_args()
    variants = parse_variants(args.variant)
    if not variants and not args.reference:
        raise SystemExit("ERROR: nothing to score. Fix: --variant baseline= --variant other=key=value, "
                         "or --reference for the saved model.")

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from age_gender.params import ParameterError, validate_parameters
    from age_gender.pipelines.scratch.nodes import train_scratch_model
    from age_gender.pipelines.transfer.nodes import train_transfer_model

    bootstrap_project(REPO)
    inputs, groups = NODES[args.pipeline]
    sessions = {}
    for name, overrides in variants.items():  # every setting checked before anything trains
        context = KedroSession.create(REPO, env=args.env, runtime_params=overrides).load_context()
        try:
            validate_parameters(context.params, groups + ["inference", "evaluation"])
        except ParameterError as error:
            raise SystemExit(f"ERROR: variant {name}: {error}") from None
        sessions[name] = context
    out = Path(args.out or REPO / "data" / "08_reporting" / f"ablation_{args.pipeline}")
    out.mkdir(parents=True, exist_ok=True)
    configured = KedroSession.create(REPO, env=args.env).load_context()
    from age_gender.training import configure_determinism

    configure_determinism(configured.params["device"])  # before any data loads: threads fix once, first
    catalog = configured.catalog
    data = {key: catalog.load(key) if catalog.exists(key) else None for key in inputs}
    checkpoints = inputs[-1]
    project_checkpoints = data[checkpoints]

    rows, predictions = [], {}
    if args.reference:
        variants = {"saved_model": {}, **variants}
        sessions = {"saved_model": configured, **sessions}
    for name, context in sessions.items():
        params = context.params
        if name == "saved_model" and args.reference:
            model, info = catalog.load(f"{args.pipeline}_model"), catalog.load(f"{args.pipeline}_training_info")
            _score(name, model, info, float(info.get("train_seconds") or 0), params, data, variants, out,
                   predictions, rows, args)
            continue
        # the configured recipe reuses the pipeline's (finished) checkpoint, the others their own
        data[checkpoints] = str(out / "checkpoints" / name) if variants[name] else project_checkpoints
        started = time.perf_counter()
        if args.pipeline == "transfer":
            model, _, info, _ = train_transfer_model(*(data[k] for k in inputs), params["transfer"], params["device"])
        else:
            model, _, info, _ = train_scratch_model(*(data[k] for k in inputs), params["scratch"],
                                                    params["scratch_training"], params["device"])
        seconds = time.perf_counter() - started
        _score(name, model, info, seconds, params, data, variants, out, predictions, rows, args)


def _score(name, model, info, seconds, params, data, variants, out, predictions, rows, args) -> None:
    """Predict the test split with ``model``, add its row (and paired difference to the first)."""
    from age_gender.metrics import Bootstrap, headline, model_metrics, paired_difference
    from age_gender.pipelines.evaluation.nodes import predict_test_split

    table = predict_test_split(data["face_cache"], data["face_splits"], params.get("inference"), **{name: model})
    table.to_parquet(out / f"{name}.parquet")
    predictions[name] = table
    setting = Bootstrap.from_params(params.get("evaluation"))
    row = {"variant": name, "overrides": variants[name], **headline(model_metrics(table, setting)),
           "node_seconds": round(seconds, 1), "epochs_run": info.get("epochs_run"),
           "best_epoch": info.get("best_epoch"), "out_of_time": info.get("out_of_time")}
    reference = next(iter(predictions))
    if name != reference and setting is not None:
        row["difference_to"] = reference
        row["difference"] = paired_difference(table, predictions[reference], setting)
    rows.append(row)
    print(json.dumps(row), flush=True)
    _write(out, args, rows)


def _write(out: Path, args, rows: list[dict]) -> None:
    """ablation.json and ablation.md, rewritten (atomically) after every variant."""
    payload = {"pipeline": args.pipeline, "env": args.env or "base", "rows": rows,
               "command": "python scripts/ablation.py " + " ".join(sys.argv[1:])}
    lines = ["| variant | overrides | gender acc. % [95 % CI] | age MAE [95 % CI] | vs first: gender pts | "
             "vs first: MAE | epochs | node s |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ci_g, ci_a = row.get("gender_accuracy_ci") or [None, None], row.get("age_mae_ci") or [None, None]
        gender = f"{row['gender_accuracy'] * 100:.2f}" + (f" [{ci_g[0] * 100:.1f}, {ci_g[1] * 100:.1f}]" if ci_g[0] is not None else "")
        mae = f"{row['age_mae']:.3f}" + (f" [{ci_a[0]:.2f}, {ci_a[1]:.2f}]" if ci_a[0] is not None else "")
        diff = row.get("difference")
        if diff:
            dg, dgc, da, dac = (diff["gender_accuracy"], diff["gender_accuracy_ci"], diff["age_mae"], diff["age_mae_ci"])
            d_gender = f"{dg * 100:+.2f} [{dgc[0] * 100:+.1f}, {dgc[1] * 100:+.1f}]"
            d_mae = f"{da:+.3f} [{dac[0]:+.2f}, {dac[1]:+.2f}]"
        else:
            d_gender = d_mae = "reference"
        overrides = ", ".join(f"{k}" for k in _flat(row["overrides"])) or "(configured recipe)"
        lines.append(f"| {row['variant']} | {overrides} | {gender} | {mae} | {d_gender} | {d_mae} | "
                     f"{row['epochs_run']} | {row['node_seconds']} |")
    for path, text in ((out / "ablation.json", json.dumps(payload, indent=2, default=str)),
                       (out / "ablation.md", "\n".join(lines) + "\n")):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _flat(tree: dict, prefix: str = "") -> list[str]:
    items = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items.extend(_flat(value, f"{prefix}{key}."))
        else:
            items.append(f"{prefix}{key}={value}")
    return items


if __name__ == "__main__":
    main()
