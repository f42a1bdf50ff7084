"""Project pipelines, registered by name; experiments are read from the base parameters."""

from __future__ import annotations

from pathlib import Path

import yaml
from kedro.framework.project import settings
from kedro.pipeline import Pipeline

from deepfake_kedro.pipelines import (
    attribution,
    download,
    eda,
    generalisation,
    package,
    predict,
    preprocessing,
    reporting,
)
from deepfake_kedro.pipelines import external as external_pipeline
from deepfake_kedro.pipelines import robustness as robustness_pipeline
from deepfake_kedro.pipelines.phases import final_models_pipeline, phase_pipeline
from deepfake_kedro.study import NAMED_PHASES, phase4_slots

ADOPTS_PREPROCESSING = {"phase3"}


def _base_parameters(phase: str, conf_source: str | None = None) -> dict:
    """A phase's base parameters, read as plain YAML.

    A second OmegaConfigLoader would re-register OmegaConf's ``globals`` resolver and make the
    running session resolve ``${globals:...}`` from base instead of its environment.
    """
    path = Path(conf_source or settings.CONF_SOURCE) / "base" / f"parameters_{phase}.yml"
    return yaml.safe_load(path.read_text())[phase]


def phase_layout(phase: str, conf_source: str | None = None) -> tuple[list[str], list[str]]:
    """A phase's experiments and the other phases' experiments its comparisons name, from the base parameters."""
    params = _base_parameters(phase, conf_source)
    named = {pair[role] for pair in params.get("comparisons", []) for role in ("baseline", "treatment")}
    return list(params["experiments"]), sorted(name for name in named if "." in name)


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        ``preprocessing``, ``eda`` (preprocessing's audit part + eda), one pipeline per phase (with the
        preprocessing it needs), ``__default__``, ``download``, ``package``, ``predict`` and
        ``generalisation``.
    """
    prep = preprocessing.create_pipeline()
    # The audit reads only the index, hashes, groups and folds: no cache, no face detection.
    audit = preprocessing.audit_pipeline() + eda.create_pipeline()
    pipelines: dict[str, Pipeline] = {"preprocessing": prep, "eda": audit}
    earlier, trained = Pipeline([]), []
    for phase in NAMED_PHASES:
        # A phase compares against earlier phases, so its pipeline includes them (finished folds are skipped).
        experiments, external = phase_layout(phase)
        earlier = earlier + phase_pipeline(phase, experiments, external, phase in ADOPTS_PREPROCESSING)
        trained += [f"{phase}.{name}" for name in experiments]
        pipelines[phase] = prep + earlier
    phase4 = _base_parameters("phase4")
    final = final_models_pipeline(trained, phase4["ranking"]["top_k"], phase4["scaling"])
    pipelines["phase4"] = prep + earlier + final
    slots = sorted(f"phase4.{slot.name}" for slot in phase4_slots(phase4["ranking"]["top_k"], phase4["scaling"]))
    # `reporting` alone re-reads finished results from the catalog; __default__ runs the whole study.
    pipelines["reporting"] = reporting.create_pipeline(trained + slots)
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    # Fetching the raw data is asked for by name only, never part of the study's default run.
    pipelines["download"] = download.create_pipeline()
    # Packaging a finished experiment reads its results; asked for by name, after the study.
    pipelines["package"] = package.create_pipeline()
    # Scoring new images and videos: the package (cheap) then predict, so one command follows the study.
    pipelines["predict"] = package.create_pipeline() + predict.create_pipeline()
    # Train on one fake source, test on each (issue 13): asked for by name, outside the default run.
    pipelines["generalisation"] = prep + generalisation.create_pipeline(phase_layout("generalisation")[0])
    # Source attribution (flat vs hierarchical multi-class models) on the study's folds; asked for by name.
    pipelines["attribution"] = prep + attribution.create_pipeline()
    # Final models under corruptions, and on external test sets: asked for by name, after the study.
    pipelines["robustness"] = robustness_pipeline.create_pipeline()
    pipelines["external"] = external_pipeline.create_pipeline()
    return pipelines
