"""One experiment end to end: lazy fold runs over the shared folds, then out-of-fold evaluation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepfake_kedro.calibration import calibrate, platt_calibration
from deepfake_kedro.config import ExperimentConfig
from deepfake_kedro.explain import load_fold_model
from deepfake_kedro.folds import fold_count, select_fold_rows
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.metrics import (
    VALIDATION_SOURCE_PREFIX,
    binary_metrics,
    grouped_bootstrap_ci,
    metric_range,
    per_source_metrics,
    summarize,
)
from deepfake_kedro.run_store import FoldData, FoldPlan, FoldResult, FoldRunStore, StoredFold, run_key
from deepfake_kedro.thresholds import ThresholdRule, choose_threshold, metrics_at_threshold
from deepfake_kedro.training import predict, train_fold

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["path", "source", "label", "group"]


def _sources(chosen: list[str] | str, all_sources: Mapping[str, str]) -> list[str]:
    return list(all_sources) if chosen == "all" else list(chosen)


def fold_data(
    config: ExperimentConfig, fold_table: pd.DataFrame, cache: ImageStack, sources: Mapping[str, str]
) -> dict[int, FoldData]:
    """The rows each fold of an experiment uses, with their roles and cache signatures, and their key.

    Args:
        config: The resolved experiment configuration (subsample, train / eval sources).
        fold_table: The study's fold table.
        cache: The image stack the experiment trains on (its signatures say when a file changed).
        sources: ``data.sources``.

    Returns:
        Fold -> its ``FoldData``; the key changes when an image is added, removed, replaced,
        regrouped or moves between train, val and test.
    """
    signatures = np.asarray(cache.signatures, dtype=object)[cache.rows(fold_table["path"].tolist())]
    train_sources = _sources(config.train_sources, sources)
    eval_sources = _sources(config.eval_sources, sources)
    data = {}
    for fold in range(fold_count(fold_table)):
        selected = select_fold_rows(fold_table, fold, config.subsample, train_sources, eval_sources,
                                    config.subsample_test)
        parts = []
        for role in ("train", "val", "test"):
            positions = getattr(selected, role)
            part = fold_table.iloc[positions][["path", "group", "label"]].assign(role=role)
            parts.append(part.assign(signature=signatures[positions]))
        data[fold] = FoldData.from_rows(pd.concat(parts, ignore_index=True))
    return data


def fold_predictions(fold_table: pd.DataFrame, positions: np.ndarray, fold: int, probabilities: np.ndarray
                     ) -> pd.DataFrame:
    """One fold's predictions on ``fold_table`` rows ``positions``: ``PREDICTION_COLUMNS``, ``fold``, ``prob``."""
    predictions = fold_table.iloc[positions][PREDICTION_COLUMNS].reset_index(drop=True)
    predictions["fold"] = fold
    predictions["prob"] = probabilities
    return predictions


def plan_fold_runs(
    config: ExperimentConfig,
    fingerprint: str,
    fold_table: pd.DataFrame,
    cache: ImageStack,
    sources: Mapping[str, str],
    label: str,
    device: torch.device | None = None,
) -> dict[str, FoldPlan]:
    """One lazy training run per fold, keyed ``<fingerprint>/fold_<k>`` and carrying its data key.

    Args:
        config: The resolved experiment configuration.
        fingerprint: Its fingerprint (identical configs share runs).
        fold_table: The study's fold table.
        cache: The image stack the experiment trains on.
        sources: ``data.sources``.
        label: Name used in progress lines.
        device: Where to train (default: CUDA if present).

    Returns:
        Plans that train a fold when called (the run store calls only unfinished or stale ones).
    """
    cache_rows = cache.rows(fold_table["path"].tolist())
    labels = np.zeros(len(cache), dtype=np.float32)
    labels[cache_rows] = fold_table["label"].to_numpy()
    train_sources = _sources(config.train_sources, sources)
    eval_sources = _sources(config.eval_sources, sources)
    n_folds = fold_count(fold_table)

    def run(fold: int) -> FoldResult:
        selected = select_fold_rows(fold_table, fold, config.subsample, train_sources, eval_sources,
                                    config.subsample_test)
        rows = {role: cache_rows[getattr(selected, role)] for role in ("train", "val", "test")}
        logger.info(
            "%s fold %d (folds 0-%d): %d train, %d val, %d test images at %d px",
            label, fold, n_folds - 1, len(rows["train"]), len(rows["val"]), len(rows["test"]), config.image_size,
        )
        started = time.perf_counter()
        state, history, probabilities, val_probabilities, summary = train_fold(
            config, cache.array, rows, labels, fold, device, label)
        predictions = fold_predictions(fold_table, selected.test, fold, probabilities)
        val_predictions = fold_predictions(fold_table, selected.val, fold, val_probabilities)
        meta = {
            "experiment": label, "fingerprint": fingerprint, "fold": fold,
            "n_train": int(len(rows["train"])), "n_val": int(len(rows["val"])), "n_test": int(len(rows["test"])),
            "seconds": time.perf_counter() - started, "config": config.model_dump(mode="json"), **summary,
        }
        return FoldResult(state, history, predictions, meta, val_predictions)

    data = fold_data(config, fold_table, cache, sources)
    return {run_key(fingerprint, fold): FoldPlan(data[fold], lambda fold=fold: run(fold), label)
            for fold in range(n_folds)}


