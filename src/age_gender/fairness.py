"""Fairness report: how a model's errors differ between groups of faces, with intervals.

``fairness_report`` takes one model's prediction table (``reporting.prediction_table``: one row per
face with ``age`` (years), ``gender`` (0 male, 1 female), ``race`` (index into ``faces.RACES``),
``age_pred`` (years), ``gender_pred``) and returns, JSON-ready:

* ``cells``: one entry per race x gender x age band (every combination, empty ones included) with
  ``n``, ``gender_accuracy`` (fraction) and ``age_mae`` (years), each with its bootstrap interval
  (``metrics.interval``), and ``too_few: true`` when ``n < min_count`` (kept, marked, never hidden);
* ``groups``: the same numbers per race, per gender, per age band and per race x gender;
* ``weak`` in each group with enough faces: the metrics whose interval, widened for the number of
  groups compared (Bonferroni), lies entirely on the bad side of the whole table's number;
* ``worst`` / ``gap`` per level (``race``, ``gender``, ``age_band``, ``race_x_gender``, ``cell``):
  the worst group of each metric among groups with ``n >= min_count``, and the largest gap (worst
  minus best, an independent two-sample bootstrap interval of the difference of means);
* ``children`` (age 0-12) and ``elderly`` (70+), fixed definitions, each overall and by race.

Accuracy inside one gender's cell is that gender's recall. The worst of many small groups is
biased towards bad luck (the lowest of 60 noisy numbers): read a gap with its interval, and
prefer the coarser levels when the interval is wide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import bootstrap  # noqa: E402

from age_gender.faces import GENDERS, RACES  # noqa: E402
from age_gender.metrics import Bootstrap, absolute_error, correct, interval  # noqa: E402

CHILDREN = (0, 13)      # ages 0-12, years, [low, high)
ELDERLY = (70, 200)     # ages 70 and over
LEVELS = {"race": ["race"], "gender": ["gender"], "age_band": ["age_band"],
          "race_x_gender": ["race", "gender"], "cell": ["race", "gender", "age_band"]}
# metric -> (per-row values, True when higher is better, digits)
METRICS = {"gender_accuracy": (correct, True, 4), "age_mae": (absolute_error, False, 3)}


def band_labels(edges: Sequence[int]) -> list[str]:
    """Labels of the age bands ``[edges[i], edges[i+1])`` and a last open band: ``[0, 13, 70]``
    gives ``['0-12', '13-69', '70+']``. Raises ValueError unless the edges are increasing
    integers starting at 0."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"fairness age_bands must be increasing integers starting at 0, got {list(edges)}")
    return [f"{low}-{high - 1}" for low, high in zip(edges, edges[1:])] + [f"{edges[-1]}+"]


def assign_bands(ages: pd.Series, edges: Sequence[int]) -> pd.Categorical:
    """Each age's band label (``band_labels``), an ordered categorical."""
    labels = band_labels(edges)
    codes = np.searchsorted(np.asarray(edges, dtype=float), ages.to_numpy(dtype=float), side="right") - 1
    return pd.Categorical.from_codes(np.clip(codes, 0, len(labels) - 1), categories=labels, ordered=True)


def _stats(part: pd.DataFrame, setting: Bootstrap | None, min_count: int) -> dict[str, Any]:
    values: dict[str, Any] = {"n": int(len(part)), "too_few": bool(len(part) < min_count)}
    for metric, (per_row, _, digits) in METRICS.items():
        rows = per_row(part)
        values[metric] = round(float(rows.mean()), digits) if len(rows) else None
        if setting is not None:
            values[f"{metric}_ci"] = interval(rows, setting, digits)
    return values


def _gap_interval(worst: np.ndarray, best: np.ndarray, setting: Bootstrap, digits: int) -> list[float] | None:
    """Percentile interval of mean(worst) - mean(best), the two groups resampled independently."""
    if len(worst) < 2 or len(best) < 2:
        return None
    result = bootstrap((worst, best), lambda a, b, axis=-1: a.mean(axis=axis) - b.mean(axis=axis),
                       n_resamples=setting.resamples, confidence_level=setting.confidence,
                       method="percentile", vectorized=True, rng=np.random.default_rng(setting.seed))
    low, high = result.confidence_interval
    return [round(float(low), digits), round(float(high), digits)]


def _label(key: Any, columns: list[str]) -> dict[str, str]:
    key = key if isinstance(key, tuple) else (key,)
    names = {"race": lambda v: RACES[int(v)], "gender": lambda v: GENDERS[int(v)], "age_band": str}
    return {column: names[column](value) for column, value in zip(columns, key)}


