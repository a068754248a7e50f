"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# What a bare `kedro run` does: data, both model families, then the judgement of both.
DEFAULT_PIPELINES = ("ingestion", "split", "scratch", "transfer", "evaluation")


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/`` by folder name, plus ``__default__``."""
    return with_default(find_pipelines(raise_errors=True))


def with_default(pipelines: dict[str, Pipeline]) -> dict[str, Pipeline]:
    """``pipelines`` with ``__default__``: the ``DEFAULT_PIPELINES`` among them, joined."""
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_PIPELINES if name in pipelines), Pipeline([])
    )
    return pipelines
