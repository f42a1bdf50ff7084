"""Tests for deepfake_kedro.calibration: Platt scaling of a fold model on its validation rows."""

import numpy as np
import pandas as pd
import pytest

from deepfake_kedro.calibration import calibrate, platt_calibration


def simulated_fold(n: int, slope: float, intercept: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A fold model whose raw p(fake) is off-scale: the truth is sigmoid(slope * logit(p) + intercept)."""
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0.001, 0.999, n)
    truth = 1 / (1 + np.exp(-(slope * np.log(raw / (1 - raw)) + intercept)))
    return pd.DataFrame({"label": rng.binomial(1, truth), "prob": raw}), truth


def test_platt_calibration_recovers_a_fold_s_scale_and_its_probabilities_become_honest():
    val, truth = simulated_fold(20000, 0.4, -1.0, seed=3)  # overconfident and biased towards fake
    fit = platt_calibration(val)
    assert fit["slope"] == pytest.approx(0.4, abs=0.03) and fit["intercept"] == pytest.approx(-1.0, abs=0.06)
    assert fit["note"] == "" and fit["n_val"] == 20000
    test, test_truth = simulated_fold(20000, 0.4, -1.0, seed=4)
    calibrated = calibrate(test["prob"], fit)
    np.testing.assert_allclose(calibrated, test_truth, atol=0.03)
    brier = lambda p: float(np.mean((p - test["label"]) ** 2))  # noqa: E731
    assert brier(calibrated) < brier(test["prob"].to_numpy()) - 0.05


def test_calibration_keeps_apart_whatever_a_float32_fold_model_tells_apart():
    # Confident reals reach 1e-30 and saturated fakes exactly 1.0: the map keeps every one of them in order.
    raw = np.array([0.0, 1e-30, 1e-20, 1e-10, 0.5, 1 - 1e-7, 1.0], dtype=np.float32)
    assert (np.diff(calibrate(raw, {"slope": 0.5, "intercept": 0.0})) > 0).all()


def test_a_fold_no_better_than_chance_is_not_reversed_and_one_class_is_left_as_it_is():
    val, _ = simulated_fold(400, -1.0, 0.0, seed=5)  # ranks reals above fakes
    fit = platt_calibration(val)
    assert fit["slope"] == 0 and "no better than chance" in fit["note"]
    np.testing.assert_allclose(calibrate(np.array([0.01, 0.99]), fit), val["label"].mean(), rtol=1e-6)
    one_class = platt_calibration(pd.DataFrame({"label": [1, 1, 1], "prob": [0.2, 0.5, 0.9]}))
    assert (one_class["slope"], one_class["intercept"]) == (1.0, 0.0) and "one class" in one_class["note"]
    np.testing.assert_allclose(calibrate(np.array([0.2, 0.9]), one_class), [0.2, 0.9], rtol=1e-6)
