"""Node of the package pipeline: assemble the chosen experiment's model package."""

from __future__ import annotations

import logging
from typing import Any

from deepfake_kedro.datasets import FinishedExperiments
from deepfake_kedro.model_package import ModelPackage, build_package

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "phase4.top1_full"


def build_model_package(finished_experiments: FinishedExperiments, predict: dict[str, Any],
                        preprocessing: dict[str, Any]) -> ModelPackage:
    """The fold checkpoints of ``predict.model`` as an ensemble, with its preprocessing, threshold and card.

    Args:
        finished_experiments: Every finished experiment's results.
        predict: ``model``: the experiment to package, ``<phase>.<experiment>`` (default ``phase4.top1_full``).
        preprocessing: ``face_detection``, whose MTCNN threshold made the training crops (recorded in the package).

    Returns:
        The package (saved as the ``model_package`` folder).
    """
    label = predict.get("model") or DEFAULT_MODEL
    resolved, store, metrics, fold_metrics = finished_experiments.load(label)
    package = build_package(resolved, store, len(fold_metrics), metrics, fold_metrics,
                            finished_experiments.shortcut_audit(), preprocessing.get("face_detection"))
    logger.info("%s packaged: %d fold models, threshold %.3f (%s, %s)", label, len(package.fold_states),
                package.threshold["value"], package.threshold["rule"], package.threshold["choice"])
    return package
