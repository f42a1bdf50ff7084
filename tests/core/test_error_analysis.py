"""most_confident_errors on a hand-made prediction table."""

from __future__ import annotations

import pandas as pd
import pytest

from deepfake_kedro.error_analysis import most_confident_errors


def predictions() -> pd.DataFrame:
    return pd.DataFrame({
        "path": ["r1", "r2", "r3", "r4", "f1", "f2", "f3", "f4"],
        "source": ["real"] * 4 + ["gan"] * 4,
        "label": [0, 0, 0, 0, 1, 1, 1, 1],
        "prob": [0.9, 0.6, 0.1, 0.6, 0.2, 0.45, 0.99, 0.05],
        "fold": [0, 1, 2, 0, 1, 2, 0, 1],
    })


def test_most_confident_false_positives_then_false_negatives():
    errors = most_confident_errors(predictions(), n=2)
    # False positives: reals at p >= 0.5 (r1 0.9, then the tie r2 / r4 at 0.6 broken by path).
    # False negatives: fakes below 0.5, confidence 1 - p (f4 0.95, f1 0.8; f2 0.55 is third).
    assert list(errors["path"]) == ["r1", "r2", "f4", "f1"]
    assert list(errors["error"]) == ["false positive"] * 2 + ["false negative"] * 2
    assert errors["confidence"].tolist() == pytest.approx([0.9, 0.6, 0.95, 0.8])


def test_threshold_decides_what_is_an_error():
    errors = most_confident_errors(predictions(), n=10, threshold=0.95)
    assert set(errors[errors["error"] == "false negative"]["path"]) == {"f1", "f2", "f4"}
    assert errors[errors["error"] == "false positive"].empty
