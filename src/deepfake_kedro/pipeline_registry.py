"""Project pipelines, registered by name; experiments are read from the base parameters."""

from __future__ import annotations

from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.framework.project import settings
from kedro.pipeline import Pipeline

from deepfake_kedro.pipelines import preprocessing
from deepfake_kedro.pipelines.phases import phase_pipeline

PHASES = ("phase1",)


def experiment_names(phase: str, conf_source: str | None = None) -> list[str]:
    """The experiments a phase defines in ``conf/base/parameters_<phase>.yml``."""
    loader = OmegaConfigLoader(conf_source=conf_source or str(Path(settings.CONF_SOURCE)), base_env="base",
                               default_run_env="base")
    return list(loader["parameters"][phase]["experiments"])


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        ``preprocessing``, one pipeline per phase (with the preprocessing it needs) and ``__default__``.
    """
    prep = preprocessing.create_pipeline()
    pipelines: dict[str, Pipeline] = {"preprocessing": prep}
    for phase in PHASES:
        pipelines[phase] = prep + phase_pipeline(phase, experiment_names(phase))
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
