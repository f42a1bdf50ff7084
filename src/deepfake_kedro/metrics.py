"""Detection metrics, per-source breakdowns and fold-level uncertainty summaries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    recall_score,
    roc_auc_score,
    roc_curve,
)

logger = logging.getLogger(__name__)


def _has_both_classes(y_true: np.ndarray) -> bool:
    """Return whether a label array contains both class 0 and class 1."""
    return bool(np.any(y_true == 0) and np.any(y_true == 1))


def safe_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """ROC AUC, or nan when only one class is present (a fold or batch sklearn would reject).

    Args:
        y_true: Binary labels, 1 = fake.
        y_score: Scores where higher means more likely fake.

    Returns:
        The AUC in [0, 1], or nan.
    """
    y_true = np.asarray(y_true)
    if not _has_both_classes(y_true):
        return float("nan")
    return float(roc_auc_score(y_true, np.asarray(y_score, dtype=float)))


def equal_error_rate(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Compute the equal error rate, where false positive and false negative rates meet.

    The crossing of FPR and FNR (1 - TPR) is located on the ROC curve from
    ``sklearn.metrics.roc_curve`` and linearly interpolated between the two
    ROC points that bracket it.

    Args:
        y_true: Binary labels, 1 = fake (positive class).
        y_score: Scores where higher means more likely fake.

    Returns:
        The equal error rate in [0, 1], or nan if only one class is present.
    """
    y_true = np.asarray(y_true)
    if not _has_both_classes(y_true):
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, np.asarray(y_score))
    gap = (1.0 - tpr) - fpr
    # The ROC curve runs from (0, 0) to (1, 1), so gap starts at 1 and ends at -1.
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i])
    frac = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + frac * (fpr[i] - fpr[i - 1]))


def binary_metrics(
    y_true: ArrayLike, y_prob: ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """Compute threshold-free and thresholded binary detection metrics.

    Args:
        y_true: Binary labels, 1 = fake.
        y_prob: Predicted probability of being fake.
        threshold: Images with ``y_prob >= threshold`` are predicted fake.

    Returns:
        Dict with ``auc``, ``accuracy``, ``f1``, ``average_precision``, ``eer``, the calibration scores
        ``brier`` (mean squared error of the probability) and ``log_loss``, and confusion counts ``tn``,
        ``fp``, ``fn``, ``tp``. Ranking metrics are nan when only one class is present.
    """
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=float)
    y_pred = (y_prob >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both = _has_both_classes(y_true)
    if not both:
        logger.warning("Only one class present; auc, average_precision and eer are nan.")
    return {
        "auc": safe_auc(y_true, y_prob),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, labels=[0, 1], zero_division=0.0)),
        "average_precision": (
            float(average_precision_score(y_true, y_prob)) if both else float("nan")
        ),
        "eer": equal_error_rate(y_true, y_prob),
        # Threshold-free, like AUC, but they also see calibration: the reliability diagram as numbers.
        "brier": float(brier_score_loss(y_true, y_prob, labels=[0, 1])),
        "log_loss": float(log_loss(y_true, y_prob, labels=[0, 1])),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def multiclass_metrics(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[str]) -> dict[str, float]:
    """Balanced accuracy, macro-F1 and per-class recall of class-index predictions (scikit-learn's).

    Args:
        y_true: True class index of each image (a position in ``classes``).
        y_pred: Predicted class index.
        classes: Class names.

    Returns:
        ``balanced_accuracy`` (mean recall over the classes in ``y_true``), ``macro_f1`` (mean F1 over the
        classes in ``y_true`` or ``y_pred``), ``accuracy`` and ``recall:<class>`` (nan for a class absent from
        ``y_true``); every one nan when there are no rows.
    """
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    labels = list(range(len(classes)))
    if not len(y_true):
        return {"balanced_accuracy": float("nan"), "macro_f1": float("nan"), "accuracy": float("nan"),
                **{f"recall:{name}": float("nan") for name in classes}}
    recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    # A class neither true nor predicted has no F1 (0/0): counting it as 0 would punish a fold for lacking it.
    seen = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    return {
        # sklearn's balanced accuracy is the mean recall over the classes present in y_true.
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=seen, average="macro", zero_division=0.0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        **{f"recall:{name}": float(r) for name, r in zip(classes, recalls, strict=True)},
    }


