"""Tracked runs (``tracked_runs``: one row per MLflow run and model) into a table and a plot."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _label(row: pd.Series) -> str:
    return f"{row['model']} @ {row['run_name']} {str(row['run_id'])[:8]}"


def _cell(value, ci, scale: float, digits: int) -> str:
    if value is None or pd.isna(value):
        return ""
    text = f"{value * scale:.{digits}f}"
    if isinstance(ci, list | tuple | np.ndarray) and len(ci) == 2:
        text += f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"
    return text


def differing_parameters(runs: pd.DataFrame) -> list[str]:
    """For each row, ``key=value`` of the parameters whose value differs between the runs of the
    same pipeline (run name) in ``runs`` (what tells two runs of ``transfer`` apart)."""
    out = []
    for _, row in runs.iterrows():
        same = [p for p, name in zip(runs["params"], runs["run_name"]) if name == row["run_name"]]
        keys = sorted({k for p in same for k in p})
        differ = [k for k in keys if len({p.get(k) for p in same}) > 1]
        out.append(", ".join(f"{k}={row['params'].get(k, '-')}" for k in differ))
    return out


def compare_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, str, plt.Figure]:
    """Every tracked (run, model), oldest first: the table (CSV; intervals as ``*_ci_low`` /
    ``*_ci_high`` columns; ``differs``: the parameters that tell it from other runs of its pipeline), the same as Markdown (gender accuracy in %, MAE in years, 95 %
    intervals in brackets) and a plot of gender accuracy against age MAE: test numbers with
    their interval bars for evaluation runs, best-epoch validation numbers (hollow) for
    training runs.

    Raises ``ValueError`` when there is no tracked run with a model."""
    if runs.empty:
        raise ValueError("no tracked run with a model yet: run a training or evaluation pipeline with "
                         "tracking on (AGE_GENDER_TRACKING=on), then rerun compare_runs")
    runs = runs.assign(differs=differing_parameters(runs))
    table = runs.drop(columns="params")
    for name in ("test_gender_accuracy", "test_age_mae"):
        ci = table.pop(f"{name}_ci")
        table[f"{name}_ci_low"] = [c[0] if isinstance(c, list | tuple) else np.nan for c in ci]
        table[f"{name}_ci_high"] = [c[1] if isinstance(c, list | tuple) else np.nan for c in ci]

    lines = ["| run | started (UTC) | commit | differs | model | test gender accuracy % [95 % CI] | test age MAE [95 % CI] "
             "| n | val gender accuracy % | val age MAE | epochs | train s | logged model |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, row in runs.iterrows():
        lines.append(" | ".join([
            f"| {row['run_name']} `{str(row['run_id'])[:8]}`", str(row["start_time"]), f"`{row['git_commit']}`",
            row["differs"] or "", str(row["model"]), _cell(row["test_gender_accuracy"], row["test_gender_accuracy_ci"], 100, 2),
            _cell(row["test_age_mae"], row["test_age_mae_ci"], 1, 3),
            "" if pd.isna(row["test_n"]) else f"{int(row['test_n'])}",
            _cell(row["val_gender_accuracy"], None, 100, 2), _cell(row["val_age_mae"], None, 1, 3),
            "" if pd.isna(row["epochs_run"]) else f"{int(row['epochs_run'])}",
            _cell(row["train_seconds"], None, 1, 1), "yes" if row["model_logged"] else "no"]) + " |")
    markdown = "# Tracked runs\n\n" + "\n".join(lines) + "\n"

    figure, axis = plt.subplots(figsize=(7, 5))
    for _, row in runs.iterrows():
        if not pd.isna(row["test_gender_accuracy"]):
            ci_a, ci_m = row["test_gender_accuracy_ci"], row["test_age_mae_ci"]
            xerr = [[row["test_age_mae"] - ci_m[0]], [ci_m[1] - row["test_age_mae"]]] if isinstance(ci_m, list | tuple) else None
            yerr = [[row["test_gender_accuracy"] - ci_a[0]], [ci_a[1] - row["test_gender_accuracy"]]] if isinstance(ci_a, list | tuple) else None
            axis.errorbar(row["test_age_mae"], row["test_gender_accuracy"], xerr=xerr, yerr=yerr, fmt="o",
                          capsize=3, label=f"{_label(row)} (test)")
        elif not pd.isna(row["val_gender_accuracy"]) and not pd.isna(row["val_age_mae"]):
            axis.plot(row["val_age_mae"], row["val_gender_accuracy"], "o", mfc="none", label=f"{_label(row)} (val)")
    axis.set_xlabel("age MAE (years, lower is better)")
    axis.set_ylabel("gender accuracy (higher is better)")
    axis.set_title("Tracked runs: test (filled, 95 % CI) and best-epoch validation (hollow)")
    if axis.has_data():
        axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return table, markdown, figure
