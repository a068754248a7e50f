"""Experiment tracking: every ``kedro run`` of a training or evaluation pipeline is an MLflow run.

The run itself (start, the parameters every node reads, end, failure) is kedro-mlflow's
``MlflowHook`` (:func:`mlflow_hook`: a node's parameters in one batch), configured by
``conf/base/mlflow.yml``; ``hooks.TrackingHooks`` drives it and calls
:class:`RunRecorder` after each node, which records what the node returned:

* every number of a JSON-like output (training info, evaluation metrics, headlines ...) as a
  metric named ``<dataset>.<key>.<key>`` (a ``*_ci`` pair becomes ``*_ci_low`` / ``*_ci_high``);
* every ``*_history`` output per epoch (``step`` = epoch, 0-based), and beside a training info its
  validation metrics at the best epoch (``<model>.best.val_*``);
* every file the catalog writes for a node (plots, reports, tables) as an artifact under
  ``outputs/``, once it is saved: the exact file of this run (the versioned one when the entry is
  versioned);
* every Keras model in MLflow's Keras flavour, as a logged model named after its dataset (load it
  back with :func:`load_model`: ``runs:/<run id>/scratch_model``);
* grid-search candidates (``scratch_search.<name>.search_result``), the backbone comparison's
  backbones and the Hyperband trials as child runs (``mlflow.parentRunId``), so the UI shows a
  search as one expandable row;
* the git commit (``mlflow.source.git.commit``, ``git_dirty``) and the environment (``kedro_env``).

The store: ``MLFLOW_TRACKING_URI`` or ``server.mlflow_tracking_uri`` in ``mlflow.yml`` when set
(a server: ``http://host:5000``), else the SQLite file ``mlflow.db`` in the project root with
artifacts under ``mlruns/`` (both git-ignored). ``AGE_GENDER_TRACKING=off`` turns tracking off.

:func:`tracked_runs` reads the runs back as one row per (run, model); ``compare_runs`` (pipeline
``compare_runs``) turns them into a table and a plot.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)

#: Environment variable that switches tracking: ``on`` (default) or ``off``.
SWITCH = "AGE_GENDER_TRACKING"
#: The default store, relative to the project root.
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlruns"
EXPERIMENT = "age_gender"
#: Tag naming the project's kind of run (pipeline run, or child: candidate, backbone, trial).
KIND_TAG = "age_gender.kind"
MAX_METRICS_PER_OUTPUT = 900
MAX_ARTIFACT_BYTES = 200 * 2**20

_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def tracking_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether runs are tracked (``AGE_GENDER_TRACKING``, default on).

    Raises ``ValueError`` (one line naming the fix) for a value that is neither on nor off."""
    value = environ.get(SWITCH, "on").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{SWITCH}={environ[SWITCH]!r} is neither on nor off: set {SWITCH}=on or {SWITCH}=off")


def default_store(project_path: str | Path) -> str:
    """The tracking URI a run uses when neither ``MLFLOW_TRACKING_URI`` nor ``mlflow.yml`` names
    one: ``sqlite:///<project>/mlflow.db`` (absolute, so it does not depend on the working folder)."""
    return f"sqlite:///{(Path(project_path) / DEFAULT_DB).resolve()}"