def normalized_confusion(y_true: ArrayLike, y_pred: ArrayLike, classes: Sequence[str]) -> np.ndarray:
    """Row-normalised confusion matrix (each true class's row sums to 1; a class never seen gives a zero row)."""
    return confusion_matrix(np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int),
                            labels=list(range(len(classes))), normalize="true")


def multiclass_auc(y_true: ArrayLike, probabilities: ArrayLike) -> float:
    """Macro one-vs-rest ROC AUC of ``(N, C)`` class probabilities; nan unless every class is present."""
    y_true, probabilities = np.asarray(y_true, dtype=int), np.asarray(probabilities, dtype=float)
    n_classes = probabilities.shape[1]
    if len(np.unique(y_true)) < n_classes:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax: sums within 1e-7
    return float(roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro",
                               labels=list(range(n_classes))))


def multiclass_log_loss(y_true: ArrayLike, probabilities: ArrayLike) -> float:
    """Mean cross-entropy of ``(N, C)`` class probabilities against class indices."""
    probabilities = np.asarray(probabilities, dtype=float)
    # Softmax computed in float32 sums to 1 only within ~1e-7, which sklearn warns about.
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return float(log_loss(np.asarray(y_true, dtype=int), probabilities, labels=list(range(probabilities.shape[1]))))


def per_source_metrics(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    sources: ArrayLike,
    real_sources: Sequence[str],
    threshold: float = 0.5,
) -> dict[str, float]:
    """Break detection performance down by image source (generator or real dataset).

    Args:
        y_true: Binary labels, 1 = fake; must agree with ``real_sources``.
        y_prob: Predicted probability of being fake.
        sources: Source name of each image.
        real_sources: Source names holding real images; all others are fake.
        threshold: Images with ``y_prob >= threshold`` are predicted fake.

    Returns:
        Dict with ``n:<source>`` for every source present,
        ``detection_rate:<source>`` and ``pairwise_auc:<source>`` (all real images
        vs that source) for fake sources, ``false_alarm_rate:<source>`` for real
        sources, and ``pairwise_auc_var`` (ddof=1 variance of the pairwise AUCs,
        nan when fewer than two are defined).

    Raises:
        ValueError: If lengths differ or labels contradict ``real_sources``.
    """
    y_true = np.asarray(y_true).astype(int)
    y_prob = np.asarray(y_prob, dtype=float)
    sources = np.asarray(sources).astype(str)
    if not len(y_true) == len(y_prob) == len(sources):
        raise ValueError(
            f"Length mismatch: y_true={len(y_true)}, y_prob={len(y_prob)}, "
            f"sources={len(sources)}"
        )
    is_real = np.isin(sources, np.asarray(list(real_sources), dtype=str))
    if np.any(y_true[is_real] != 0) or np.any(y_true[~is_real] != 1):
        raise ValueError("y_true disagrees with real_sources (label 1 must mean fake source).")
    y_pred = y_prob >= threshold
    real_prob = y_prob[is_real]

    out: dict[str, float] = {}
    pairwise_aucs: list[float] = []
    for source in np.unique(sources):
        mask = sources == source
        out[f"n:{source}"] = int(mask.sum())
        if is_real[mask][0]:
            out[f"false_alarm_rate:{source}"] = float(y_pred[mask].mean())
            continue
        out[f"detection_rate:{source}"] = float(y_pred[mask].mean())
        labels = np.r_[np.zeros(real_prob.size), np.ones(int(mask.sum()))]
        auc = safe_auc(labels, np.r_[real_prob, y_prob[mask]])
        out[f"pairwise_auc:{source}"] = auc
        pairwise_aucs.append(auc)

    defined = np.asarray(pairwise_aucs, dtype=float)
    defined = defined[~np.isnan(defined)]
    out["pairwise_auc_var"] = float(np.var(defined, ddof=1)) if defined.size >= 2 else float("nan")
    return out


