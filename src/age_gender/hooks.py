"""Project hooks: fail fast, before any node runs, when the raw data a run needs is missing."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import DatasetError

from age_gender.datasets import DATA_HELP, written_by_a_pipeline
from age_gender.lineage import ActionableError

logger = logging.getLogger(__name__)

RAW_INPUTS = ("utkface_raw", "external_raw", "photos_raw")


class RuntimeHooks:
    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        external = check_external_datasets(pipeline, catalog, env=run_params.get("env"))
        if external and (run_params.get("runtime_params") or {}).get("external_faces"):
            raise DatasetError(f"--params external_faces points the single entry external_raw, but external.datasets "
                               f"lists {', '.join(external)}, so it would be ignored; add those faces as a catalog "
                               f"entry to external.datasets, or set external.datasets: []")
        for name in (*RAW_INPUTS, *external):
            if name in pipeline.inputs() and not catalog.exists(name):
                dataset = catalog.get(name)
                where = getattr(dataset, "_filepath", "?")
                advice = getattr(dataset, "help", None) or DATA_HELP  # each raw input names its own setting
                raise DatasetError(f"The run needs '{name}' but nothing is at '{where}'. {advice}")


def conf_folder(env: str | None) -> str:
    """The folder a run's own settings belong in: ``conf/<env>`` for ``--env <env>``, else
    ``conf/local`` (``--env smoke`` reads ``conf/base`` and ``conf/smoke``, not ``conf/local``)."""
    return f"conf/{env}" if env and env != "local" else "conf/local"


def check_external_datasets(pipeline: Any, catalog: Any, env: str | None = None) -> list[str]:
    """The ``external.datasets`` entries this pipeline reads; each must be a ``FaceSourceDataset``
    catalog entry, else ``DatasetError`` (one line naming the entry and where to define it: the
    run's ``--env`` folder, since ``--env smoke`` reads ``conf/base`` and ``conf/smoke``, not
    ``conf/local``)."""
    folder = conf_folder(env)
    from age_gender.datasets import FaceSourceDataset

    names = ((catalog.load("parameters") or {}).get("external") or {}).get("datasets") or []
    used = [n for n in names if isinstance(n, str) and n in pipeline.inputs()]
    for name in used:
        dataset = catalog.get(name)
        if not isinstance(dataset, FaceSourceDataset):
            if dataset is not None:
                found = f"its type is {type(dataset).__name__}"
            else:  # a misspelt name reads as a missing entry: name the nearest one the catalog has
                import difflib

                near = difflib.get_close_matches(name, [str(k) for k in getattr(catalog, "keys", list)()], n=1)
                found = "no entry of that name" + (f"; did you mean '{near[0]}'?" if near else "")
            raise DatasetError(f"external.datasets lists '{name}', but the catalog has no FaceSourceDataset "
                               f"entry '{name}' ({found}); define it in "
                               f"{folder}/catalog.yml (type: age_gender.datasets.FaceSourceDataset, "
                               f"filepath: ..., see docs/datasets.md) or remove it from external.datasets")
    return used


class ParameterValidationHooks:
    """Validate every parameter group a node of the pipeline reads, and every top-level key
    (runtime ``--params`` included), before the first node runs (``age_gender.params``).

    A bad value stops the run with :class:`age_gender.params.ParameterError`, whose message is one
    line; ``kedro run`` prints that line alone (no traceback) unless ``AGE_GENDER_TRACEBACK=1``
    (see :func:`_print_failures`).
    """

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from age_gender.params import groups_read_by, validate_parameters

        params = catalog.load("parameters")
        groups = groups_read_by(pipeline)
        # a group set with --params is checked even when this pipeline does not read it: a
        # misspelt runtime key is never silently ignored
        given = [key for key in (run_params.get("runtime_params") or {}) if key in params]
        validate_parameters(params, [*groups, *given])
        logger.info("Parameters checked: %s", ", ".join(groups) or "none read")


def _parameter_error_line(error: BaseException) -> str | None:
    """The one line for a parameter error (ours, or Kedro's from node type hints), else None."""
    import re

    from age_gender.params import ParameterError

    if isinstance(error, ParameterError):
        return f"ERROR: {error}"
    if type(error).__name__ == "ParameterValidationError":  # Kedro's, from node type hints
        lines = [re.sub(r"^.*for parameter '[^']*': ", "", line.lstrip("- "))
                 for line in str(error).splitlines()[1:] if line.strip()]
        return f"ERROR: {'; '.join(lines)}"
    return None


# --- integrity: lineage, required splits, writable outputs, one last line on failure -------------

REQUIRED_SPLITS = ("train", "val1", "val2", "test")


def _output_folder(dataset: Any) -> Path | None:
    """The local folder a dataset writes into (``None`` for memory or remote datasets): a
    versioned dataset's folder of versions (``<filepath>/<timestamp>/``) and a partitioned
    dataset's own folder, whose files go inside it, not beside it."""
    from kedro.io import AbstractVersionedDataset
    from kedro_datasets.partitions import PartitionedDataset

    from age_gender.datasets import SwappedFolderDataset, WorkingDirectoryDataset

    if isinstance(dataset, WorkingDirectoryDataset):
        return dataset._path
    if isinstance(dataset, SwappedFolderDataset):
        return dataset._path.parent  # new generations are written beside the link
    path = getattr(dataset, "_filepath", None) or getattr(dataset, "_path", None)
    if path is None or getattr(dataset, "_protocol", "file") not in ("file", None):
        return None
    if isinstance(dataset, PartitionedDataset) or (
            isinstance(dataset, AbstractVersionedDataset) and getattr(dataset, "_version", None) is not None):
        return Path(str(path))
    return Path(str(path)).parent


def _not_writable(folder: Path) -> str | None:
    """Why nothing can be written under ``folder`` (probed by creating a file, so read-only
    mounts, immutable folders and root's rights are judged as they are), or ``None``."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # Kedro creates the missing folders: the first existing one decides
    if not probe.is_dir():
        return f"'{probe}' is not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        return f"cannot write to '{probe}' ({error.strerror or error})"
    return None


def check_outputs_writable(pipeline: Any, catalog: Any, env: str | None = None) -> None:
    """Refuse a run whose output folders cannot be written, before any node runs.

    Raises ``ActionableError`` naming the folder, the datasets that would be written there and
    the catalog file of the run's ``--env`` to point them elsewhere.
    """
    from age_gender.datasets import WorkingDirectoryDataset

    folders: dict[Path, list[str]] = {}
    for name in sorted(pipeline.all_outputs() | pipeline.inputs()):
        if name.startswith("params:") or name == "parameters":
            continue
        dataset = catalog.get(name)
        if name not in pipeline.all_outputs() and not isinstance(dataset, WorkingDirectoryDataset):
            continue  # an input read, not written
        folder = _output_folder(dataset) if dataset is not None else None
        if folder is not None:
            folders.setdefault(folder, []).append(name)
    for folder, names in sorted(folders.items()):
        reason = _not_writable(folder)
        if reason:
            raise ActionableError(f"{reason}, where this run writes {', '.join(names)}",
                                  f"make '{folder}' writable, or point these catalog entries "
                                  f"elsewhere in {conf_folder(env)}/catalog.yml")


def _every_pipeline() -> dict[str, Any]:
    """Every pipeline of the project by folder name, with ``__default__`` (a session's registry
    holds only the pipelines it runs, so ``find_pipelines`` would return those)."""
    import importlib
    import pkgutil

    import age_gender.pipelines
    from age_gender.pipeline_registry import with_default

    return with_default({info.name: importlib.import_module(f"age_gender.pipelines.{info.name}").create_pipeline()
                         for info in pkgutil.iter_modules(age_gender.pipelines.__path__) if info.ispkg})


def check_inputs_exist(pipeline: Any, catalog: Any, registry: Mapping[str, Any] | None = None,
                       env: str | None = None) -> None:
    """Refuse a run whose inputs an earlier run should have written but has not (``split``
    before ``ingestion``), before any node runs, naming the pipelines that write them.

    ``registry``: pipeline name -> Pipeline (default: the project's registered pipelines).
    ``env``: the run's ``--env``; the commands the message names carry it (``kedro run --env
    smoke --pipeline ingestion``), since the other environment's outputs would not help.
    Raises ``ActionableError``."""
    missing = []
    for name in sorted(pipeline.inputs()):
        if name.startswith("params:") or name == "parameters":
            continue
        dataset = catalog.get(name)
        if dataset is not None and written_by_a_pipeline(dataset) and not catalog.exists(name):
            missing.append(name)
    if not missing:
        return
    if registry is None:
        registry = _every_pipeline()
    producers = []
    for name in missing:  # the smallest registered pipeline that writes it
        writers = sorted((len(p.nodes), key) for key, p in registry.items()
                         if key != "__default__" and name in p.all_outputs())
        if writers and writers[0][1] not in producers:
            producers.append(writers[0][1])
    ordered = [n.name for n in registry["__default__"].nodes] if "__default__" in registry else []
    producers.sort(key=lambda key: min((ordered.index(n.name) for n in registry[key].nodes if n.name in ordered),
                                       default=len(ordered)))
    verb, pronoun = ("does", "it") if len(missing) == 1 else ("do", "them")
    run = f"kedro run --env {env}" if env and env != "local" else "kedro run"
    fix = (" then ".join(f"`{run} --pipeline {key}`" for key in producers) + " first"
           if producers else "run the pipeline that writes it first, or point the catalog entry at an existing file")
    raise ActionableError(f"{', '.join(missing)} {verb} not exist yet (this run reads {pronoun})", f"run {fix}"
                          if producers else fix)


def check_splits_and_lineage(pipeline: Any, catalog: Any) -> None:
    """When a run reads ``face_splits`` made by an earlier run: every split the models need
    (train, val1, val2, test) must be there and non-empty; when it also reads ``face_cache``,
    both must come from the same ingestion; the table must have been drawn with this run's
    ``split`` parameters; and every model trained by an earlier run (a ``{model}_training_info``
    input) must have been trained on this table. Raises ``ActionableError`` / ``LineageError``."""
    import pandas as pd

    from age_gender.lineage import check_same_ingestion, check_split_settings, check_trained_on

    inputs = pipeline.inputs()
    if "face_splits" not in inputs or not catalog.exists("face_splits"):
        return  # produced in this run (the split node checks it) or missing (Kedro says so)
    splits = catalog.load("face_splits")
    if "split" not in getattr(splits, "columns", []):
        raise ActionableError("face_splits has no 'split' column", "rerun `kedro run --pipeline split`")
    counts = pd.Series(splits["split"].astype(str)).value_counts()
    empty = [name for name in REQUIRED_SPLITS if counts.get(name, 0) == 0]
    if empty:
        raise ActionableError(f"face_splits has no {', '.join(repr(e) for e in empty)} rows "
                              f"(counts: {', '.join(f'{k} {int(counts.get(k, 0))}' for k in REQUIRED_SPLITS)})",
                              "rerun `kedro run --pipeline split` with settings that fill every split")
    if "face_cache" in inputs and catalog.exists("face_cache"):
        check_same_ingestion(catalog.load("face_cache"), splits)
    check_split_settings(splits, catalog.load("parameters")["split"])
    for name in sorted(inputs):  # models trained by an earlier run are judged on their own split only
        if name.endswith("_training_info") and catalog.exists(name):
            check_trained_on(splits, name.removesuffix("_training_info"), catalog.load(name))


def check_load_versions(load_versions: Mapping[str, str] | None, pipeline: Any, catalog: Any) -> None:
    """``--load-versions``: every name must be a versioned entry this run reads, at a version that
    exists; a typo would otherwise be ignored and the newest files judged in its place.
    Raises ``ActionableError`` naming the entry and the versions there are."""
    import difflib

    from kedro.io import AbstractVersionedDataset

    readable = sorted(n for n in pipeline.inputs() if not n.startswith("params:") and n != "parameters")
    for name, version in (load_versions or {}).items():
        if name not in readable:
            near = difflib.get_close_matches(name, readable, n=1)
            raise ActionableError(f"--load-versions names '{name}', which this run does not read"
                                  + (f" (did you mean {near[0]}?)" if near else ""),
                                  f"name one of the inputs this run reads: {', '.join(readable)}")
        dataset = catalog.get(name)
        if not isinstance(dataset, AbstractVersionedDataset) or getattr(dataset, "_version", None) is None:
            raise ActionableError(f"--load-versions names '{name}', which is not versioned",
                                  "drop it from --load-versions (it has one file only)")
        folder = Path(str(dataset._filepath))
        if getattr(dataset, "_protocol", "file") in ("file", None) and not (folder / version / folder.name).exists():
            there = sorted(p.name for p in folder.iterdir() if (p / folder.name).exists()) if folder.is_dir() else []
            raise ActionableError(f"{name} has no version '{version}' in {folder}",
                                  f"use one of its versions: {', '.join(there[-5:]) or 'none saved yet'}")


def check_versions(pipeline: Any, catalog: Any) -> None:
    """Before the first node, for every versioned entry (``versioned: true``) the run reads or
    writes: refuse a plain file saved at its path before it was versioned (it would be skipped
    or fail only after training); and a model read with its training info must be read at the
    same version (``--load-versions`` naming one but not the other would judge one model with
    another's lineage). Raises ``ActionableError``."""
    from kedro.io import AbstractVersionedDataset

    from age_gender.datasets import unversioned_file_message

    names = sorted((pipeline.inputs() | pipeline.all_outputs()) - {"parameters"})
    for name in names:
        if name.startswith("params:"):
            continue
        dataset = catalog.get(name)
        if isinstance(dataset, AbstractVersionedDataset) and getattr(dataset, "_version", None) is not None:
            plain = Path(str(dataset._filepath))
            if getattr(dataset, "_protocol", "file") in ("file", None) and plain.is_file():
                cause, fix = unversioned_file_message(plain)
                raise ActionableError(f"{cause} ({name})", fix)
    for name in names:
        if not name.endswith("_model") or name not in pipeline.inputs():
            continue
        info = name.removesuffix("_model") + "_training_info"
        if info not in pipeline.inputs():
            continue
        model_set, info_set = catalog.get(name), catalog.get(info)
        if not all(isinstance(d, AbstractVersionedDataset) and d._version is not None for d in (model_set, info_set)):
            continue
        versions = model_set.resolve_load_version(), info_set.resolve_load_version()
        if versions[0] != versions[1]:
            raise ActionableError(f"{name} would be read at version {versions[0]} but {info} at {versions[1]}",
                                  f"name both at the same version: --load-versions {name}:{versions[0]},"
                                  f"{info}:{versions[0]}")


def with_env(fix: str, env: str | None) -> str:
    """``fix`` with the run's ``--env`` in every ```kedro run ...``` command it names that has
    none (``kedro run --env smoke --pipeline transfer``): the same command without it would
    train in ``conf/base``, not the environment the refused run reads."""
    if not env or env == "local":
        return fix
    return re.sub(r"`kedro run (?!--env)", f"`kedro run --env {env} ", fix)


def last_line(error: BaseException, node: str | None = None, env: str | None = None) -> str:
    """The one line a failed run ends with: ``ERROR: <cause>. Fix: <fix>.``

    The cause and fix come from the first :class:`ActionableError` in the exception chain (its
    ``kedro run`` commands carry ``env``, the run's ``--env``: :func:`with_env`); else
    the message of the first of this project's own exceptions (they name their fix, e.g.
    ``WeightsUnavailable``); else the innermost exception's type and first message line.
    """
    where = f" in node {node}" if node else ""
    seen, current, innermost, own, dataset_error = set(), error, error, None, None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ActionableError):
            return f"ERROR: {current.cause}. Fix: {with_env(current.fix, env)}."
        if own is None and type(current).__module__.startswith("age_gender."):
            own = current
        if isinstance(current, DatasetError):
            dataset_error = current  # the innermost one: a dataset's own message, not Kedro's wrapper
        innermost = current
        current = current.__cause__ or current.__context__
    if own is not None or dataset_error is not None:
        chosen = own if own is not None else dataset_error
        message = " ".join(str(chosen).split())
        return f"ERROR{where}: {type(chosen).__name__}: {message}"
    message = (str(innermost).strip().splitlines() or [""])[0]
    return (f"ERROR{where}: {type(innermost).__name__}: {message.rstrip('.')}. Fix: see the message "
            "above (the traceback is for a bug report); correct the input or setting it names and rerun.")


def _print_failures() -> None:
    """Wrap ``sys.excepthook`` (Kedro's rich traceback) once, so that a failed ``kedro run`` ends
    with one line on stderr: a parameter error, or a refusal (``ActionableError``,
    ``DatasetError``) before any node started, prints only its line (no traceback unless
    ``AGE_GENDER_TRACEBACK=1``); any other failure prints its traceback, then :func:`last_line`."""
    import os

    previous = sys.excepthook
    if getattr(previous, "_age_gender_failures", False):
        return

    def hook(kind, value, traceback):
        brief = _parameter_error_line(value)
        if brief is None and not IntegrityHooks.node_started and isinstance(value, (ActionableError, DatasetError)):
            brief = last_line(value, env=IntegrityHooks.env)  # refused before any node ran: no traceback
        if brief is None or os.environ.get("AGE_GENDER_TRACEBACK") == "1":
            previous(kind, value, traceback)
        if isinstance(value, Exception):
            print(brief or last_line(value, IntegrityHooks.failed_node, IntegrityHooks.env), file=sys.stderr, flush=True)

    hook._age_gender_failures = True  # type: ignore[attr-defined]
    sys.excepthook = hook


class IntegrityHooks:
    """Before the first node: output folders writable, inputs of earlier runs there, the splits the run needs present and
    non-empty, cache and splits of one ingestion. After a failure: one last line naming the
    cause and the fix."""

    failed_node: str | None = None
    #: the run's ``--env`` (``None`` for the default): the fix's commands carry it
    env: str | None = None
    #: whether a node of this process's run has started: a refusal before that (a hook's
    #: ``ActionableError`` or ``DatasetError``) prints its one line without a traceback
    node_started: bool = False

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        IntegrityHooks.env = getattr(context, "env", None)  # set again by before_pipeline_run
        _print_failures()

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        IntegrityHooks.node_started = True

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        IntegrityHooks.failed_node = None
        IntegrityHooks.env = run_params.get("env")
        check_outputs_writable(pipeline, catalog, env=run_params.get("env"))
        check_inputs_exist(pipeline, catalog, env=run_params.get("env"))
        check_load_versions(run_params.get("load_versions"), pipeline, catalog)
        check_versions(pipeline, catalog)
        check_splits_and_lineage(pipeline, catalog)

    @hook_impl
    def on_node_error(self, error: Exception, node: Any, catalog: Any, inputs: dict[str, Any],
                      is_async: bool, run_id: str) -> None:
        IntegrityHooks.failed_node = node.name


# --- training: deterministic kernels before the first node, a loud line when a budget fired ------


class TrainingHooks:
    """Before the first node of a run that trains (a node reads ``params:device``): TensorFlow's
    determinism and thread pools (``training.configure_determinism``), which can only be fixed
    before TensorFlow starts. After each node: any output with ``out_of_time: true`` (training info,
    search results) is remembered; the run ends with one WARNING line naming them, since such a
    model's quality depends on how busy the machine was."""

    out_of_time: list[str] = []

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        TrainingHooks.out_of_time = []
        if "params:device" in pipeline.inputs():
            from age_gender.training import configure_determinism

            configure_determinism(catalog.load("params:device"))

    @hook_impl
    def after_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], outputs: dict[str, Any],
                       is_async: bool, run_id: str) -> None:
        for name, value in outputs.items():
            if isinstance(value, dict) and value.get("out_of_time") is True:
                TrainingHooks.out_of_time.append(f"{name} (epochs run: {value.get('epochs_run', '?')})")

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline: Any, catalog: Any) -> None:
        if TrainingHooks.out_of_time:
            logger.warning("WARNING: the wall-clock budget (time_budget_minutes) stopped training before its "
                           "scheduled epochs: %s. Their metrics depend on how busy the machine was and carry "
                           "out_of_time: true; rerun with a larger budget (or null) to finish the schedule.",
                           "; ".join(TrainingHooks.out_of_time))