def _level(table: pd.DataFrame, columns: list[str], setting: Bootstrap | None,
           min_count: int) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """(groups with their numbers, worst group per metric, largest gap per metric) of one level."""
    grouped = table.groupby(columns, observed=False, sort=True)
    groups, parts = [], []
    for key, part in grouped:
        groups.append({**_label(key, columns), **_stats(part, setting, min_count)})
        parts.append(part)
    worst: dict[str, Any] = {}
    gap: dict[str, Any] = {}
    eligible = [i for i, g in enumerate(groups) if not g["too_few"] and g["n"] > 0]
    if setting is not None and eligible:
        _mark_weak(table, groups, parts, eligible, setting)
    for metric, (per_row, higher_better, digits) in METRICS.items():
        if not eligible:
            worst[metric] = gap[metric] = None
            continue
        order = sorted(eligible, key=lambda i: groups[i][metric], reverse=higher_better)
        best_i, worst_i = order[0], order[-1]
        name = lambda i: " / ".join(groups[i][c] for c in columns)  # noqa: E731
        worst[metric] = {"group": name(worst_i), "n": groups[worst_i]["n"], "value": groups[worst_i][metric]}
        difference = round(groups[worst_i][metric] - groups[best_i][metric], digits)
        gap[metric] = {"worst": name(worst_i), "best": name(best_i), "value": difference}
        if setting is not None:
            worst[metric]["ci"] = groups[worst_i].get(f"{metric}_ci")
            gap[metric]["ci"] = _gap_interval(per_row(parts[worst_i]), per_row(parts[best_i]), setting, digits)
    return groups, worst, gap


def _mark_weak(table: pd.DataFrame, groups: list[dict[str, Any]], parts: list[pd.DataFrame],
               eligible: list[int], setting: Bootstrap) -> None:
    """Mark each eligible group ``weak`` (a list of metrics) where its interval, widened for the
    number of groups and metrics compared (Bonferroni: confidence ``1 - (1 - c) / m``), lies
    entirely on the bad side of the whole table's number; ``weak_ci`` holds those intervals.
    Without the widening, about 5 % of equal groups would be called weak by chance."""
    wide = Bootstrap(setting.resamples, 1 - (1 - setting.confidence) / (len(eligible) * len(METRICS)), setting.seed)
    for i in eligible:
        groups[i]["weak"], groups[i]["weak_ci"] = [], {}
        for metric, (per_row, higher_better, digits) in METRICS.items():
            overall = float(per_row(table).mean())
            ci = interval(per_row(parts[i]), wide, digits)
            if ci is not None and (ci[1] < overall if higher_better else ci[0] > overall):
                groups[i]["weak"].append(metric)
                groups[i]["weak_ci"][metric] = ci


def _age_group(table: pd.DataFrame, low: int, high: int, setting: Bootstrap | None,
               min_count: int) -> dict[str, Any]:
    part = table[(table["age"] >= low) & (table["age"] < high)]
    by_race = {RACES[int(r)]: _stats(p, setting, min_count) for r, p in part.groupby("race", sort=True)}
    return {"ages": f"{low}-{high - 1}" if high < 200 else f"{low}+", **_stats(part, setting, min_count),
            "by_race": by_race}


def fairness_report(predictions: pd.DataFrame, setting: Bootstrap | None, age_bands: Sequence[int],
                    min_count: int) -> dict[str, Any]:
    """The fairness report of one model's predictions (keys: see the module docstring).

    ``age_bands``: band edges in years (``band_labels``); ``min_count`` (>= 1): groups with fewer
    faces are marked ``too_few`` and never chosen as worst or best. ``setting`` None: no intervals.
    Raises ValueError on an empty table or one without ``race``, ``gender``, ``age`` columns.
    """
    needed = {"age", "gender", "race", "age_pred", "gender_pred"}
    if predictions.empty:
        raise ValueError("No prediction to report on: the split or dataset is empty.")
    if missing := sorted(needed - set(predictions.columns)):
        raise ValueError(f"The prediction table lacks {', '.join(missing)}: a fairness report needs "
                         "UTKFace labels (age, gender, race) for every face.")
    if int(min_count) < 1:
        raise ValueError(f"fairness min_count must be >= 1, got {min_count}")
    table = predictions.assign(
        race=pd.Categorical(predictions["race"].astype(int), categories=range(len(RACES))),
        gender=pd.Categorical(predictions["gender"].astype(int), categories=range(len(GENDERS))),
        age_band=assign_bands(predictions["age"], age_bands))
    report: dict[str, Any] = {"n": int(len(table)), "min_count": int(min_count),
                              "age_bands": band_labels(age_bands), "groups": {}, "worst": {}, "gap": {}}
    for level, columns in LEVELS.items():
        groups, worst, gap = _level(table, columns, setting, int(min_count))
        if level == "cell":
            report["cells"] = groups
        else:
            report["groups"][level] = groups
        report["worst"][level], report["gap"][level] = worst, gap
    report["children"] = _age_group(table, *CHILDREN, setting, int(min_count))
    report["elderly"] = _age_group(table, *ELDERLY, setting, int(min_count))
    report["too_few_cells"] = sum(c["too_few"] for c in report["cells"])
    if setting is not None:
        report["bootstrap"] = setting.describe()
    return report