@contextmanager
def store_for(project_path: str | Path) -> Iterator[None]:
    """Within the block, ``MLFLOW_TRACKING_URI`` defaults to :func:`default_store` (kedro-mlflow
    reads it when ``mlflow.yml`` names no URI); the environment is restored afterwards."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if given is None:
        os.environ["MLFLOW_TRACKING_URI"] = default_store(project_path)
    try:
        yield
    finally:
        if given is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


#: MLflow's limit on the parameters of one ``log_batch``.
MAX_PARAMS_PER_BATCH = 100


def mlflow_hook() -> Any:
    """kedro-mlflow's ``MlflowHook`` (the run's start, parameters, end and failure, unchanged), except
    that the parameters a node reads are written in one ``log_batch`` per node (chunks of
    :data:`MAX_PARAMS_PER_BATCH`) instead of one ``log_param``, hence one SQLite commit, each:
    the 35 parameters of a ``scratch`` run took 0.6-1.5 s one by one on the shared 2-core machine
    and 0.02-0.08 s batched (docs/tracking.md). A value over MLflow's length limit still follows
    ``long_params_strategy`` (``tag``, ``truncate`` or ``fail``) exactly as kedro-mlflow does.
    Importing this imports MLflow: call it only for a tracked run."""
    return _batched_hook_class()()


@functools.cache  # one class per process, built on first use (it imports MLflow)
def _batched_hook_class() -> Any:
    import mlflow
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    class BatchedParamsMlflowHook(MlflowHook):
        def __init__(self) -> None:
            super().__init__()
            self._node = threading.local()  # the parameters of the node this thread is starting (ThreadRunner)

        def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool) -> None:
            self._node.pending = pending = {}
            try:
                super().before_node_run(node=node, catalog=catalog, inputs=inputs, is_async=is_async)
            finally:
                self._node.pending = None
            active = mlflow.active_run()
            if pending and active is not None:
                batch = [Param(key, value) for key, value in pending.items()]
                client = MlflowClient()
                for start in range(0, len(batch), MAX_PARAMS_PER_BATCH):
                    client.log_batch(active.info.run_id, params=batch[start:start + MAX_PARAMS_PER_BATCH])

        def _log_param(self, name: str, value: Any) -> None:
            text = str(value)
            pending = getattr(self._node, "pending", None)
            if pending is None or len(text) > MAX_PARAM_VAL_LENGTH:
                return super()._log_param(name, value)  # the configured long_params_strategy
            pending[name] = text
            return None

    return BatchedParamsMlflowHook


def git_state(project_path: str | Path) -> dict[str, str]:
    """``mlflow.source.git.commit`` (HEAD) and ``git_dirty`` (``true`` when tracked files differ
    from it) of the project's checkout; empty when it is not a git checkout or git is missing."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=project_path, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git_dirty": str(dirty).lower()}


# --- turning outputs into metrics ----------------------------------------------------------------

_KEY = re.compile(r"[^\w\-. /]")


def metric_key(*parts: Any) -> str:
    """An MLflow metric name from ``parts`` joined by ``.`` (characters MLflow refuses become ``_``)."""
    return _KEY.sub("_", ".".join(str(p) for p in parts if p != ""))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    try:  # numpy scalars
        import numpy as np

        if isinstance(value, np.generic) and np.issubdtype(value.dtype, np.number):
            number = float(value)
            return number if math.isfinite(number) else None
    except ImportError:  # pragma: no cover
        pass
    return None


def numeric_leaves(data: Any, prefix: str) -> dict[str, float]:
    """Every finite number in a JSON-like value, keyed ``prefix.key.key``; a two-number ``*_ci``
    list becomes ``*_ci_low`` and ``*_ci_high``; other lists, strings and None are skipped.

    >>> numeric_leaves({"gender": {"accuracy": 0.9, "accuracy_ci": [0.88, 0.92]}, "n": 10}, "m")
    {'m.gender.accuracy': 0.9, 'm.gender.accuracy_ci_low': 0.88, 'm.gender.accuracy_ci_high': 0.92, 'm.n': 10.0}
    """
    found: dict[str, float] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = metric_key(prefix, key)
            if str(key).endswith("_ci") and isinstance(value, list | tuple) and len(value) == 2:
                low, high = _number(value[0]), _number(value[1])
                if low is not None and high is not None:
                    found[f"{name}_low"], found[f"{name}_high"] = low, high
            else:
                found.update(numeric_leaves(value, name))
    else:
        number = _number(data)
        if number is not None:
            found[prefix] = number
    return found


def history_series(history: Mapping[str, Any], prefix: str) -> dict[str, list[float]]:
    """The per-epoch series of a Keras history (``{metric: [epoch values]}``), or of a history of
    stages (``{stage: {metric: [...]}}``: ``prefix.stage.metric``)."""
    series: dict[str, list[float]] = {}
    for key, value in history.items():
        if isinstance(value, Mapping):
            series.update(history_series(value, metric_key(prefix, key)))
        elif isinstance(value, list | tuple):
            series[metric_key(prefix, key)] = [_number(v) for v in value]
    return series


def best_epoch_metrics(history: Mapping[str, Any], best_epoch: int, prefix: str, label: str = "best") -> dict[str, float]:
    """Validation metrics (``val_*``) at ``best_epoch`` (1-based, as in the training info) of the
    last stage of ``history`` (a transfer model's ``fine_tune``), keyed ``prefix.<label>.val_*``
    (``label`` ``last`` for the last epoch, whose weights a ``restore_best_weights: false`` model keeps)."""
    stages = [v for v in history.values() if isinstance(v, Mapping)]
    last = stages[-1] if stages else history
    found = {}
    for key, values in last.items():
        if str(key).startswith("val_") and isinstance(values, list | tuple) and 1 <= best_epoch <= len(values):
            number = _number(values[best_epoch - 1])
            if number is not None:
                found[metric_key(prefix, label, key)] = number
    return found