def predict_validation(
    store: FoldRunStore, fingerprint: str, fold: int, config: ExperimentConfig, fold_table: pd.DataFrame,
    cache: ImageStack, sources: Mapping[str, str], device: torch.device | str | None = None,
) -> pd.DataFrame:
    """A stored fold's inner-validation predictions: its checkpoint run on its validation rows.

    For folds trained before validation predictions were stored; on CPU the result is deterministic.

    Args:
        store: Where the fold runs are.
        fingerprint: The experiment's config fingerprint.
        fold: The outer fold.
        config: The resolved experiment configuration (which rows the fold validated on).
        fold_table: The study's fold table.
        cache: The image stack the experiment trained on.
        sources: ``data.sources``.
        device: Where to predict (default: CUDA if present).

    Returns:
        As the predictions training stores: ``PREDICTION_COLUMNS``, ``fold``, ``prob``.
    """
    selected = select_fold_rows(fold_table, fold, config.subsample, _sources(config.train_sources, sources),
                                _sources(config.eval_sources, sources), config.subsample_test)
    model, normalizer = load_fold_model(store, fingerprint, fold, device)
    rows = cache.rows(fold_table["path"].iloc[selected.val].tolist())
    device = next(model.parameters()).device
    probabilities = predict(model, cache.array, rows, normalizer, device, description="validating")
    return fold_predictions(fold_table, selected.val, fold, probabilities)


def _source_split_auc(predictions: pd.DataFrame, fake_sources: list[str]) -> float:
    chosen = predictions[(predictions["label"] == 0) | predictions["source"].isin(fake_sources)]
    return binary_metrics(chosen["label"], chosen["prob"])["auc"]


def validation_source_aucs(val_predictions: pd.DataFrame, sources: Mapping[str, str]) -> dict[str, float]:
    """``val_pairwise_auc:<fake>`` for every fake source among a fold's inner-validation predictions."""
    real_sources = [s for s, kind in sources.items() if kind == "real"]
    metrics = per_source_metrics(val_predictions["label"], val_predictions["prob"], val_predictions["source"],
                                 real_sources)
    return {f"{VALIDATION_SOURCE_PREFIX}{key.removeprefix('pairwise_auc:')}": value for key, value in metrics.items()
            if key.startswith("pairwise_auc:")}


