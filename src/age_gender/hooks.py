"""Project hooks: fail fast, before any node runs, when the raw data a run needs is missing."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import DatasetError

from age_gender.datasets import DATA_HELP

logger = logging.getLogger(__name__)

RAW_INPUTS = ("utkface_raw", "external_raw", "photos_raw")


class RuntimeHooks:
    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        for name in RAW_INPUTS:
            if name in pipeline.inputs() and not catalog.exists(name):
                where = getattr(catalog.get(name), "_filepath", "?")
                raise DatasetError(
                    f"The run needs '{name}' but nothing is at '{where}'. {DATA_HELP}"
                )


class ParameterValidationHooks:
    """Validate every parameter group a node of the pipeline reads, and every top-level key
    (runtime ``--params`` included), before the first node runs (``age_gender.params``).

    A bad value stops the run with :class:`age_gender.params.ParameterError`, whose message is one
    line; ``kedro run`` prints that line alone (no traceback) unless ``AGE_GENDER_TRACEBACK=1``.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        _print_parameter_errors_briefly()

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


def _print_parameter_errors_briefly() -> None:
    """Make an uncaught ``ParameterError`` print as one ``ERROR:`` line on stderr instead of a
    traceback (Kedro installs rich's traceback printer as ``sys.excepthook``); other exceptions
    go to the previous hook unchanged. ``AGE_GENDER_TRACEBACK=1`` keeps the full traceback."""
    import os
    import re
    import sys

    from age_gender.params import ParameterError

    previous = sys.excepthook
    if getattr(previous, "_age_gender_parameters", False) or os.environ.get("AGE_GENDER_TRACEBACK") == "1":
        return

    def hook(kind, error, trace):
        if isinstance(error, ParameterError):
            print(f"ERROR: {error}", file=sys.stderr)
            return
        if type(error).__name__ == "ParameterValidationError":  # Kedro's, from node type hints
            lines = [re.sub(r"^.*for parameter '[^']*': ", "", line.lstrip("- "))
                     for line in str(error).splitlines()[1:] if line.strip()]
            print(f"ERROR: {'; '.join(lines)}", file=sys.stderr)
            return
        previous(kind, error, trace)

    hook._age_gender_parameters = True  # type: ignore[attr-defined]
    sys.excepthook = hook