def _is_keras_model(value: Any) -> bool:
    return type(value).__module__.startswith(("keras", "tf_keras")) and hasattr(value, "count_params")


def saved_files(dataset: Any, value: Any) -> list[Path]:
    """The local files the catalog just wrote for ``value`` through ``dataset``: the versioned
    file of this run's save version when the entry is versioned, each partition of a partitioned
    folder; nothing for memory, folder, model or remote datasets."""
    from kedro.io import AbstractVersionedDataset

    from age_gender.datasets import KerasModelDataset, SwappedFolderDataset, WorkingDirectoryDataset

    if dataset is None or isinstance(dataset, KerasModelDataset | SwappedFolderDataset | WorkingDirectoryDataset):
        return []
    if type(dataset).__name__ == "PartitionedDataset" and isinstance(value, Mapping):
        folder, suffix = Path(str(dataset._normalized_path)), dataset._filename_suffix
        return [p for p in (folder / f"{key}{suffix}" for key in value) if p.is_file()]
    if getattr(dataset, "_protocol", "file") not in ("file", None):
        return []
    filepath = getattr(dataset, "_filepath", None)
    if filepath is None:
        return []
    if isinstance(dataset, AbstractVersionedDataset) and getattr(dataset, "_version", None) is not None:
        path = Path(str(dataset._get_versioned_path(dataset.resolve_save_version())))
    else:
        path = Path(str(filepath))
    return [path] if path.is_file() else []


# --- recording one run ---------------------------------------------------------------------------


