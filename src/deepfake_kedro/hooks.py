"""Kedro hooks: reject bad experiment configs, names and cross-references before any node runs."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from deepfake_kedro.config import check_name, check_references, resolve_experiment, validate_defaults
from deepfake_kedro.selection import apply_preprocessing, check_ranking, check_selection_params, model_name

CANDIDATE_PHASES = ("phase1", "phase2", "phase3")
"""The phases whose models phase 4 ranks."""

logger = logging.getLogger(__name__)


class ValidateExperimentsHook:
    """Resolves every experiment the run will train, so a typo fails before hours of training."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        parameters = catalog.load("parameters")
        if "defaults" in parameters:  # preprocessing and eda read the study-wide block too
            validate_defaults(parameters["defaults"])
        namespaces = {n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace}
        checked = 0
        for phase in sorted(namespaces):
            check_name(phase, "pipeline namespace")
            experiments = (parameters.get(phase) or {}).get("experiments", {})
            for name in experiments:
                resolve_experiment(
                    name, experiments, parameters["defaults"], parameters["data"]["sources"],
                    parameters["preprocessing"], label=f"{phase}.{name}",
                )
                checked += 1
        check_references(parameters, sorted(namespaces))
        self._check_choices(parameters, namespaces)
        if checked:
            logger.info("Validated %d experiment configs", checked)

    @staticmethod
    def _check_choices(parameters: dict[str, Any], namespaces: set[str]) -> None:
        """The selection rules and overrides, so a typo there also fails before training."""
        selection = (parameters.get("phase2") or {}).get("selection")
        if "phase2" in namespaces and selection:
            check_selection_params(selection)
            override = selection.get("override")
            phase3 = (parameters.get("phase3") or {}).get("experiments", {})
            if override and "phase3" in namespaces:
                # The override must name a preprocessing whose caches exist.
                settings = {**selection["start"], **override}
                for name in phase3:
                    overridden = apply_preprocessing(phase3[name], {"settings": settings})
                    resolve_experiment(name, {**phase3, name: overridden}, parameters["defaults"],
                                       parameters["data"]["sources"], parameters["preprocessing"],
                                       label=f"phase3.{name} (with phase2.selection.override)")
        phase4 = parameters.get("phase4") or {}
        if "phase4" in namespaces and phase4.get("ranking"):
            for suffix in phase4.get("scaling") or {}:
                check_name(suffix, "phase4.scaling")
            models = []
            for phase in CANDIDATE_PHASES:
                experiments = (parameters.get(phase) or {}).get("experiments", {})
                for name in experiments:
                    config = resolve_experiment(name, experiments, parameters["defaults"], label=f"{phase}.{name}")
                    # Source hold-outs are not ranked (selection.candidate_table skips them).
                    if config.train_sources == "all" and config.eval_sources == "all":
                        models.append(model_name(config.model_dump()))
            check_ranking(phase4["ranking"], models)
