"""Kedro hooks: reject bad experiment configs before any node runs."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from deepfake_kedro.config import resolve_experiment

logger = logging.getLogger(__name__)


class ValidateExperimentsHook:
    """Resolves every experiment the run will train, so a typo fails before hours of training."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        parameters = catalog.load("parameters")
        namespaces = {n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace}
        checked = 0
        for phase in sorted(namespaces):
            experiments = (parameters.get(phase) or {}).get("experiments", {})
            for name in experiments:
                resolve_experiment(
                    name, experiments, parameters["defaults"], parameters["data"]["sources"],
                    parameters["preprocessing"], label=f"{phase}.{name}",
                )
                checked += 1
        if checked:
            logger.info("Validated %d experiment configs", checked)
