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
