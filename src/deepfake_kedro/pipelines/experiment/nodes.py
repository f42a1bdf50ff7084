"""Nodes of one experiment: resolve its config, train its folds, evaluate out of fold."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from deepfake_kedro.config import ConfigError, ExperimentConfig, config_fingerprint, resolve_experiment
from deepfake_kedro.error_analysis import most_confident_errors
from deepfake_kedro.experiment import cache_name, evaluate_runs, fold_data, plan_fold_runs
from deepfake_kedro.explain import (
    captioned_overlay,
    choose_examples,
    explain_examples,
    explanation_table,
    gradcam_gallery,
    load_fold_model,
)
from deepfake_kedro.figures import confidence_histograms, image_gallery, learning_curves, reliability_diagram
from deepfake_kedro.folds import check_no_leakage, fold_count
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.run_store import FoldResult, FoldRunStore
from deepfake_kedro.selection import apply_preprocessing, final_model_overrides

logger = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    """nan / inf become null so the JSON stays valid for any reader."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return value


def resolve_config(
    defaults: dict[str, Any], experiments: dict[str, Any], data: dict[str, Any], preprocessing: dict[str, Any],
    *, phase: str, experiment: str,
) -> dict[str, Any]:
    """Merges defaults, ``extends`` and overrides, validates them and fingerprints the result.

    Args:
        defaults: Shared defaults.
        experiments: All experiments of the phase.
        data: ``data.root`` and ``data.sources``.
        preprocessing: The sizes (and face-crop margin) the caches hold.
        phase: The phase name.
        experiment: The experiment name.

    Returns:
        ``experiment``, ``phase``, ``fingerprint`` and the resolved ``config``.
    """
    config = resolve_experiment(
        experiment, experiments, defaults, data["sources"], preprocessing, label=f"{phase}.{experiment}"
    )
    return {
        "experiment": experiment, "phase": phase,
        "fingerprint": config_fingerprint(config, data),
        "config": config.model_dump(mode="json"),
    }


