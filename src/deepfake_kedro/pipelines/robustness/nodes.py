"""Nodes of the robustness pipeline: thin adapters from the catalog to ``deepfake_kedro.robustness``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.data_index import ImageTree
from deepfake_kedro.datasets import FinishedExperiments
from deepfake_kedro.face_crops import BOX_COLUMNS
from deepfake_kedro.model_package import build_package, summary_calibrations
from deepfake_kedro.report_sections import ReportSection
from deepfake_kedro.resumable import Part
from deepfake_kedro.robustness import (
    corruption_grid,
    degradation_figure,
    full_models,
    plan_rescoring,
    robustness_table,
    sample_groups,
    shown_table,
)
from deepfake_kedro.run_store import run_key
from deepfake_kedro.study import phase4_slots

logger = logging.getLogger(__name__)


def _models(robustness: dict[str, Any], phase4: dict[str, Any]) -> list[str]:
    slots = phase4_slots(phase4["ranking"]["top_k"], phase4["scaling"])
    return full_models(robustness.get("models"), [slot.name for slot in slots if slot.full],
                       extra=robustness.get("extra_models"))


def score_corruptions(
    finished_experiments: FinishedExperiments, raw_images: ImageTree, face_boxes: pd.DataFrame,
    robustness: dict[str, Any], phase4: dict[str, Any],
) -> list[Part]:
    """Every final model's out-of-fold test images, corrupted and re-scored by the fold that held each out.

    Planned here, computed as the catalog saves it: a chunk of images at a time, each kept once scored, so an
    interrupted run resumes at the chunk it stopped in (``resumable.write_parts``).

    Args:
        finished_experiments: The study's finished experiments.
        raw_images: The raw image tree the study indexed.
        face_boxes: The stored MTCNN boxes (face-crop models re-use them; nothing is re-detected).
        robustness: ``models`` (null: every ``phase4.top<k>_full``), ``extra_models`` (tested beside them),
            ``corruptions``, ``max_images`` (whole groups drawn per fold and label up to about this many images;
            null: all), ``seed``, ``clean_tolerance``, ``device``.
        phase4: ``ranking.top_k`` and ``scaling``, which name the full runs.

    Returns:
        The parts (``robustness.plan_rescoring``) whose rows, one per model, corruption and image
        (``robustness.SCORE_COLUMNS``), make up ``robustness.scores``.
    """
    grid = corruption_grid(robustness["corruptions"])
    faces = (face_boxes.set_index("key")[BOX_COLUMNS].to_dict(orient="index") if len(face_boxes) else {})
    parts = []
    for label in _models(robustness, phase4):
        # Scored by AUC alone: the package's threshold is never applied.
        resolved, store, metrics, fold_metrics = finished_experiments.load(label, thresholds=False)
        package = build_package(resolved, store, len(fold_metrics), metrics, fold_metrics)
        predictions = pd.concat([store.read(run_key(resolved.fingerprint, fold)).predictions
                                 for fold in range(len(fold_metrics))], ignore_index=True)
        predictions = sample_groups(predictions, robustness.get("max_images"), robustness.get("seed", 0))
        logger.info("%s: re-scoring %d out-of-fold images under %d corruptions", label, len(predictions),
                    len(grid) - 1)
        parts.extend(plan_rescoring(
            package, predictions, raw_images, faces, grid, seed=robustness.get("seed", 0),
            device=robustness.get("device"), clean_tolerance=robustness.get("clean_tolerance", 1e-4), label=label))
    return parts


def summarize_robustness(
    scores: pd.DataFrame, finished_experiments: FinishedExperiments, n_bootstrap: int,
) -> tuple[pd.DataFrame, Figure, ReportSection]:
    """AUC with CIs per model × corruption × severity, paired tests against clean, the curves and the slide.

    Args:
        scores: ``score_corruptions``'s rows.
        finished_experiments: For each model's per-fold training and test sizes (the Nadeau-Bengio correction).
        n_bootstrap: Grouped bootstrap resamples (``evaluation.n_bootstrap``).

    Returns:
        The table (robustness.csv), the degradation-curve figure and the report section.
    """
    finished = {label: finished_experiments.load(label, thresholds=False) for label in scores["model"].unique()}
    sizes = {label: fold_metrics.sort_values("fold") for label, (_, _, _, fold_metrics) in finished.items()}
    n_train = {label: folds["n_train"].tolist() for label, folds in sizes.items()}
    # The study's test folds, not the images scored: robustness.max_images subsamples them, not the design.
    n_test = {label: folds["n_test"].tolist() for label, folds in sizes.items()}
    # Each fold model's calibration, fitted on its clean validation rows: the pooled AUC pools one scale.
    calibrations = {label: summary_calibrations(resolved.label, metrics)
                    for label, (resolved, _, metrics, _) in finished.items()}
    table = robustness_table(scores, n_train, n_test, n_bootstrap=n_bootstrap, calibrations=calibrations)
    caption = ("Each model's out-of-fold test images (the final models, then robustness.extra_models), "
               "corrupted at native resolution, then cropped as in training and scored by the fold model that "
               "held them out. A face-crop model keeps the box MTCNN found on the clean image: a detector missing "
               "or moving on the corrupted one is not part of these figures. AUC pooled over folds, each fold "
               "model's p(fake) calibrated on its validation rows [grouped bootstrap 95% CI]; "
               "delta = mean fold AUC change vs clean; p: "
               "Nadeau-Bengio paired test, Holm-adjusted across corruptions x severities.")
    # One figure for the catalog and the slide: the section renders it now, the catalog saves it at its own dpi.
    figure = degradation_figure(table)
    section = ReportSection.with_figure("robustness", "Robustness to image corruptions", caption, figure,
                                        shown_table(table), {label: f[0].fingerprint for label, f in finished.items()})
    return table, figure, section
