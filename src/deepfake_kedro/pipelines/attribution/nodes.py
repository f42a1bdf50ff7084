"""Nodes of the attribution pipeline: thin adapters from the catalog to ``deepfake_kedro.attribution``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro import attribution as core
from deepfake_kedro.folds import check_no_leakage
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.report_sections import ReportSection
from deepfake_kedro.run_store import FoldPlan, FoldRunStore
from deepfake_kedro.serialization import json_safe

logger = logging.getLogger(__name__)


def resolve_models(
    defaults: dict[str, Any], data: dict[str, Any], preprocessing: dict[str, Any], attribution: dict[str, Any],
    *, approach: core.Approach,
) -> list[dict[str, Any]]:
    """Every model of one approach, with its classes, the sources it trains on, its config and fingerprint.

    Args:
        defaults: The study's defaults.
        data: ``data.root``, ``data.sources`` and ``data.families``.
        preprocessing: The cache sizes.
        attribution: ``model``: overrides of ``defaults`` shared by every attribution model.
        approach: ``flat`` or ``hierarchical``.

    Returns:
        The models as JSON (saved as ``models.json``).
    """
    models = core.resolve_models(approach, attribution.get("model"), defaults, data, preprocessing)
    logger.info("attribution %s: %s", approach, ", ".join(f"{m.target.name} ({len(m.target.classes)} classes, "
                                                            f"{m.fingerprint})" for m in models))
    return [m.to_json() for m in models]


def _models(models: list[dict[str, Any]]) -> list[core.AttributionModel]:
    return [core.AttributionModel.from_json(m) for m in models]


def plan_runs(
    models: list[dict[str, Any]], fold_table: pd.DataFrame, image_cache: dict[str, ImageStack],
    face_cache: dict[str, ImageStack], data: dict[str, Any],
) -> dict[str, FoldPlan]:
    """One lazy fold run per model and fold; saving the plan (``TrainedFoldsDataset``) trains those not done.

    Args:
        models: The approach's models (``resolve_models``).
        fold_table: The study's fold table (the binary study's folds).
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        data: ``data.sources``.

    Returns:
        Lazy fold runs keyed ``<fingerprint>/fold_<k>``.
    """
    check_no_leakage(fold_table)
    plans: dict[str, FoldPlan] = {}
    for model in _models(models):
        plans.update(core.plan_model_runs(model, fold_table, model.cache(image_cache, face_cache), data["sources"]))
    return plans


def evaluate(
    models: list[dict[str, Any]], fold_runs: FoldRunStore, fold_table: pd.DataFrame,
    image_cache: dict[str, ImageStack], face_cache: dict[str, ImageStack], data: dict[str, Any],
    *, approach: core.Approach,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """End-to-end and per-level metrics out of fold, with fold CIs and row-normalised confusion matrices.

    Args:
        models: The approach's models.
        fold_runs: The trained folds.
        fold_table: The fold table.
        image_cache: Square-crop stacks by name (their signatures are part of each fold's data key).
        face_cache: Face-crop stacks by name.
        data: ``data.sources`` and ``data.families``.
        approach: ``flat`` or ``hierarchical``.

    Returns:
        OOF predictions, fold metrics, the metrics summary and the end-to-end confusion matrix.
    """
    resolved = _models(models)
    current = {m.target.name: core.model_fold_data(m, fold_table, m.cache(image_cache, face_cache), data["sources"])
               for m in resolved}
    oof, fold_metrics, summary, confusion = core.evaluate_approach(approach, resolved, fold_runs, fold_table, data,
                                                                   current)
    end = summary["views"][core.END_TO_END]
    logger.info("attribution %s: balanced accuracy %.3f (95%% CI %.3f-%.3f; chance %.3f), macro-F1 %.3f", approach,
                end["balanced_accuracy"]["mean"], end["balanced_accuracy"]["ci_low"],
                end["balanced_accuracy"]["ci_high"], core.chance_level(summary["classes"]), end["macro_f1"]["mean"])
    return oof, fold_metrics, json_safe(summary), confusion


def compare(flat_fold_metrics: pd.DataFrame, hierarchical_fold_metrics: pd.DataFrame) -> pd.DataFrame:
    """Hierarchical vs flat on the same folds (Nadeau-Bengio, Holm across balanced accuracy and macro-F1)."""
    return core.compare_approaches(flat_fold_metrics, hierarchical_fold_metrics)


def plot_confusion(flat_metrics: dict[str, Any], hierarchical_metrics: dict[str, Any]) -> Figure:
    """Row-normalised confusion matrices: both approaches end to end, then each level of the hierarchy."""
    return core.confusion_figure({"flat": flat_metrics, "hierarchical": hierarchical_metrics},
                                 "Attribution: row-normalised confusion matrices (out of fold)")


def explain(
    models: list[dict[str, Any]], fold_runs: FoldRunStore, oof_predictions: pd.DataFrame,
    image_cache: dict[str, ImageStack], face_cache: dict[str, ImageStack], attribution: dict[str, Any],
) -> Figure:
    """Grad-CAM of a few out-of-fold images for the class the flat model predicted, by the fold that held each out.

    Args:
        models: The flat approach's models (one).
        fold_runs: Its trained folds.
        oof_predictions: Its out-of-fold predictions.
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        attribution: ``gradcam_images``: how many images.

    Returns:
        The gallery.
    """
    (model,) = _models(models)
    cache = model.cache(image_cache, face_cache)
    examples = core.choose_gradcam_examples(oof_predictions, int(attribution.get("gradcam_images", 8)))
    maps = core.gradcam_predicted_class(model, fold_runs, examples, cache)
    images = [cache.array[row] for row in cache.rows(examples["path"].tolist())]
    return core.gradcam_figure(examples, images, maps,
                               f"Attribution (flat, {model.config.backbone}): Grad-CAM of the predicted class")


def report_section(flat_metrics: dict[str, Any], hierarchical_metrics: dict[str, Any],
                   paired_tests: pd.DataFrame) -> ReportSection:
    """The report's attribution slides: the comparison table and the confusion matrices."""
    summaries = {"flat": flat_metrics, "hierarchical": hierarchical_metrics}
    classes = ", ".join(flat_metrics["classes"])
    n_classes, chance = len(flat_metrics["classes"]), core.chance_level(flat_metrics["classes"])
    caption = (f"Which source made an image ({classes}): one flat {n_classes}-way model vs a "
               f"hierarchy (real/fake -> family -> source), on the study's folds. Mean over folds [95% t-CI]; "
               f"chance: a guess's balanced accuracy, 1/{n_classes} = {chance:.3f}; "
               f"p: Nadeau-Bengio paired test on the per-fold scores, Holm-adjusted across the two metrics. "
               f"Confusion rows are the true class, normalised to 1.")
    # Every model behind the numbers, so the report leaves the section out once one of them is retrained otherwise.
    models = {f"attribution.{model['name']}": model["fingerprint"]
              for summary in summaries.values() for model in summary["models"]}
    return ReportSection.with_figure(
        "attribution", "Source attribution: flat vs hierarchical", caption,
        core.confusion_figure(summaries, "Attribution: row-normalised confusion matrices (out of fold)", levels=False),
        core.results_table(summaries, paired_tests), models)