def resolve_with_preprocessing(
    defaults: dict[str, Any], experiments: dict[str, Any], data: dict[str, Any], preprocessing: dict[str, Any],
    preprocessing_choice: dict[str, Any], *, phase: str, experiment: str,
) -> dict[str, Any]:
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
        As ``resolve_config``, plus the ``preprocessing_source`` that decided.
    """
    experiments = {**experiments, experiment: apply_preprocessing(experiments[experiment], preprocessing_choice)}
    resolved = resolve_config(defaults, experiments, data, preprocessing, phase=phase, experiment=experiment)
    return {**resolved, "preprocessing_source": preprocessing_choice["source"]}


def resolve_final_model(
    defaults: dict[str, Any], data: dict[str, Any], preprocessing: dict[str, Any],
    preprocessing_choice: dict[str, Any], model_selection: dict[str, Any],
    *, slot: str, subsample: float, full: bool,
) -> dict[str, Any]:
    """A phase-4 experiment: the model ranked in ``slot``, phase 2's preprocessing, a data fraction.

    Args:
        defaults: Shared defaults.
        data: ``data.root`` and ``data.sources``.
        preprocessing: The sizes the caches hold.
        preprocessing_choice: Output of phase 2's selection node.
        model_selection: Output of phase 4's ranking node.
        slot: ``top<k>_<suffix>``, e.g. ``top1_20pct``.
        subsample: Fraction of the training groups.
        full: The full-dataset run (p4b) rather than a scaling point (p4a).

    Returns:
        As ``resolve_config``, named ``p4a_<model>_<suffix>`` or ``p4b_<model>_full``, with its ``slot``.
    """
    rank, suffix = slot.split("_", 1)
    index = int(rank.removeprefix("top")) - 1
    selected = model_selection["selected"]
    if index >= len(selected):
        raise ConfigError(f"phase4 slot {slot!r}: the model selection names only {len(selected)} models; "
                          f"set phase4.ranking.top_k (or override) to {index + 1} or more")
    chosen = selected[index]
    name = f"p4b_{chosen['model']}_full" if full else f"p4a_{chosen['model']}_{suffix}"
    overrides = final_model_overrides(chosen["config"], preprocessing_choice, subsample)
    overrides["description"] = (f"{chosen['model']} (rank {chosen['rank']}, from {chosen['experiment']}) on the "
                                f"selected preprocessing, {subsample:.0%} of the training groups")
    resolved = resolve_config(defaults, {name: overrides}, data, preprocessing, phase="phase4", experiment=name)
    return {**resolved, "slot": slot, "model": chosen["model"], "preprocessing_source": preprocessing_choice["source"]}


def train_folds(
    resolved_config: dict[str, Any], fold_table: pd.DataFrame, image_cache: dict[str, ImageStack],
    face_cache: dict[str, ImageStack], data: dict[str, Any],
) -> dict[str, Callable[[], FoldResult]]:
    """Plans one training run per fold; the fold-runs dataset trains those not done yet.

    Args:
        resolved_config: Output of ``resolve_config``.
        fold_table: The study's fold table.
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        data: ``data.sources``.

    Returns:
        Lazy fold runs keyed ``<fingerprint>/fold_<k>``.
    """
    check_no_leakage(fold_table)
    config = ExperimentConfig.model_validate(resolved_config["config"])
    caches = face_cache if config.face_crop else image_cache
    name = cache_name(config)
    if name not in caches:
        raise KeyError(f"{resolved_config['experiment']}: no image cache {name!r} (have {sorted(caches)}); "
                       f"run the preprocessing pipeline with this size in preprocessing")
    label = f"{resolved_config['phase']}.{resolved_config['experiment']}"
    return plan_fold_runs(config, resolved_config["fingerprint"], fold_table, caches[name], data["sources"], label)


def evaluate_folds(
    resolved_config: dict[str, Any], fold_runs: FoldRunStore, fold_table: pd.DataFrame,
    data: dict[str, Any], evaluation: dict[str, Any], image_cache: dict[str, ImageStack],
    face_cache: dict[str, ImageStack],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], Figure]:
    """Pools out-of-fold predictions and computes per-fold metrics and their CIs.

    Args:
        resolved_config: Output of ``resolve_config``.
        fold_runs: The trained folds.
        fold_table: The fold table (for the folds and the rows each fold must have used).
        data: ``data.sources``.
        evaluation: ``n_bootstrap``.
        image_cache: Square-crop stacks by name (their signatures are part of each fold's data key).
        face_cache: Face-crop stacks by name.

    Returns:
        Out-of-fold predictions, fold metrics, the metrics summary and learning curves.
    """
    config = ExperimentConfig.model_validate(resolved_config["config"])
    name = f"{resolved_config['phase']}.{resolved_config['experiment']}"
    current = fold_data(config, fold_table, (face_cache if config.face_crop else image_cache)[cache_name(config)],
                        data["sources"])
    oof, fold_metrics, summary, histories = evaluate_runs(
        fold_runs, resolved_config["fingerprint"], fold_count(fold_table), data["sources"],
        n_bootstrap=evaluation["n_bootstrap"], seed=resolved_config["config"]["seed"], current=current, label=name,
    )
    auc = summary["metrics"]["auc"]
    logger.info("%s: AUC %.3f ± %.3f (95%% CI %.3f-%.3f)", name, auc["mean"], auc["std"], auc["ci_low"], auc["ci_high"])
    summary = {"experiment": resolved_config["experiment"], "phase": resolved_config["phase"],
               "config": resolved_config["config"], **summary}
    return oof, fold_metrics, _json_safe(summary), learning_curves(histories, f"{name}: learning curves per fold")


def analyse_errors(
    resolved_config: dict[str, Any], oof_predictions: pd.DataFrame, image_cache: dict[str, ImageStack],
    face_cache: dict[str, ImageStack], evaluation: dict[str, Any],
) -> tuple[pd.DataFrame, Figure, Figure, Figure]:
    """The most confident mistakes (table and gallery), confidence histograms per source, calibration.

    Args:
        resolved_config: Output of ``resolve_config``.
        oof_predictions: The experiment's out-of-fold predictions.
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        evaluation: ``hard_examples``: how many false positives and how many false negatives.

    Returns:
        Hard examples, their gallery, confidence histograms and a reliability diagram.
    """
    config = ExperimentConfig.model_validate(resolved_config["config"])
    cache = (face_cache if config.face_crop else image_cache)[cache_name(config)]
    name = f"{resolved_config['phase']}.{resolved_config['experiment']}"
    errors = most_confident_errors(oof_predictions, evaluation.get("hard_examples", 10))
    images = [cache.array[row] for row in cache.rows(errors["path"].tolist())] if len(errors) else []
    captions = [f"{r.error}\n{r.source}, p(fake)={r.prob:.2f}" for r in errors.itertuples()]
    return (errors, image_gallery(images, captions, f"{name}: most confident mistakes (what the model saw)"),
            confidence_histograms(oof_predictions, f"{name}: out-of-fold p(fake) per source"),
            reliability_diagram(oof_predictions, title=f"{name}\nreliability (out of fold)"))


def explain_predictions(
    resolved_config: dict[str, Any], fold_runs: FoldRunStore, oof_predictions: pd.DataFrame,
    image_cache: dict[str, ImageStack], face_cache: dict[str, ImageStack], evaluation: dict[str, Any],
) -> tuple[dict[str, Image.Image], Figure, pd.DataFrame]:
    """Grad-CAM of 10-20 out-of-fold images across prediction type and source, each by its own fold's model.

    Args:
        resolved_config: Output of ``resolve_config``.
        fold_runs: The trained folds.
        oof_predictions: The experiment's out-of-fold predictions.
        image_cache: Square-crop stacks by name.
        face_cache: Face-crop stacks by name.
        evaluation: ``gradcam_images``: how many images to explain (10-20).

    Returns:
        Captioned overlays keyed ``<pred_type>/<source>/<image>``, a gallery and a table of the
        explained images (with the CAM's share on the central face region).
    """
    config = ExperimentConfig.model_validate(resolved_config["config"])
    cache = (face_cache if config.face_crop else image_cache)[cache_name(config)]
    examples = choose_examples(oof_predictions, evaluation.get("gradcam_images", 16))
    explained = explain_examples(
        examples, cache, lambda fold: load_fold_model(fold_runs, resolved_config["fingerprint"], fold), config.backbone)
    overlays = {f"{e['pred_type']}/{e['source']}/{Path(e['path']).stem}": captioned_overlay(e) for e in explained}
    name = f"{resolved_config['phase']}.{resolved_config['experiment']}"
    return overlays, gradcam_gallery(explained, f"{name}: Grad-CAM ({config.backbone}, out of fold)"), \
        explanation_table(explained)
