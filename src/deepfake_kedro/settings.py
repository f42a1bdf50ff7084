"""Project settings: configuration loading and the project's Kedro hooks."""

import warnings

from deepfake_kedro.config_loader import StudyConfigLoader
from deepfake_kedro.hooks import DataRootHook, PipelineLayoutHook, ValidateExperimentsHook
from deepfake_kedro.tracking import ExperimentTrackingHook, tracking_enabled

# MLflow tracking (conf/base/mlflow.yml) is on unless DEEPFAKE_KEDRO_TRACKING=off, as the tests set it.
TRACKING = tracking_enabled()
HOOKS = (ValidateExperimentsHook(), PipelineLayoutHook(), DataRootHook(),
         *((ExperimentTrackingHook(),) if TRACKING else ()))
# kedro-mlflow registers its own hook (one MLflow run per `kedro run`); off together with ours.
DISABLE_HOOKS_FOR_PLUGINS = () if TRACKING else ("kedro_mlflow", "kedro-mlflow")

CONFIG_LOADER_CLASS = StudyConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment's parameters (conf/demo/, your conf/local/) list only the keys they change.
    "merge_strategy": {"parameters": "soft"},
}

# Kedro 1.7 calls an OmegaConf API that OmegaConf now marks deprecated; nothing for users to act on.
warnings.filterwarnings("ignore", message=r".*register_new_resolver\(\) is deprecated", category=UserWarning)
# Kedro warns about any dotted dataset name a node reads outside its own namespace, which is how phase 2
# compares phase 1's experiments and reporting reads every experiment: namespaced outputs, read by name.
# Every dotted name a node writes is its own namespace's (tests/pipelines/test_namespaces.py).
warnings.filterwarnings("ignore", message=r"One or more dataset names contain '\.' characters", category=UserWarning)
