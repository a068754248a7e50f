"""Project settings: hooks and the config loader.

Parameters of another environment (``--env paper``, ``full``, ``smoke``, ``local``) are merged
key by key over ``conf/base`` (``merge_strategy`` ``soft``), so an environment states only what it
changes. ``oc.env`` lets the catalog read environment variables such as ``UTKFACE_ARCHIVE``.
``mlflow.yml`` configures experiment tracking (``age_gender.tracking``).
"""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from age_gender.hooks import (
    IntegrityHooks,
    ParameterValidationHooks,
    RuntimeHooks,
    TrackingHooks,
    TrainingHooks,
)
from age_gender.project_config import RememberContext

# pluggy calls the hook registered last first: RememberContext keeps the context for the dynamic
# scratch_search pipeline, and parameters are checked before anything else; the MLflow run
# (TrackingHooks) starts last, once every check has passed.
HOOKS = (TrackingHooks(), TrainingHooks(), RuntimeHooks(), IntegrityHooks(), ParameterValidationHooks(),
         RememberContext())
# kedro-mlflow's hook is driven by TrackingHooks (tracked pipelines only, AGE_GENDER_TRACKING),
# not registered by its plugin entry point.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")  # its distribution name has varied

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    "custom_resolvers": {"oc.env": oc.env},
}
