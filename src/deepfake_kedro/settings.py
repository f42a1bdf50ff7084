"""Project settings: configuration loading and the project's Kedro hooks."""

import warnings

from kedro.config import OmegaConfigLoader

from deepfake_kedro.hooks import ValidateExperimentsHook

HOOKS = (ValidateExperimentsHook(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}

# Kedro 1.7 calls an OmegaConf API that OmegaConf now marks deprecated; nothing for users to act on.
warnings.filterwarnings("ignore", message=r".*register_new_resolver\(\) is deprecated", category=UserWarning)