# --- experiment tracking: kedro-mlflow's run, and what the nodes return (age_gender.tracking) -----


@contextmanager
def _quick_http():
    """While the MLflow run starts: few retries and a short timeout (unless the user set them), so
    an unreachable tracking server is refused in seconds, not after MLflow's ~4 minutes of retries."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    added = {k: v for k, v in quick.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class TrackingHooks:
    """Makes a ``kedro run`` of a tracked pipeline an MLflow run (``age_gender.tracking``).

    kedro-mlflow's own hook (registered here, not by its plugin entry point: ``settings.py``
    disables that) starts the run, logs the parameters each node reads (in one batch per node:
    ``tracking.mlflow_hook``) and ends it; it is created
    only when a tracked pipeline starts, so an untracked run or ``AGE_GENDER_TRACKING=off`` never
    imports MLflow. Registered first in ``HOOKS``, so its ``before_pipeline_run`` runs after the
    parameter and integrity checks: a refused run leaves no MLflow run behind."""

    def __init__(self) -> None:
        self._context: Any = None
        self._mlflow: Any = None
        self._recorder: Any = None
        self._catalog: Any = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        from age_gender.tracking import SWITCH, tracking_enabled

        try:
            self._context = context if tracking_enabled() else None
        except ValueError as error:
            raise ActionableError(str(error).split(": ")[0], f"set {SWITCH}=on or {SWITCH}=off") from None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._mlflow = self._recorder = None
        if self._context is None or not self._tracked(run_params):
            return
        from age_gender import tracking

        hook = tracking.mlflow_hook()
        try:
            with tracking.store_for(self._context.project_path), _quick_http():
                hook.after_context_created(self._context)
                hook.before_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
        except Exception as error:  # noqa: BLE001  (a store that cannot be used: before any node)
            where = os.environ.get("MLFLOW_TRACKING_URI") or tracking.default_store(self._context.project_path)
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ActionableError(f"cannot track this run in MLflow ({where}): {message}",
                                  "start the tracking server or correct MLFLOW_TRACKING_URI / "
                                  "conf/*/mlflow.yml, or run with AGE_GENDER_TRACKING=off") from error
        if hook.run_id is None:
            return
        self._mlflow, self._catalog = hook, catalog
        self._recorder = tracking.RunRecorder(hook.run_id, hook.mlflow_config.server.mlflow_tracking_uri)
        self._recorder.tags({tracking.KIND_TAG: "pipeline_run", "env": run_params.get("env") or "local",
                             **tracking.git_state(self._context.project_path)})
        logger.info("Tracking this run in MLflow: run %s in %s", hook.run_id,
                    hook.mlflow_config.server.mlflow_tracking_uri)

    def _tracked(self, run_params: dict[str, Any]) -> bool:
        from kedro.config import MissingConfigException

        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        try:
            conf = self._context.config_loader["mlflow"] or {}
        except MissingConfigException:
            conf = {}
        disabled = ((conf.get("tracking") or {}).get("disable_tracking") or {}).get("pipelines") or []
        return not all(name in disabled for name in names)

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool) -> None:
        if self._mlflow is not None:
            self._mlflow.before_node_run(node=node, catalog=catalog, inputs=inputs, is_async=is_async)

    @hook_impl
    def after_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], outputs: dict[str, Any],
                       is_async: bool, run_id: str) -> None:
        if self._recorder is not None:
            self._record(self._recorder.record_node, node.name, inputs, outputs, catalog)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if self._recorder is not None:
            self._record(self._recorder.record_saved, dataset_name, data, self._catalog)

    def _record(self, record: Any, what: str, *args: Any) -> None:
        """Record into MLflow; a failure there never costs the run its outputs (Kedro saves them
        after this hook): it is a WARNING, and the MLflow run is tagged incomplete."""
        try:
            record(what, *args)
        except Exception as error:  # noqa: BLE001
            logger.warning("WARNING: MLflow did not record %s (%s: %s); the run's own outputs are saved as "
                           "usual, its MLflow run is tagged age_gender.incomplete", what, type(error).__name__,
                           (str(error).splitlines() or [""])[0])
            try:
                self._recorder.tags({"age_gender.incomplete": "true"})
            except Exception:  # noqa: BLE001  (the store itself is gone)
                pass

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result: Any, pipeline: Any, catalog: Any) -> None:
        if self._mlflow is not None:
            self._mlflow.after_pipeline_run(run_params=run_params, pipeline=pipeline, catalog=catalog)
            self._close()
        self._mlflow = self._recorder = self._catalog = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self._mlflow is not None:
            self._mlflow.on_pipeline_error(error=error, run_params=run_params, pipeline=pipeline, catalog=catalog)
            self._close("FAILED")
        self._mlflow = self._recorder = self._catalog = None

    def _close(self, status: str = "FINISHED") -> None:
        """End this run wherever it is still on MLflow's active-run stack (a node that reopened it
        must not leave it active for the next run in the same process)."""
        import mlflow

        while (active := mlflow.active_run()) is not None and active.info.run_id == self._mlflow.run_id:
            mlflow.end_run(status)
