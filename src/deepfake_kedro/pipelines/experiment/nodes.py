"""Nodes of one experiment: resolve its config, train its folds, evaluate out of fold."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.config import ExperimentConfig, config_fingerprint, resolve_experiment
from deepfake_kedro.experiment import cache_name, evaluate_runs, plan_fold_runs
from deepfake_kedro.figures import learning_curves
from deepfake_kedro.folds import check_no_leakage, fold_count
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.run_store import FoldResult, FoldRunStore

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
    data: dict[str, Any], evaluation: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], Figure]:
    """Pools out-of-fold predictions and computes per-fold metrics and their CIs.

    Args:
        resolved_config: Output of ``resolve_config``.
        fold_runs: The trained folds.
        fold_table: The fold table (for the number of folds).
        data: ``data.sources``.
        evaluation: ``n_bootstrap``.

    Returns:
        Out-of-fold predictions, fold metrics, the metrics summary and learning curves.
    """
    oof, fold_metrics, summary, histories = evaluate_runs(
        fold_runs, resolved_config["fingerprint"], fold_count(fold_table), data["sources"],
        n_bootstrap=evaluation["n_bootstrap"], seed=resolved_config["config"]["seed"],
    )
    name = f"{resolved_config['phase']}.{resolved_config['experiment']}"
    auc = summary["metrics"]["auc"]
    logger.info("%s: AUC %.3f ± %.3f (95%% CI %.3f-%.3f)", name, auc["mean"], auc["std"], auc["ci_low"], auc["ci_high"])
    summary = {"experiment": resolved_config["experiment"], "phase": resolved_config["phase"],
               "config": resolved_config["config"], **summary}
    return oof, fold_metrics, _json_safe(summary), learning_curves(histories, f"{name}: learning curves per fold")
