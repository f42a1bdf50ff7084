"""Project settings: configuration loading and the project's Kedro hooks."""

from deepfake_kedro.config_loader import StudyConfigLoader
from deepfake_kedro.hooks import (
    CurrentParametersHook,
    DataRootHook,
    PipelineLayoutHook,
    RunEnvironmentHook,
    UnchangedImagesHook,
    ValidateExperimentsHook,
)
from deepfake_kedro.known_warnings import silence_known_warnings
from deepfake_kedro.tracking import ExperimentTrackingHook, MlflowSettingsHook, tracking_enabled

# MLflow tracking (conf/base/mlflow.yml) is on unless DEEPFAKE_KEDRO_TRACKING=off, as the tests set it.
TRACKING = tracking_enabled()
HOOKS = (ValidateExperimentsHook(), PipelineLayoutHook(), DataRootHook(), RunEnvironmentHook(), CurrentParametersHook(),
         UnchangedImagesHook(),
         ExperimentTrackingHook() if TRACKING else MlflowSettingsHook())
# kedro-mlflow registers its own hook (one MLflow run per `kedro run`); off together with ours.
DISABLE_HOOKS_FOR_PLUGINS = () if TRACKING else ("kedro_mlflow", "kedro-mlflow")

CONFIG_LOADER_CLASS = StudyConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameters (conf/demo/, your conf/local/) list only the keys they change.
    "merge_strategy": {"parameters": "soft"},
}

# Harmless warnings from Kedro, OmegaConf and mlflow (known_warnings.py says which and why).
silence_known_warnings()
