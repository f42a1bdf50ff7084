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


def test_errors_are_called_at_each_folds_threshold_and_say_so():
    # The reviewer's case: reals at 0.527 and 0.515 are called real by a fold threshold of 0.564.
    with_thresholds = predictions().assign(threshold=[0.564, 0.3, 0.05, 0.564, 0.3, 0.5, 0.564, 0.3])
    with_thresholds.loc[[1, 3], "prob"] = [0.527, 0.515]
    errors = most_confident_errors(with_thresholds, n=10)
    false_positives = errors[errors["error"] == "false positive"]
    # r1 (0.9 >= 0.564) and r3 (0.1 >= 0.05) are false positives; r2 (0.527 >= 0.3) too; r4 (0.515 < 0.564) is not.
    assert set(false_positives["path"]) == {"r1", "r2", "r3"}
    # f1 (0.2 < 0.3), f2 (0.45 < 0.5) and f4 (0.05 < 0.3) missed; f3 (0.99) caught.
    assert set(errors[errors["error"] == "false negative"]["path"]) == {"f1", "f2", "f4"}
    assert (errors["threshold_used"] == errors["threshold"]).all()
    assert set(errors["threshold_kind"]) == {"fold"}


def test_fixed_threshold_only_where_a_row_has_no_fold_threshold():
    partly = predictions().assign(threshold=[0.95, None, None, None, None, None, None, None])
    errors = most_confident_errors(partly, n=10, threshold=0.5).set_index("path")
    # r1 (0.9) is below its fold's 0.95, so no error; r2 and r4 (0.6) are judged at the fixed 0.5.
    assert "r1" not in errors.index
    assert errors.loc[["r2", "r4"], "threshold_kind"].tolist() == ["fixed", "fixed"]
    assert errors.loc[["r2", "r4"], "threshold_used"].tolist() == [0.5, 0.5]
    assert set(most_confident_errors(predictions())["threshold_kind"]) == {"fixed"}