def weak_groups(report: Mapping[str, Any], levels: Sequence[str] = ("race", "gender", "age_band", "race_x_gender")
                ) -> list[str]:
    """Sentences naming the groups ``fairness_report`` marked ``weak`` (interval, widened for the
    number of groups compared, entirely on the bad side of the model's overall number), with that
    interval; without intervals (no bootstrap), the worst group per level and metric instead."""
    overall = {metric: float(np.average([g[metric] for g in report["groups"]["gender"] if g["n"]],
                                        weights=[g["n"] for g in report["groups"]["gender"] if g["n"]]))
               for metric in METRICS}
    lines = []
    for level in levels:
        for group in report["groups"][level]:
            name = " / ".join(group[c] for c in LEVELS[level])
            for metric in group.get("weak", []):
                lines.append(f"{name} ({level}, n {group['n']}): {_format(metric, group[metric], group['weak_ci'][metric])} "
                             f"vs {_format(metric, overall[metric])} overall")
    if "bootstrap" not in report:
        for level in levels:
            for metric, worst in report["worst"][level].items():
                if worst:
                    lines.append(f"{worst['group']} ({level}, n {worst['n']}): worst "
                                 f"{metric.replace('_', ' ')}, {_format(metric, worst['value'])} (no interval)")
    return lines


