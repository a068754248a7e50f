"""Project settings: hooks and the config loader (with `oc.env` so the catalog can read
environment variables such as ``UTKFACE_ARCHIVE``)."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from age_gender.hooks import RuntimeHooks
from age_gender.project_config import RememberContext

HOOKS = (RuntimeHooks(), RememberContext())  # RememberContext last: pluggy calls it first

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"oc.env": oc.env},
}
