"""Decision thresholds chosen on validation predictions by a named rule, and metrics at a threshold.

A threshold is always chosen on a fold's inner validation predictions and then applied to its test
fold, so test labels never influence it. An image is predicted fake when ``p(fake) >= threshold``
(the convention of ``sklearn.metrics.roc_curve``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_curve

logger = logging.getLogger(__name__)

RULES = ("youden", "eer", "target_fpr")
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ThresholdRule:
    """How a fold's threshold is chosen: ``youden`` (max TPR - FPR), ``eer`` (FPR = FNR) or ``target_fpr``."""

    rule: str = "youden"
    target_fpr: float | None = None

    def describe(self) -> str:
        """E.g. ``target_fpr (FPR <= 0.05)``, for tables and model cards."""
        return f"target_fpr (FPR <= {self.target_fpr:g})" if self.rule == "target_fpr" else self.rule


def threshold_rule(params: Mapping[str, Any] | None, key: str = "evaluation.threshold") -> ThresholdRule:
    """Validates a threshold parameter block, e.g. ``{rule: youden}`` or ``{rule: target_fpr, target_fpr: 0.05}``.

    Args:
        params: The block (None means the default, ``youden``).
        key: Where the block lives, named in errors.

    Returns:
        The rule.

    Raises:
        ValueError: Unknown rule, unknown keys, or a missing / out-of-range ``target_fpr``.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - {"rule", "target_fpr"})
    if unknown:
        raise ValueError(f"{key}: unknown keys {unknown}; allowed: rule, target_fpr")
    rule = params.get("rule", "youden")
    if rule not in RULES:
        raise ValueError(f"{key}.rule is {rule!r}; choose one of {list(RULES)}")
    target = params.get("target_fpr")
    if rule == "target_fpr":
        if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
            raise ValueError(f"{key}.target_fpr must be a number in (0, 1) with rule target_fpr, got {target!r}")
        return ThresholdRule(rule, float(target))
    if target is not None:
        raise ValueError(f"{key}.target_fpr is only used with rule target_fpr (rule is {rule!r}); remove it")
    return ThresholdRule(rule)


def choose_threshold(y_true: ArrayLike, y_prob: ArrayLike, rule: ThresholdRule) -> float:
    """The threshold that ``rule`` picks on the ROC curve of validation predictions.

    Ties go to the highest threshold (the first ROC point). ``roc_curve``'s leading ``inf`` becomes the
    smallest float above 1.0 (nothing is called fake). A one-class validation set has no ROC curve: the
    threshold stays at 0.5, with a warning.

    Args:
        y_true: Validation labels, 1 = fake.
        y_prob: Validation probabilities of fake.
        rule: The rule.

    Returns:
        The threshold.
    """
    y_true = np.asarray(y_true).astype(int)
    if not (np.any(y_true == 0) and np.any(y_true == 1)):
        logger.warning("Validation set has one class only; the threshold stays at %.1f.", DEFAULT_THRESHOLD)
        return DEFAULT_THRESHOLD
    fpr, tpr, thresholds = roc_curve(y_true, np.asarray(y_prob, dtype=float), drop_intermediate=False)
    if rule.rule == "youden":
        index = _first_best(tpr - fpr)
    elif rule.rule == "eer":
        index = _first_best(-np.abs((1.0 - tpr) - fpr))
    else:
        allowed = np.flatnonzero(fpr <= rule.target_fpr + _TIE)  # never empty: the first ROC point has FPR 0
        index = int(allowed[_first_best(tpr[allowed])])
    # roc_curve's first threshold is inf ("call nothing fake"). 1.0 would call every p = 1.0 image fake
    # (float32 sigmoid saturates above a logit of ~17): the next float above 1 keeps the rule and JSON.
    return float(min(thresholds[index], _ABOVE_EVERY_PROBABILITY))


_TIE = 1e-12
_ABOVE_EVERY_PROBABILITY = float(np.nextafter(1.0, 2.0))


def _first_best(values: np.ndarray) -> int:
    # Rates like 2/3 and 1 - 1/3 differ in the last bit: equal up to rounding counts as a tie.
    return int(np.flatnonzero(values >= values.max() - _TIE)[0])


def metrics_at_threshold(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> dict[str, float]:
    """Accuracy, F1, TPR and FPR of ``p >= threshold``, keyed ``<metric>_at_threshold``, and the threshold.

    TPR (FPR) is nan when the set has no fake (real) image.
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = (np.asarray(y_prob, dtype=float) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "threshold": float(threshold),
        "accuracy_at_threshold": float(accuracy_score(y_true, y_pred)),
        "f1_at_threshold": float(f1_score(y_true, y_pred, labels=[0, 1], zero_division=0.0)),
        "tpr_at_threshold": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "fpr_at_threshold": float(fp / (fp + tn)) if fp + tn else float("nan"),
    }


def threshold_sweep(y_true: ArrayLike, y_prob: ArrayLike, n_points: int = 101) -> pd.DataFrame:
    """TPR, FPR, accuracy and F1 at evenly spaced thresholds in [0, 1] (for the sweep figure)."""
    rows = []
    for threshold in np.linspace(0.0, 1.0, n_points):
        at = metrics_at_threshold(y_true, y_prob, threshold)
        rows.append({"threshold": at["threshold"], "tpr": at["tpr_at_threshold"], "fpr": at["fpr_at_threshold"],
                     "accuracy": at["accuracy_at_threshold"], "f1": at["f1_at_threshold"]})
    return pd.DataFrame(rows)
