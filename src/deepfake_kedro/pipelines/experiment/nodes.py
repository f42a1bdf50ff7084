"""Nodes of one experiment: resolve its config, plan its fold runs, evaluate out of fold."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from deepfake_kedro import experiment as experiment_core
from deepfake_kedro.error_analysis import most_confident_errors
from deepfake_kedro.experiment import evaluate_runs, fold_data, predict_validation
from deepfake_kedro.explain import (
    captioned_overlay,
    choose_examples,
    explain_examples,
    explanation_table,
    gradcam_gallery,
    load_fold_model,
)
from deepfake_kedro.face_crops import face_boxes_in_view
from deepfake_kedro.figures import (
    confidence_histograms,
    image_gallery,
    learning_curves,
    reliability_diagram,
    threshold_sweep_figure,
)
from deepfake_kedro.folds import check_no_leakage, fold_count
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.run_store import FoldResult, FoldRunStore
from deepfake_kedro.selection import apply_preprocessing, final_model_overrides
from deepfake_kedro.serialization import json_safe
from deepfake_kedro.study import ResolvedExperiment, parse_slot, resolve
from deepfake_kedro.thresholds import threshold_rule, threshold_sweep

logger = logging.getLogger(__name__)


def resolve_config(
    defaults: dict[str, Any], experiments: dict[str, Any], data: dict[str, Any], preprocessing: dict[str, Any],
    *, phase: str, experiment: str,
) -> ResolvedExperiment:
    """Merges defaults, ``extends`` and overrides, validates them and fingerprints the result.

    Args:
        defaults: Shared defaults.
        experiments: All experiments of the phase.
        data: ``data.root`` and ``data.sources``.
        preprocessing: The sizes (and face-crop margin) the caches hold.
        phase: The phase name.
        experiment: The experiment name.

    Returns:
        The resolved experiment (saved as ``resolved_config.json``).
    """
    return resolve(phase, experiment, experiments, defaults, data, preprocessing)


def resolve_with_preprocessing(
    defaults: dict[str, Any], experiments: dict[str, Any], data: dict[str, Any], preprocessing: dict[str, Any],
    preprocessing_choice: dict[str, Any], *, phase: str, experiment: str,
) -> ResolvedExperiment:
    """As ``resolve_config``, with phase 2's chosen preprocessing laid over the experiment (phase 3).

    Args:
        defaults: Shared defaults.
        experiments: All experiments of the phase.
        data: ``data.root`` and ``data.sources``.
        preprocessing: The sizes the caches hold.
        preprocessing_choice: Output of phase 2's selection node.
        phase: The phase name.
        experiment: The experiment name.

    Returns:
        As ``resolve_config``, with the ``preprocessing_source`` that decided.
    """
    experiments = {**experiments, experiment: apply_preprocessing(experiments[experiment], preprocessing_choice)}
    return resolve(phase, experiment, experiments, defaults, data, preprocessing,
                   preprocessing_source=preprocessing_choice["source"])


def resolve_final_model(
    defaults: dict[str, Any], data: dict[str, Any], preprocessing: dict[str, Any],
    preprocessing_choice: dict[str, Any], model_selection: dict[str, Any], training: dict[str, Any] | None,
    *, slot: str, subsample: float,
) -> ResolvedExperiment:
    """A phase-4 experiment: the model ranked in ``slot``, phase 4's training settings, phase 2's
    preprocessing, a data fraction.

    Args:
        defaults: Shared defaults.
        data: ``data.root`` and ``data.sources``.
        preprocessing: The sizes the caches hold.
        preprocessing_choice: Output of phase 2's selection node.
        model_selection: Output of phase 4's ranking node.
        training: ``phase4.training``: settings laid over the model's best experiment (e.g. ``epochs``).
        slot: ``top<k>_<suffix>``, e.g. ``top1_20pct``.
        subsample: Fraction of each fold's train and val groups (the test fold stays whole).

    Returns:
        As ``resolve_config``, named ``p4a_<model>_<suffix>`` or ``p4b_<model>_full``, with its slot and model.
    """
    parsed = parse_slot(slot)
    chosen = parsed.chosen_model(model_selection["selected"])
    name = parsed.experiment_name(chosen["model"])
    overrides = final_model_overrides(chosen["config"], preprocessing_choice, subsample, training)
    data_share = (f"{subsample:.0%} of each fold's train and val groups, tested on the whole test fold"
                  if subsample < 1 else "every group")
    overrides["description"] = (f"{chosen['model']} (rank {chosen['rank']}, from {chosen['experiment']}) on the "
                                f"selected preprocessing, {data_share}")
    return resolve("phase4", name, {name: overrides}, defaults, data, preprocessing, slot=slot,
                   model=chosen["model"], preprocessing_source=preprocessing_choice["source"])


def plan_fold_runs(
    resolved_config: ResolvedExperiment, fold_table: pd.DataFrame, image_cache: dict[str, ImageStack],
    face_cache: dict[str, ImageStack], data: dict[str, Any],
) -> dict[str, Callable[[], FoldResult]]:
    """Plans one training run per fold; saving the plan (``TrainedFoldsDataset``) trains those not done yet.

    Args:
        resolved_config: The resolved experiment.
        fold_table: The study's fold table.
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        data: ``data.sources``.

    Returns:
        Lazy fold runs keyed ``<fingerprint>/fold_<k>``.
    """
    check_no_leakage(fold_table)
    cache = resolved_config.cache(image_cache, face_cache)
    return experiment_core.plan_fold_runs(resolved_config.config, resolved_config.fingerprint, fold_table, cache,
                                          data["sources"], resolved_config.label)


def evaluate_folds(
    resolved_config: ResolvedExperiment, fold_runs: FoldRunStore, fold_table: pd.DataFrame,
    data: dict[str, Any], evaluation: dict[str, Any], image_cache: dict[str, ImageStack],
    face_cache: dict[str, ImageStack],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], Figure]:
    """Pools out-of-fold predictions and computes per-fold metrics and their CIs.

    Args:
        resolved_config: The resolved experiment.
        fold_runs: The trained folds.
        fold_table: The fold table (for the folds and the rows each fold must have used).
        data: ``data.sources``.
        evaluation: ``n_bootstrap``; ``threshold``: the rule choosing each fold's threshold on its
            validation predictions (``{rule: youden}`` when absent).
        image_cache: Square-crop stacks by name (their signatures are part of each fold's data key).
        face_cache: Face-crop stacks by name.

    Returns:
        Out-of-fold predictions, fold metrics, the metrics summary and learning curves.
    """
    name = resolved_config.label
    cache = resolved_config.cache(image_cache, face_cache)
    config = resolved_config.config
    current = fold_data(config, fold_table, cache, data["sources"])

    def validation(stored):
        # Folds trained before validation predictions were stored: their checkpoint on their val rows.
        logger.info("%s fold %d: predicting its validation rows from the checkpoint", name, stored.meta["fold"])
        return predict_validation(fold_runs, resolved_config.fingerprint, stored.meta["fold"], config, fold_table,
                                  cache, data["sources"])

    oof, fold_metrics, summary, histories = evaluate_runs(
        fold_runs, resolved_config.fingerprint, fold_count(fold_table), data["sources"],
        n_bootstrap=evaluation["n_bootstrap"], seed=config.seed, current=current, label=name,
        rule=threshold_rule(evaluation.get("threshold")), validation=validation,
    )
    auc = summary["metrics"]["auc"]
    logger.info("%s: AUC %.3f ± %.3f (95%% CI %.3f-%.3f)", name, auc["mean"], auc["std"], auc["ci_low"], auc["ci_high"])
    summary = {"experiment": resolved_config.name, "phase": resolved_config.phase,
               "config": resolved_config.config.model_dump(mode="json"), **summary}
    return oof, fold_metrics, json_safe(summary), learning_curves(histories, f"{name}: learning curves per fold")


def sweep_thresholds(resolved_config: ResolvedExperiment, oof_predictions: pd.DataFrame) -> Figure:
    """TPR, FPR, accuracy and F1 of the out-of-fold predictions against the threshold, fold thresholds marked.

    Args:
        resolved_config: The resolved experiment.
        oof_predictions: The experiment's out-of-fold predictions (with each fold's ``threshold``).

    Returns:
        The threshold-sweep figure.
    """
    sweep = threshold_sweep(oof_predictions["label"], oof_predictions["prob"])
    chosen = oof_predictions.groupby("fold")["threshold"].first().to_numpy()
    return threshold_sweep_figure(sweep, chosen, f"{resolved_config.label}: threshold sweep (out of fold)")


def analyse_errors(
    resolved_config: ResolvedExperiment, oof_predictions: pd.DataFrame, image_cache: dict[str, ImageStack],
    face_cache: dict[str, ImageStack], evaluation: dict[str, Any],
) -> tuple[pd.DataFrame, Figure, Figure, Figure]:
    """The most confident mistakes (table and gallery), confidence histograms per source, calibration.

    Args:
        resolved_config: The resolved experiment.
        oof_predictions: The experiment's out-of-fold predictions.
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        evaluation: ``hard_examples``: how many false positives and how many false negatives.

    Returns:
        Hard examples (judged at each fold's decision threshold), their gallery, confidence histograms
        and a reliability diagram.
    """
    cache = resolved_config.cache(image_cache, face_cache)
    name = resolved_config.label
    errors = most_confident_errors(oof_predictions, evaluation.get("hard_examples", 10))
    images = [cache.array[row] for row in cache.rows(errors["path"].tolist())] if len(errors) else []
    captions = [f"{r.error} (t={r.threshold_used:.2f})\n{r.source}, p(fake)={r.prob:.2f}" for r in errors.itertuples()]
    return (errors, image_gallery(images, captions, f"{name}: most confident mistakes (what the model saw)"),
            confidence_histograms(oof_predictions, f"{name}: out-of-fold p(fake) per source"),
            reliability_diagram(oof_predictions, title=f"{name}\nreliability (out of fold)"))


def explain_predictions(
    resolved_config: ResolvedExperiment, fold_runs: FoldRunStore, oof_predictions: pd.DataFrame,
    image_cache: dict[str, ImageStack], face_cache: dict[str, ImageStack], face_boxes: pd.DataFrame,
    evaluation: dict[str, Any],
) -> tuple[dict[str, Image.Image], Figure, pd.DataFrame]:
    """Grad-CAM of 10-20 out-of-fold images across prediction type and source, each by its own fold's model.

    Args:
        resolved_config: The resolved experiment.
        fold_runs: The trained folds.
        oof_predictions: The experiment's out-of-fold predictions.
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        face_boxes: MTCNN's face per image (where the face lies in what the model saw).
        evaluation: ``gradcam_images``: how many images to explain (10-20).

    Returns:
        Captioned overlays keyed ``<pred_type>/<source>/<image>``, a gallery and a table of the
        explained images (with the CAM's share on the face).
    """
    config = resolved_config.config
    examples = choose_examples(oof_predictions, evaluation.get("gradcam_images", 16))
    explained = explain_examples(examples, resolved_config.cache(image_cache, face_cache),
                                 lambda fold: load_fold_model(fold_runs, resolved_config.fingerprint, fold),
                                 config.backbone)
    overlays = {f"{e['pred_type']}/{e['source']}/{Path(e['path']).stem}": captioned_overlay(e) for e in explained}
    title = f"{resolved_config.label}: Grad-CAM ({config.backbone}, out of fold)"
    faces = face_boxes_in_view(face_boxes, examples["path"].tolist(), config.face_crop, config.face_crop_margin)
    table = explanation_table(explained, faces)
    if len(table) and table["cam_flat"].all():
        logger.warning("%s: every Grad-CAM map is zero: the model's output does not move with these images "
                       "(p(fake) %.3f-%.3f), so its overlays show nothing", resolved_config.label,
                       table["prob"].min(), table["prob"].max())
    return overlays, gradcam_gallery(explained, title), table
