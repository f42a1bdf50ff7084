"""Project pipelines, registered by name; experiments are read from the run's parameters."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kedro.framework import project
from kedro.framework.project import settings
from kedro.pipeline import Pipeline
from kedro.utils import find_kedro_project

from deepfake_kedro.config import active_experiments
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
from deepfake_kedro.study import NAMED_PHASES

ADOPTS_PREPROCESSING = {"phase3"}
LAYOUT_BLOCKS = (*NAMED_PHASES, "phase4", "generalisation")

# The running session's parameters (its environment, --conf-source and --params), set by PipelineLayoutHook.
_run_parameters: dict[str, Any] | None = None
# The running session's conf folder, set by PipelineLayoutHook before Kedro first builds the pipelines.
_run_conf_source: Path | None = None


def _base_parameters() -> dict[str, Any]:
    """The blocks the pipelines are built from, read as plain YAML from the project's ``conf/base``.

    Used when no session is running (``register_pipelines()`` called directly), and when Kedro validates a new
    session's parameters against every pipeline before hooks can hand them over. A second OmegaConfigLoader
    would re-register OmegaConf's ``globals`` resolver and make a running session resolve ``${globals:...}`` from
    base instead of its environment.
    """
    conf_source = _run_conf_source or Path(settings.CONF_SOURCE)
    if not conf_source.is_absolute():
        # settings.CONF_SOURCE is relative to the project, not to where kedro was started (notebooks/, ...).
        conf_source = (find_kedro_project(Path.cwd()) or Path.cwd()) / conf_source
    parameters = {}
    for block in LAYOUT_BLOCKS:
        path = conf_source / "base" / f"parameters_{block}.yml"
        parameters[block] = yaml.safe_load(path.read_text())[block]
    return parameters


def _layout_of(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What the pipelines' shape depends on: each phase's experiment names and the comparisons' other phases."""
    layout = {}
    for phase in LAYOUT_BLOCKS:
        block = parameters.get(phase) or {}
        named = {pair[role] for pair in block.get("comparisons") or [] for role in ("baseline", "treatment")}
        layout[phase] = {"experiments": list(active_experiments(block.get("experiments"))),
                         "external": sorted(name for name in named if "." in name)}
    phase4 = parameters.get("phase4") or {}
    layout["phase4"]["final"] = {"top_k": (phase4.get("ranking") or {}).get("top_k"),
                                 "scaling": copy.deepcopy(phase4.get("scaling"))}
    return layout


def follow_conf_source(conf_source: str | Path) -> None:
    """Read base parameters from the running session's conf folder, wherever the process was started."""
    global _run_conf_source
    # A packaged conf (.tar.gz / .zip) is not read here; the project's own conf folder stands in for it.
    _run_conf_source = Path(conf_source).absolute() if Path(conf_source).is_dir() else None


def follow_run_parameters(parameters: Mapping[str, Any]) -> None:
    """Build the pipelines from a running session's parameters, so its environment can add or drop experiments.

    Kedro builds the pipelines once per process and keeps them; they are dropped here so the session's first
    access rebuilds them from its own parameters (0.1-0.2 s), never from an earlier session's.
    """
    global _run_parameters
    _run_parameters = {block: copy.deepcopy(parameters.get(block)) for block in LAYOUT_BLOCKS}
    if project.PACKAGE_NAME:
        project.pipelines.configure(f"{project.PACKAGE_NAME}.pipeline_registry")


def _layout() -> dict[str, Any]:
    return _layout_of(_run_parameters if _run_parameters is not None else _base_parameters())


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
    layout = _layout()
    earlier = Pipeline([])
    for phase in NAMED_PHASES:
        # A phase compares against earlier phases, so its pipeline includes them (finished folds are skipped).
        experiments, external = layout[phase]["experiments"], layout[phase]["external"]
        earlier = earlier + phase_pipeline(phase, experiments, external, phase in ADOPTS_PREPROCESSING)
        pipelines[phase] = prep + earlier
    final_layout = layout["phase4"]["final"]
    final = final_models_pipeline(list(NAMED_PHASES), final_layout["top_k"], final_layout["scaling"])
    pipelines["phase4"] = prep + earlier + final
    # `reporting` alone re-reads finished results from the catalog; __default__ runs the whole study.
    pipelines["reporting"] = reporting.create_pipeline()
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    # Fetching the raw data is asked for by name only, never part of the study's default run.
    pipelines["download"] = download.create_pipeline()
    # Packaging a finished experiment reads its results; asked for by name, after the study.
    pipelines["package"] = package.create_pipeline()
    # Scoring new images and videos: the package (cheap) then predict, so one command follows the study.
    pipelines["predict"] = package.create_pipeline() + predict.create_pipeline()
    # Train on one fake source, test on each (issue 13): asked for by name, outside the default run.
    pipelines["generalisation"] = prep + generalisation.create_pipeline(layout["generalisation"]["experiments"])
    # Source attribution (flat vs hierarchical multi-class models) on the study's folds; asked for by name.
    pipelines["attribution"] = prep + attribution.create_pipeline()
    # Final models under corruptions, and on external test sets: asked for by name, after the study.
    pipelines["robustness"] = robustness_pipeline.create_pipeline()
    pipelines["external"] = external_pipeline.create_pipeline()
    return pipelines