def fold_metrics_row(
    predictions: pd.DataFrame, meta: Mapping[str, Any], sources: Mapping[str, str], threshold: float | None = None,
    val_predictions: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Every per-fold metric of one fold's test predictions (at 0.5, and at ``threshold`` when given).

    At ``threshold`` the per-source rates are ``detection_rate_at_threshold:<fake>`` and
    ``false_alarm_rate_at_threshold:<real>``: the rates the package and the external sets apply.
    With ``val_predictions`` (the checkpoint's inner-validation predictions) the row also has
    ``val_pairwise_auc:<fake>``: with ``val_auc``, what choices between experiments read, so that no test fold
    chooses anything.
    """
    real_sources = [s for s, kind in sources.items() if kind == "real"]
    row: dict[str, Any] = {
        "fold": meta["fold"], "n_train": meta["n_train"], "n_val": meta["n_val"], "n_test": meta["n_test"],
        "best_epoch": meta["best_epoch"], "train_auc": meta["train_auc_at_best"], "val_auc": meta["val_auc_at_best"],
        "train_val_gap": meta["train_val_gap"],
    }
    row.update(binary_metrics(predictions["label"], predictions["prob"]))
    at_half = metrics_at_threshold(predictions["label"], predictions["prob"], 0.5)
    row.update(tpr=at_half["tpr_at_threshold"], fpr=at_half["fpr_at_threshold"])
    if threshold is not None:
        row.update(metrics_at_threshold(predictions["label"], predictions["prob"], threshold))
    row.update(per_source_metrics(predictions["label"], predictions["prob"], predictions["source"], real_sources))
    if threshold is not None:
        # Rates at 0.5 move with calibration alone; at the fold's threshold they compare with the external sets'.
        at_threshold = per_source_metrics(predictions["label"], predictions["prob"], predictions["source"],
                                          real_sources, threshold=threshold)
        row.update({f"{kind}_at_threshold:{source}": value for key, value in at_threshold.items()
                    for kind, _, source in [key.partition(":")] if kind in ("detection_rate", "false_alarm_rate")})
    if val_predictions is not None:
        row.update(validation_source_aucs(val_predictions, sources))
    trained = meta["config"]["train_sources"]
    if trained != "all":
        fakes_in = [s for s in trained if sources[s] == "fake"]
        fakes_out = [s for s, kind in sources.items() if kind == "fake" and s not in trained]
        if fakes_out:
            row["in_source_auc"] = _source_split_auc(predictions, fakes_in)
            row["heldout_auc"] = _source_split_auc(predictions, fakes_out)
            row["heldout_delta"] = row["in_source_auc"] - row["heldout_auc"]
    return row


def evaluate_runs(
    store: FoldRunStore,
    fingerprint: str,
    n_folds: int,
    sources: Mapping[str, str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    current: Mapping[int, FoldData] | None = None,
    label: str = "",
    rule: ThresholdRule | None = None,
    validation: Callable[[StoredFold], pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], list[pd.DataFrame]]:
    """Out-of-fold predictions, per-fold metrics and their summary across folds.

    Args:
        store: Where the fold runs are.
        fingerprint: The experiment's config fingerprint.
        n_folds: Number of outer folds.
        sources: ``data.sources``.
        n_bootstrap: Resamples of the grouped bootstrap on pooled predictions.
        seed: Bootstrap seed.
        current: Each fold's current data (``fold_data``): a fold trained on other data is an error.
        label: How errors name the experiment.
        rule: How each fold's threshold is chosen on its validation predictions (default ``youden``).
        validation: Computes a fold's validation predictions when the run did not store them
            (``predict_validation``); without it such a fold is an error.

    Returns:
        Out-of-fold predictions (with each fold's ``threshold`` and ``prob_calibrated``, its model's p(fake)
        through the fold's ``calibration``), fold metrics (at 0.5 and at the fold's threshold), summary (mean /
        std / 95% CI per metric, pooled AUC of the calibrated probabilities with a grouped bootstrap CI, each
        fold's calibration, the threshold rule, the bootstrap's resamples) and per-fold histories.

    Raises:
        StaleRunError: A fold's stored data key differs from its current one.
    """
    for fold, data in (current or {}).items():
        store.check_current(run_key(fingerprint, fold), data, label or fingerprint)
    rule = rule or ThresholdRule()
    folds = [store.read(run_key(fingerprint, fold)) for fold in range(n_folds)]
    thresholds, validations = [], []
    for f in folds:
        val = f.val_predictions if f.val_predictions is not None else validation(f) if validation else None
        if val is None:
            raise FileNotFoundError(f"{label or fingerprint}: fold run {f.directory} has no val_predictions.parquet; "
                                    "pass validation= (predict_validation) or retrain the fold")
        # Chosen on the fold's inner validation rows only: test labels never move it.
        thresholds.append(choose_threshold(val["label"], val["prob"], rule))
        validations.append(val)
    # Each fold model's p(fake) also on one scale (Platt, fitted on its validation rows): raw, a fold model more
    # confident than the others would rank its images above theirs wherever folds are pooled.
    calibrations = [platt_calibration(val) for val in validations]
    for fold, fit in enumerate(calibrations):
        if fit["note"]:
            logger.warning("%s fold %d: %s", label or fingerprint, fold, fit["note"])
    oof = pd.concat([f.predictions.assign(threshold=t, prob_calibrated=calibrate(f.predictions["prob"].to_numpy(), c))
                     for f, t, c in zip(folds, thresholds, calibrations, strict=True)], ignore_index=True)
    fold_metrics = pd.DataFrame([fold_metrics_row(f.predictions, f.meta, sources, t, val)
                                 for f, t, val in zip(folds, thresholds, validations, strict=True)])
    numeric = [c for c in fold_metrics.columns if c != "fold" and pd.api.types.is_numeric_dtype(fold_metrics[c])]
    summary: dict[str, Any] = {
        "fingerprint": fingerprint,
        # Which training data each fold's model saw: users of these results check their folds still match.
        "data_keys": [f.meta.get("data_key") for f in folds],
        "threshold_rule": rule.describe(),
        # Recorded so an interval can be told apart from one of another run with fewer resamples.
        "bootstrap_resamples": n_bootstrap,
        "metrics": {m: summarize(fold_metrics[m].to_numpy(dtype=float), bounds=metric_range(m)) for m in numeric},
        "folds": fold_metrics.to_dict(orient="records"),
    }
    pooled = oof["prob_calibrated"].to_numpy()
    low, high = grouped_bootstrap_ci(oof["label"], pooled, oof["group"], n_boot=n_bootstrap, seed=seed)
    summary["calibration"] = calibrations
    summary["pooled"] = {"auc": binary_metrics(oof["label"], pooled)["auc"],
                         "auc_boot_ci_low": low, "auc_boot_ci_high": high}
    return oof, fold_metrics, summary, [f.history.assign(fold=f.meta["fold"]) for f in folds]
