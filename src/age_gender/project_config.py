"""The run's configuration where a pipeline is *created* (Kedro's dynamic-pipelines pattern):
``scratch_search`` builds one node per grid candidate from the parameters.

``RememberContext`` (a hook registered in ``settings.py``) keeps the context of the session that
is starting, so the pipeline is built from that session's environment (``--env paper``) and
runtime ``--params``; without a session (``kedro registry``, ``kedro viz`` ...), the parameters
are read from ``conf/`` of the working directory in ``KEDRO_ENV`` (default ``local``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

_context: Any = None


class RememberContext:
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        global _context
        _context = context


def parameters() -> dict[str, Any]:
    """The parameters of the starting session (runtime overrides merged), or of ``conf/``."""
    if _context is not None:
        return _context.config_loader["parameters"]
    from kedro.framework.project import settings

    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(Path.cwd() / settings.CONF_SOURCE),
                                          env=os.environ.get("KEDRO_ENV"), **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]
