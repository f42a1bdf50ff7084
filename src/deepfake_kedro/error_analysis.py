"""Error analysis on out-of-fold predictions: the mistakes a model makes most confidently."""

from __future__ import annotations

import pandas as pd


def most_confident_errors(predictions: pd.DataFrame, n: int = 10, threshold: float = 0.5) -> pd.DataFrame:
    """The ``n`` most confident false positives and false negatives.

    Args:
        predictions: Out-of-fold predictions (``path``, ``source``, ``label``, ``prob``, ``fold``).
        n: How many of each kind.
        threshold: p(fake) at or above which an image is called fake.

    Returns:
        Rows of ``predictions`` with ``error`` (``false positive`` / ``false negative``) and
        ``confidence`` (the probability given to the wrong class), most confident first.
    """
    called_fake = predictions["prob"] >= threshold
    false_positives = predictions[called_fake & (predictions["label"] == 0)].assign(
        error="false positive", confidence=lambda t: t["prob"])
    false_negatives = predictions[~called_fake & (predictions["label"] == 1)].assign(
        error="false negative", confidence=lambda t: 1 - t["prob"])
    # Ties broken by path so the galleries do not change between runs.
    ranked = [kind.sort_values(["confidence", "path"], ascending=[False, True]).head(n)
              for kind in (false_positives, false_negatives)]
    return pd.concat(ranked, ignore_index=True)