VALIDATION_SOURCE_PREFIX = "val_pairwise_auc:"
"""Per fold, the inner-validation AUC of the real images against one fake source (phase 4's worst-source criterion)."""

UNIT_INTERVAL_METRICS = frozenset({
    "auc", "accuracy", "f1", "average_precision", "eer", "brier", "threshold", "tpr", "fpr", "train_auc", "val_auc",
    "detection_rate", "false_alarm_rate", "pairwise_auc", "val_pairwise_auc", "balanced_accuracy", "macro_f1",
    "recall",
})
"""Metrics every value of which lies in [0, 1]; ``name:source`` and ``name_at_threshold`` variants count too."""


def metric_range(name: str) -> tuple[float, float] | None:
    """[0, 1] for a metric of ``UNIT_INTERVAL_METRICS`` (e.g. ``auc``, ``pairwise_auc:insight``), else None."""
    base = name.split(":")[0].removesuffix("_at_threshold")
    return (0.0, 1.0) if base in UNIT_INTERVAL_METRICS else None


def summarize(values: ArrayLike, confidence: float = 0.95, bounds: tuple[float, float] | None = None
              ) -> dict[str, Any]:
    """Summarize fold-level values with a mean and a Student-t confidence interval.

    Args:
        values: One value per fold; nan entries are dropped.
        confidence: Coverage of the two-sided interval.
        bounds: The range every possible value lies in (``metric_range``): the interval is truncated to it.
            Truncation keeps the coverage, since the quantity estimated lies in the range too; an AUC
            interval reaching 1.008 would otherwise be printed.

    Returns:
        Dict with ``mean``, ``std`` (ddof=1), ``ci_low``, ``ci_high`` and ``n``.
        ``std`` and the interval are nan when fewer than two values remain; values
        equal up to rounding give ``std == 0`` and ``ci_low == ci_high == mean``.
    """
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    mean = float(arr.mean()) if n else float("nan")
    if n < 2:
        return {"mean": mean, "std": float("nan"), "ci_low": float("nan"),
                "ci_high": float("nan"), "n": n}
    # Values equal up to rounding noise would otherwise give a spurious std of ~1e-17.
    std = 0.0 if np.allclose(arr, arr[0], rtol=1e-9, atol=1e-12) else float(arr.std(ddof=1))
    if std == 0:
        ci_low = ci_high = mean
    else:
        ci_low, ci_high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=std / np.sqrt(n))
        if bounds is not None:
            ci_low, ci_high = max(ci_low, bounds[0]), min(ci_high, bounds[1])
    return {"mean": mean, "std": std, "ci_low": float(ci_low), "ci_high": float(ci_high), "n": n}


def grouped_bootstrap_ci(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    groups: ArrayLike,
    metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc_score,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Estimate a percentile bootstrap interval that resamples whole groups.

    Groups (e.g. identities or source videos) are drawn with replacement so that
    correlated images never end up split across a resample.

    Args:
        y_true: Binary labels, 1 = fake.
        y_prob: Predicted probability of being fake.
        groups: Group id of each image.
        metric: Callable ``metric(y_true, y_prob) -> float``.
        n_boot: Number of bootstrap resamples.
        seed: Seed for ``numpy.random.default_rng``.
        confidence: Coverage of the percentile interval.

    Returns:
        ``(low, high)`` percentile bounds, or ``(nan, nan)`` if no resample
        contained both classes.
    """
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=float)
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    n_groups = counts.size
    rng = np.random.default_rng(seed)

    estimates: list[float] = []
    for _ in range(n_boot):
        picked = rng.integers(0, n_groups, size=n_groups)
        lengths = counts[picked]
        # Position of each drawn row within `order`: its group's start plus its offset in the group.
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        idx = order[np.repeat(starts[picked], lengths) + offsets]
        y_b = y_true[idx]
        if not _has_both_classes(y_b):
            continue
        estimates.append(float(metric(y_b, y_prob[idx])))

    skipped = n_boot - len(estimates)
    if skipped:
        logger.info("Skipped %d of %d single-class bootstrap resamples.", skipped, n_boot)
    if not estimates:
        logger.warning("No bootstrap resample contained both classes.")
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.percentile(estimates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