class RunRecorder:
    """Writes what the nodes of one Kedro run return into its MLflow run ``run_id`` (through an
    ``MlflowClient``, so it needs no active run and children never become the active run)."""

    def __init__(self, run_id: str, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.experiment_id = self.client.get_run(run_id).info.experiment_id

    def tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def metrics(self, values: Mapping[str, float], run_id: str | None = None, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in values.items()]
        for start in range(0, len(batch), 1000):  # MLflow's batch limit
            self.client.log_batch(run_id or self.run_id, metrics=batch[start:start + 1000])

    def series(self, series: Mapping[str, list[float | None]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, values in series.items()
                 for step, v in enumerate(values) if v is not None]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])

    def child(self, name: str, kind: str, params: Mapping[str, Any], metrics: Mapping[str, float],
              failed: bool = False) -> str:
        """A finished child run of this run (``mlflow.parentRunId``) with flat ``params`` and ``metrics``."""
        from mlflow.entities import Metric, Param, RunStatus, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={MLFLOW_PARENT_RUN_ID: self.run_id, KIND_TAG: kind})
        now = int(time.time() * 1000)
        self.client.log_batch(run.info.run_id,
                              metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                              params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                              tags=[RunTag(MLFLOW_RUN_NAME, name)])
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))
        return run.info.run_id

    def artifact(self, path: Path, folder: str) -> None:
        if path.stat().st_size <= MAX_ARTIFACT_BYTES:
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
        else:
            logger.info("Not tracked (over %d MiB): %s", MAX_ARTIFACT_BYTES >> 20, path)

    def model(self, name: str, model: Any) -> None:
        """``model`` in MLflow's Keras flavour as the run's logged model ``name`` (load it with
        ``load_model("runs:/<run id>/<name>")`` (no pip inference:
        the environment is this project's)."""
        import mlflow
        import mlflow.keras

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            with mlflow.start_run(run_id=self.run_id, nested=active is not None):
                self._log_model(name, model)
        else:
            self._log_model(name, model)

    @staticmethod
    def _log_model(name: str, model: Any) -> None:
        import mlflow.keras

        from age_gender import __version__

        mlflow.keras.log_model(model, name=name, pip_requirements=[f"age_gender=={__version__}"])

    # --- one node -------------------------------------------------------------------------------

    def record_node(self, node_name: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any],
                    catalog: Any) -> None:
        """Everything :mod:`age_gender.tracking` records for one node's ``outputs``."""
        numbers: dict[str, float] = {}
        for name, value in outputs.items():
            if _is_keras_model(value):
                self.model(name, value)
            elif name.endswith("_history") and isinstance(value, Mapping):
                self.series(history_series(value, name))
                info = outputs.get(name.removesuffix("_history") + "_training_info")
                if isinstance(info, Mapping) and isinstance(info.get("best_epoch"), int):
                    numbers.update(best_epoch_metrics(value, info["best_epoch"], name.removesuffix("_history")))
                if isinstance(info, Mapping) and info.get("weights_kept") == "last" and isinstance(info.get("epochs_run"), int):
                    numbers.update(best_epoch_metrics(value, info["epochs_run"], name.removesuffix("_history"), "last"))
            elif name.endswith(".search_result") and isinstance(value, Mapping):
                self._candidate(name, value, inputs)
            elif isinstance(value, Mapping):
                leaves = numeric_leaves(value, name)
                if len(leaves) > MAX_METRICS_PER_OUTPUT:
                    logger.info("%s has %d numbers; the first %d are tracked", name, len(leaves), MAX_METRICS_PER_OUTPUT)
                numbers.update(dict(list(leaves.items())[:MAX_METRICS_PER_OUTPUT]))
            if name == "backbone_comparison":
                self._table_children(value, "backbone", "backbone")
            elif name == "transfer_best_head" and isinstance(value, Mapping):
                self._hyperband_trials(value, inputs)
        if numbers:
            self.metrics(numbers)

    def record_saved(self, name: str, value: Any, catalog: Any) -> None:
        """The files the catalog has just written for output ``name``, as artifacts under
        ``outputs/`` (Kedro saves outputs after ``after_node_run``: this is called from
        ``after_dataset_saved``, so the file logged is the one this run wrote)."""
        dataset = _dataset(catalog, name)
        partitioned = type(dataset).__name__ == "PartitionedDataset"
        for path in saved_files(dataset, value):
            self.artifact(path, f"outputs/{path.parent.name}" if partitioned else "outputs")

    def _candidate(self, name: str, result: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
        candidate = name.split(".")[1]
        params = {k.removeprefix("params:").rsplit(".", 1)[-1]: v for k, v in inputs.items()
                  if k.startswith(f"params:scratch_search.grid.{candidate}")}
        flat = _flat_params(params.get(candidate, {}))
        scores = {k: v for k, v in numeric_leaves(result, "").items() if k not in flat}  # not its settings again
        self.child(candidate, "candidate", flat, scores, failed=result.get("status") == "failed")

    def _table_children(self, table: Any, column: str, kind: str) -> None:
        import pandas as pd

        if not isinstance(table, pd.DataFrame) or column not in table:
            return
        for row in table.to_dict("records"):
            numbers = {metric_key(k): v for k, v in row.items() if _number(v) is not None and not isinstance(v, bool)}
            params = {k: v for k, v in row.items() if k not in numbers and k != column}
            self.child(str(row[column]), kind, params, numbers)

    def _hyperband_trials(self, best: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
        trials = hyperband_trials(inputs.get("hyperband_trials"), best.get("structure"))
        for trial in trials:
            self.child(f"trial {trial['trial_id']}", "hyperband_trial", trial["params"], trial["metrics"],
                       failed=trial["status"] not in ("COMPLETED",))


def _dataset(catalog: Any, name: str) -> Any:
    try:
        return catalog.get(name)
    except Exception:  # noqa: BLE001  (a name the catalog cannot resolve is simply not a file)
        return None


def _flat_params(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix or "value": data}


def hyperband_trials(trials_dir: str | None, structure: str | None) -> list[dict[str, Any]]:
    """The trials of the newest keras-tuner project for ``structure`` in ``trials_dir``: id,
    hyperparameters, status and the best value of each metric (score included)."""
    if not trials_dir or not Path(trials_dir).is_dir():
        return []
    projects = [p for p in Path(trials_dir).iterdir() if p.is_dir() and (p / "oracle.json").is_file()
                and (structure is None or f"_{structure}_" in p.name)]
    if not projects:
        return []
    project = max(projects, key=lambda p: (p / "oracle.json").stat().st_mtime)
    found = []
    for path in sorted(project.glob("trial_*/trial.json")):
        try:
            trial = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        metrics = {}
        for name, record in ((trial.get("metrics") or {}).get("metrics") or {}).items():
            values = [v for obs in record.get("observations", []) for v in obs.get("value", [])]
            values = [v for v in values if _number(v) is not None]
            if values:
                metrics[metric_key(name)] = float(max(values) if record.get("direction") == "max" else min(values))
        if _number(trial.get("score")) is not None:
            metrics["score"] = float(trial["score"])
        found.append({"trial_id": trial.get("trial_id", path.parent.name), "status": trial.get("status", "?"),
                      "params": (trial.get("hyperparameters") or {}).get("values") or {}, "metrics": metrics})
    return found


# --- reading runs back ---------------------------------------------------------------------------


def load_model(model_uri: str) -> Any:
    """A Keras model logged by a run (``runs:/<run id>/<dataset>``, e.g. ``runs:/4f0c.../transfer_model``,
    or ``models:/<model id>``),
    with the project's custom layers registered."""
    import mlflow.keras

    import age_gender.models  # noqa: F401  (registers the custom layers)

    return mlflow.keras.load_model(model_uri)


def tracked_runs(tracking_uri: str, experiment: str = EXPERIMENT) -> list[dict[str, Any]]:
    """One row per (top-level run, model) of ``experiment``: run id, name, start (UTC), status,
    git commit, Kedro env and command, its parameters (a dict), and the model's metrics: test gender accuracy and age MAE
    with their 95 % interval and ``n`` (evaluation runs), best-epoch validation metrics, epochs
    and seconds (training runs), and whether the run logged the model itself.

    Raises ``ValueError`` when the store has no such experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no experiment '{experiment}' in the MLflow store {tracking_uri}: run a training or "
                         "evaluation pipeline with tracking on first (AGE_GENDER_TRACKING=on)")
    runs = client.search_runs([found.experiment_id], filter_string="", max_results=5000,
                              order_by=["attributes.start_time ASC"])
    logged: dict[str, set[str]] = {}
    for model in client.search_logged_models([found.experiment_id], max_results=5000):
        logged.setdefault(model.source_run_id, set()).add(model.name)
    rows = []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags:
            continue
        metrics = run.data.metrics
        base = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
                "params": dict(run.data.params),
                "start_time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.info.start_time / 1000)),
                "git_commit": tags.get("mlflow.source.git.commit", "")[:10], "env": tags.get("env", ""),
                "command": tags.get("kedro_command", "")}
        for model in _models_in(metrics):
            row = {**base, "model": model}
            for target, source in (("test_gender_accuracy", f"test_metrics.{model}.gender_accuracy"),
                                   ("test_age_mae", f"test_metrics.{model}.age_mae"),
                                   ("test_n", f"test_metrics.{model}.n"),
                                   ("val_gender_accuracy", f"{model}.best.val_gender_accuracy"),
                                   ("val_age_mae", f"{model}.best.val_age_mae"),
                                   ("epochs_run", f"{model}_training_info.epochs_run"),
                                   ("train_seconds", f"{model}_training_info.train_seconds")):
                row[target] = metrics.get(source)
            for target in ("epochs_run", "train_seconds"):  # an evaluation run: how the judged model trained
                if row[target] is None:
                    row[target] = metrics.get(f"test_metrics.{model}.{target}")
            for target in ("gender_accuracy", "age_mae"):
                low = metrics.get(f"test_metrics.{model}.{target}_ci_low")
                high = metrics.get(f"test_metrics.{model}.{target}_ci_high")
                row[f"test_{target}_ci"] = [low, high] if low is not None and high is not None else None
            row["model_logged"] = f"{model}_model" in logged.get(run.info.run_id, set())
            rows.append(row)
    return rows


def _models_in(metrics: Mapping[str, float]) -> list[str]:
    names = set()
    for key in metrics:
        match = re.match(r"test_metrics\.([^.]+)\.gender_accuracy$", key) or \
            re.match(r"([^.]+)_training_info\.epochs_run$", key)
        if match:
            names.add(match.group(1))
    return sorted(names)


def resolve_store(tracking_uri: str | None) -> str:
    """``tracking_uri`` when given, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the working
    folder (the project root under ``kedro run``)."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_store(Path.cwd())


class TrackedRunsDataset(AbstractDataset[None, Any]):
    """The runs of an MLflow experiment as a DataFrame, one row per (top-level run, model)
    (columns :data:`RUN_COLUMNS`, see :func:`tracked_runs`). Read-only. ``tracking_uri``: null
    means ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the project root.

    Raises ``DatasetError`` (one line, with the fix) when the store has no such experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT,
                 metadata: dict[str, Any] | None = None) -> None:
        self._tracking_uri = tracking_uri
        self._experiment = experiment
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"tracking_uri": self._tracking_uri, "experiment": self._experiment}

    def _exists(self) -> bool:
        return True

    def load(self) -> Any:
        import pandas as pd

        try:
            rows = tracked_runs(resolve_store(self._tracking_uri), self._experiment)
        except ValueError as error:
            raise DatasetError(str(error)) from None
        return pd.DataFrame(rows, columns=RUN_COLUMNS)

    def save(self, data: Any) -> None:
        raise DatasetError("tracked_runs is read from MLflow (runs are recorded by `kedro run`); it is never saved")


#: Columns of :func:`tracked_runs` rows, in table order.
RUN_COLUMNS = ["run_id", "run_name", "status", "start_time", "git_commit", "env", "command", "params", "model",
               "test_gender_accuracy", "test_gender_accuracy_ci", "test_age_mae", "test_age_mae_ci", "test_n",
               "val_gender_accuracy", "val_age_mae", "epochs_run", "train_seconds", "model_logged"]