def _format(metric: str, value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return "n/a"
    if metric == "gender_accuracy":
        text = f"{100 * value:.1f} %"
        return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    text = f"{value:.2f} y"
    return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def fairness_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown tables: race x gender rows, age band columns, one table per metric
    (``n`` in each cell; ``*`` marks cells under ``min_count``), then the worst groups and gaps."""
    bands = report["age_bands"]
    cells = {(c["race"], c["gender"], c["age_band"]): c for c in report["cells"]}
    text = []
    for metric, title in (("gender_accuracy", "Gender accuracy (%)"), ("age_mae", "Age MAE (years)")):
        text += [f"**{title}** per race x gender x age band (n in brackets; * fewer than "
                 f"{report['min_count']} faces, read with care)", "",
                 "| race | gender | " + " | ".join(bands) + " |", "| --- | --- |" + " --- |" * len(bands)]
        for race in RACES:
            for gender in GENDERS:
                row = []
                for band in bands:
                    c = cells[(race, gender, band)]
                    if not c["n"]:
                        row.append("-")
                        continue
                    value = 100 * c[metric] if metric == "gender_accuracy" else c[metric]
                    row.append(f"{value:.1f} ({c['n']}){'*' if c['too_few'] else ''}")
                text.append(f"| {race} | {gender} | " + " | ".join(row) + " |")
        text.append("")
    text += ["| level | worst gender accuracy | gap to best [95 % CI] | worst age MAE | gap to best [95 % CI] |",
             "| --- | --- | --- | --- | --- |"]
    for level in LEVELS:
        parts = []
        for metric in METRICS:
            worst, gap = report["worst"][level][metric], report["gap"][level][metric]
            if worst is None:
                parts += ["no group with enough faces", ""]
                continue
            scale = 100 if metric == "gender_accuracy" else 1
            unit = " points" if metric == "gender_accuracy" else " years"
            ci = gap.get("ci")
            parts += [f"{worst['group']} ({_format(metric, worst['value'], worst.get('ci'))}, n {worst['n']})",
                      f"{scale * gap['value']:+.2f}{unit}"
                      + (f" [{scale * ci[0]:+.2f}, {scale * ci[1]:+.2f}]" if ci else "") + f" vs {gap['best']}"]
        text.append(f"| {level} | " + " | ".join(parts) + " |")
    text.append("")
    for key in ("children", "elderly"):
        group = report[key]
        text.append(f"- {key} ({group['ages']}, n {group['n']}): gender accuracy "
                    f"{_format('gender_accuracy', group['gender_accuracy'], group.get('gender_accuracy_ci'))}, "
                    f"age MAE {_format('age_mae', group['age_mae'], group.get('age_mae_ci'))}")
    return "\n".join(text) + "\n"


def fairness_heatmap(reports: Mapping[str, Mapping[str, Any]]) -> plt.Figure:
    """Per model (rows of panels): gender accuracy and age MAE heat-maps, race x gender down,
    age band across; every cell shows its value and n, cells under ``min_count`` are hatched."""
    figure, axes = plt.subplots(len(reports), 2, figsize=(13, 4.8 * len(reports)), squeeze=False)
    for row, (name, report) in enumerate(reports.items()):
        bands = report["age_bands"]
        cells = {(c["race"], c["gender"], c["age_band"]): c for c in report["cells"]}
        labels = [f"{race} {gender[0].upper()}" for race in RACES for gender in GENDERS]
        for axis, metric, cmap, title in ((axes[row][0], "gender_accuracy", "RdYlGn", "gender accuracy (%)"),
                                          (axes[row][1], "age_mae", "RdYlGn_r", "age MAE (years)")):
            scale = 100 if metric == "gender_accuracy" else 1
            grid = np.full((len(labels), len(bands)), np.nan)
            for i, (race, gender) in enumerate((r, g) for r in RACES for g in GENDERS):
                for j, band in enumerate(bands):
                    c = cells[(race, gender, band)]
                    if c["n"]:
                        grid[i, j] = scale * c[metric]
            image = axis.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
            figure.colorbar(image, ax=axis, fraction=0.046)
            for i, (race, gender) in enumerate((r, g) for r in RACES for g in GENDERS):
                for j, band in enumerate(bands):
                    c = cells[(race, gender, band)]
                    if c["too_few"]:
                        axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                                     edgecolor="gray", linewidth=0))
                    if c["n"]:
                        axis.text(j, i, f"{grid[i, j]:.0f}\nn{c['n']}", ha="center", va="center", fontsize=6.5)
            axis.set_xticks(range(len(bands)), bands)
            axis.set_yticks(range(len(labels)), labels, fontsize=8)
            axis.set_xlabel("true age band")
            axis.set_title(f"{name}: {title} (hatched: n < {report['min_count']})", fontsize=10)
    figure.tight_layout()
    return figure


def _headline_line(metrics: Mapping[str, Any]) -> list[str]:
    gender, age = metrics["gender"], metrics["age"]
    return [f"| gender accuracy | {_format('gender_accuracy', gender['accuracy'], gender.get('accuracy_ci'))} |",
            f"| gender ROC AUC | {gender['roc_auc'] if gender.get('roc_auc') is not None else 'n/a'} |",
            f"| age MAE | {_format('age_mae', age['mae'], age.get('mae_ci'))} |",
            f"| age RMSE | {age['rmse']:.2f} y |",
            f"| age within 5 / 10 years | {100 * age['within_5']:.1f} % / {100 * age['within_10']:.1f} % |"]


def _detection_lines(predict_report: Mapping[str, Any] | None) -> list[str]:
    """Detection rates per race group from ``predict_report.json``'s ``found_by_race_measured``
    (written by ``predict``: {detector's measured ``by_race`` {group: share found}, ``largest_gap``,
    ``n_per_group``, ``measured_on``}, plus ``detector``), else one line saying they were not
    measured."""
    measured = (predict_report or {}).get("found_by_race_measured")
    rates = measured.get("by_race") if isinstance(measured, Mapping) else None
    if not isinstance(rates, Mapping) or not rates:
        return ["Not measured: no `predict_report.json` with detection rates per group was found "
                "(run `kedro run --pipeline predict`, or `python benchmarks/run.py --only bench_predict`)."]
    n = measured.get("n_per_group", "")
    lines = [f"Detector: {predict_report.get('detector', 'n/a')}; measured on {measured.get('measured_on', 'n/a')}.", "",
             "| group | faces found | n |", "| --- | --- | --- |"]
    lines += [f"| {group} | {100 * float(rate):.1f} % | {n} |" for group, rate in rates.items()]
    if measured.get("largest_gap") is not None:
        lines.append(f"\nLargest gap between groups: {100 * float(measured['largest_gap']):.1f} points")
    return lines


def _ensemble_lines(info: Mapping[str, Any]) -> list[str]:
    """The card's line for an ensemble (training info with ``ensemble_of``); none otherwise."""
    members = info.get("ensemble_of")
    if not members:
        return []
    return [f"- Ensemble: on every face the mean of the age and P(female) of {', '.join(f'`{m}`' for m in members)} "
            "(equal weights; each member has its own card); training time is the members' sum."]


def _teacher_lines(info: Mapping[str, Any]) -> list[str]:
    """The card's lines for a distilled model (training info with ``teacher``): which model
    labelled which faces, and that it is not the from-scratch protocol; none otherwise."""
    teacher = info.get("teacher")
    if not isinstance(teacher, Mapping):
        return []
    who = ", ".join(f"{k} {teacher[k]}" for k in ("model", "backbone", "pretrained", "input_size", "epochs_run")
                    if teacher.get(k) is not None)
    return [f"- Distilled: trained on {info.get('true_labelled_faces', '?')} faces with their true labels plus "
            f"{info.get('teacher_labelled_faces', '?')} faces of the `unused` split labelled by the teacher "
            f"({who or 'unknown'}; gender targets {info.get('gender_targets', '?')}).",
            f"- Protocol: {info.get('protocol') or 'not the from-scratch protocol (teacher-labelled faces)'}."]


def model_card(name: str, metrics: Mapping[str, Any], fairness: Mapping[str, Any],
               training_info: Mapping[str, Any] | None, data: Mapping[str, Any],
               predict_report: Mapping[str, Any] | None = None) -> str:
    """A model card (Markdown) for model ``name``: data (``data``: ``ingestion_id``, ``split_id``,
    split sizes), intended use and limits, headline metrics with intervals (``metrics``: one
    model's ``metrics.model_metrics``), the fairness tables (``fairness_report``), detection rates
    per group (``predict_report`` when it has them, else "not measured") and the known weak groups
    (``weak_groups``: computed). Raises ValueError when ``metrics`` and ``fairness`` were computed
    on a different number of faces (they would describe different predictions)."""
    if metrics["n"] != fairness["n"]:
        raise ValueError(f"The metrics ({metrics['n']} faces) and the fairness report ({fairness['n']} faces) of "
                         f"{name} describe different predictions: rerun `kedro run --pipeline evaluation`.")
    info = dict(training_info or {})
    trained = ", ".join(f"{k} {info[k]}" for k in ("backbone", "pretrained", "epochs_run", "best_epoch",
                                                   "weights_kept", "train_seconds", "out_of_time") if k in info)
    weak = weak_groups(fairness)
    sizes = ", ".join(f"{split} {count}" for split, count in data.get("split_sizes", {}).items())
    lines = [
        f"# Model card: `{name}`", "",
        "Generated by `kedro run --pipeline evaluation` from the test-split predictions; every number is "
        "measured, none is written by hand.", "",
        "## Model",
        f"- Multi-task face model: age in years (regression) and gender (probability of 'female'). Input: one "
        f"RGB face crop, 0-255, {info.get('input_size', 'model input size')} px square, aligned and cropped like UTKFace's "
        "'Aligned & Cropped Faces'; preprocessing is inside the model.",
        f"- Training: {trained or 'no training info recorded'}.", *_teacher_lines(info), *_ensemble_lines(info), "",
        "## Data",
        "- UTKFace (Zhang et al. 2017), labels from the file names (age 0-116, gender as annotated male/female, "
        "race as one of White, Black, Asian, Indian, Others).",
        f"- Ingestion id `{data.get('ingestion_id', 'unknown')}`, split id `{data.get('split_id', 'unknown')}` "
        f"(the model's training info records split id `{info.get('split_id', 'none')}`).",
        f"- Split sizes: {sizes or 'unknown'}. Scored on the held-out `test` split only (never trained or "
        "early-stopped on).", "",
        "## Intended use and limits",
        "- Intended: research and teaching on age and gender estimation, comparing recipes, and aggregate "
        "statistics where errors of several years are acceptable.",
        "- Not intended: decisions about individuals (age verification, access, hiring, policing), inferring "
        "gender identity (the labels are binary, annotated from appearance), or any use on faces unlike "
        "UTKFace crops without measuring it there first.",
        "- Limits: UTKFace's groups are unbalanced (few Indian, Others, children and elderly faces per cell); "
        "race labels are coarse; detection in real photos depends on the face detector (below).", "",
        "## Headline metrics (test split)", "",
        f"n = {metrics['n']}; intervals: 95 % percentile bootstrap over the test faces.", "",
        "| metric | value [95 % CI] |", "| --- | --- |", *_headline_line(metrics), "",
        "## Fairness", "", fairness_markdown(fairness),
        "## Face detection per group", "", *_detection_lines(predict_report), "",
        "## Known weak groups", "",
        f"Groups (with at least {fairness['min_count']} test faces) whose interval, widened for the number of "
        "groups compared (Bonferroni), lies entirely on the bad side of the overall number:", "",
        *([f"- {line}" for line in weak] or ["- none found at this sample size"]), "",
    ]
    return "\n".join(lines)
