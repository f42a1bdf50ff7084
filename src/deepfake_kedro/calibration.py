"""Platt scaling of a fold model's p(fake), fitted on that fold's inner validation predictions.

Fold models of one experiment come out on different scales (one fold's Youden threshold 0.15, another's 0.95).
Whatever pools or averages them needs them on one: the pooled out-of-fold AUC, robustness's pooled AUC and the
model package's ensemble. The fit reads validation rows only, so no test fold takes part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

CALIBRATION_METHOD = "Platt scaling on its fold's inner validation predictions"
# The logit of a float32 probability, with exact 0 and 1 (a saturated sigmoid) moved to the nearest float32 inside:
# nothing a fold model can tell apart is tied.
_LOWEST, _HIGHEST = float(np.finfo(np.float32).tiny), 1.0 - float(np.finfo(np.float32).epsneg)


def platt_calibration(val_predictions: pd.DataFrame) -> dict[str, Any]:
    """A fold model's Platt scaling, ``p -> sigmoid(slope * logit(p) + intercept)``, fitted on its validation rows.

    Fold models of one experiment come out on different scales (one fold's Youden threshold 0.15, another's
    0.95): averaged raw, the most confident fold outvotes the others. Calibrated, their mean is a probability
    and their thresholds can be averaged. scikit-learn's logistic regression on the logit does the fit; its L2
    penalty keeps the slope finite when the validation rows separate perfectly.

    Args:
        val_predictions: The fold's inner-validation predictions (``label``, ``prob``).

    Returns:
        ``slope``, ``intercept``, ``n_val`` and ``note`` (why the fit was replaced, or empty). A one-class
        validation set keeps the identity (slope 1, intercept 0); a slope of 0 or below (validation scores no
        better than chance) becomes 0, so the fold gives every image its validation fake share rather than a
        reversed ranking.
    """
    y = val_predictions["label"].to_numpy(dtype=int)
    x = _logit(val_predictions["prob"].to_numpy(dtype=float))
    if len(np.unique(y)) < 2:
        return {"slope": 1.0, "intercept": 0.0, "n_val": int(len(y)),
                "note": "one class in validation: not calibrated"}
    fit = LogisticRegression().fit(x.reshape(-1, 1), y)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if slope <= 0:  # both classes are present, so the fake share lies strictly between 0 and 1
        return {"slope": 0.0, "intercept": float(logit(y.mean())), "n_val": int(len(y)),
                "note": "validation scores no better than chance: every image gets the validation fake share"}
    return {"slope": slope, "intercept": intercept, "n_val": int(len(y)), "note": ""}


def _logit(probabilities: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(probabilities, dtype=float), _LOWEST, _HIGHEST))


def calibrate(probabilities: np.ndarray, calibration: Mapping[str, Any]) -> np.ndarray:
    """Raw p(fake) of one fold model mapped through its ``platt_calibration``."""
    return expit(calibration["slope"] * _logit(probabilities) + calibration["intercept"])
