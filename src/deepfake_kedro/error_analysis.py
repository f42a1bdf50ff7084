"""Error analysis on out-of-fold predictions: the mistakes a model makes most confidently."""

from __future__ import annotations

import pandas as pd


def decision_thresholds(predictions: pd.DataFrame, fallback: float = 0.5) -> tuple[pd.Series, pd.Series]:
    """The threshold each prediction is judged at: its fold's, else ``fallback``.

    Args:
        predictions: Out-of-fold predictions, with each fold's decision ``threshold`` where it was chosen.
        fallback: p(fake) used where a row has no fold threshold (no column, or a missing value).

    Returns:
        The threshold per row, and ``fold`` or ``fixed`` per row saying where it came from.
    """
    fold_threshold = (pd.to_numeric(predictions["threshold"], errors="coerce") if "threshold" in predictions
                      else pd.Series(float("nan"), index=predictions.index))
    kind = fold_threshold.notna().map({True: "fold", False: "fixed"})
    return fold_threshold.fillna(fallback).astype(float), kind


def most_confident_errors(predictions: pd.DataFrame, n: int = 10, threshold: float = 0.5) -> pd.DataFrame:
    """The ``n`` most confident false positives and false negatives, at each fold's decision threshold.

    Args:
        predictions: Out-of-fold predictions (``path``, ``source``, ``label``, ``prob``, ``fold`` and, where
            the experiment chose one, the fold's decision ``threshold``).
        n: How many of each kind.
        threshold: p(fake) at or above which an image is called fake, used only for rows without a
            fold threshold.

    Returns:
        Rows of ``predictions`` with ``error`` (``false positive`` / ``false negative``), ``confidence``
        (the probability given to the wrong class), ``threshold_used`` (what the row was judged at) and
        ``threshold_kind`` (``fold``: its fold's threshold; ``fixed``: ``threshold``), most confident first.
    """
    used, kind = decision_thresholds(predictions, threshold)
    judged = predictions.assign(threshold_used=used, threshold_kind=kind)
    called_fake = judged["prob"] >= judged["threshold_used"]
    false_positives = judged[called_fake & (judged["label"] == 0)].assign(
        error="false positive", confidence=lambda t: t["prob"])
    false_negatives = judged[~called_fake & (judged["label"] == 1)].assign(
        error="false negative", confidence=lambda t: 1 - t["prob"])
    # Ties broken by path so the galleries do not change between runs.
    ranked = [errors.sort_values(["confidence", "path"], ascending=[False, True]).head(n)
              for errors in (false_positives, false_negatives)]
    return pd.concat(ranked, ignore_index=True)
