"""Tests for deepfake_kedro.stats."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from deepfake_kedro.stats import (
    holm_adjust,
    nadeau_bengio_interval,
    nadeau_bengio_power,
    nadeau_bengio_required_gain,
    nadeau_bengio_ttest,
    paired_comparison,
)


def test_nadeau_bengio_by_hand():
    d = [0.02, 0.04, 0.03, 0.05, 0.01]
    # k = 5, mean = 0.03; deviations -0.01, 0.01, 0, 0.02, -0.02 -> SS = 0.001, var = 0.00025.
    # Corrected variance = (1/5 + 200/800) * 0.00025 = 0.45 * 0.00025 = 0.0001125.
    # t = 0.03 / sqrt(0.0001125) -> t^2 = 0.0009 / 0.0001125 = 8.
    expected_t = math.sqrt(8)
    expected_p = 2 * stats.t.sf(expected_t, df=4)

    t, p = nadeau_bengio_ttest(d, n_train=800, n_test=200)

    assert t == pytest.approx(expected_t)
    assert p == pytest.approx(expected_p)
    # The correction must make it more conservative than the plain paired t-test.
    assert p > stats.ttest_1samp(d, 0.0).pvalue


def test_nadeau_bengio_uses_mean_fold_sizes_and_sign():
    d = np.array([-0.02, -0.04, -0.03, -0.05, -0.01])
    t_scalar, p_scalar = nadeau_bengio_ttest(d, 800, 200)
    t_arr, p_arr = nadeau_bengio_ttest(d, [790, 810, 800, 780, 820], [210, 190, 200, 220, 180])
    assert t_scalar == pytest.approx(-math.sqrt(8))
    assert (t_arr, p_arr) == pytest.approx((t_scalar, p_scalar))


def test_nadeau_bengio_zero_variance():
    assert nadeau_bengio_ttest([0.1, 0.1, 0.1], 90, 10) == (math.inf, 0.0)
    assert nadeau_bengio_ttest([-0.1, -0.1, -0.1], 90, 10) == (-math.inf, 0.0)
    assert nadeau_bengio_ttest([0.0, 0.0, 0.0], 90, 10) == (0.0, 1.0)


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(7)
    baseline = rng.uniform(0.80, 0.85, size=10)
    treatment = baseline + rng.normal(0.01, 0.01, size=10)
    diff = treatment - baseline
    n_train, n_test = 900, 100

    out = paired_comparison(baseline, treatment, n_train, n_test)

    ttest = stats.ttest_rel(treatment, baseline)
    plain_low, plain_high = stats.t.interval(0.95, df=9, loc=diff.mean(), scale=diff.std(ddof=1) / np.sqrt(10))
    # Nadeau-Bengio: the variance of the mean is (1/k + n_test/n_train) * var, not var / k.
    nb_half = stats.t.ppf(0.975, df=9) * np.sqrt((1 / 10 + 100 / 900) * diff.var(ddof=1))
    nb_t, nb_p = nadeau_bengio_ttest(diff, n_train, n_test)
    assert out["n_folds"] == 10
    assert out["baseline_mean"] == pytest.approx(baseline.mean())
    assert out["treatment_mean"] == pytest.approx(treatment.mean())
    assert out["diff_mean"] == pytest.approx(diff.mean())
    assert out["diff_std"] == pytest.approx(diff.std(ddof=1))
    assert out["diff_ci_low"] == pytest.approx(diff.mean() - nb_half)
    assert out["diff_ci_high"] == pytest.approx(diff.mean() + nb_half)
    assert (out["paired_t_ci_low"], out["paired_t_ci_high"]) == pytest.approx((plain_low, plain_high))
    assert out["effect_size_dz"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert out["t_stat"] == pytest.approx(ttest.statistic)
    assert out["p_paired_t"] == pytest.approx(ttest.pvalue)
    assert out["nb_t_stat"] == pytest.approx(nb_t)
    assert out["p_nadeau_bengio"] == pytest.approx(nb_p)
    assert out["p_wilcoxon"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert out["wilcoxon_min_p"] == pytest.approx(2 / 2**10)
    assert out["wilcoxon_can_reach_significance"] is True


def test_paired_comparison_sign_is_treatment_minus_baseline():
    out = paired_comparison([0.9, 0.8, 0.85], [0.8, 0.75, 0.8], 90, 10)
    assert out["diff_mean"] == pytest.approx(-1 / 15)
    assert out["t_stat"] < 0 and out["nb_t_stat"] < 0


def test_wilcoxon_min_p_five_folds_cannot_reach_significance():
    baseline = [0.80, 0.81, 0.82, 0.83, 0.84]
    treatment = [0.85, 0.87, 0.83, 0.90, 0.88]  # all five folds improve

    out = paired_comparison(baseline, treatment, 400, 100)

    assert out["wilcoxon_min_p"] == pytest.approx(0.0625)
    assert out["wilcoxon_can_reach_significance"] is False
    # The exact test attains that floor when every difference has the same sign.
    assert out["p_wilcoxon"] == pytest.approx(0.0625)


def test_wilcoxon_min_p_counts_only_nonzero_differences():
    baseline = [0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    treatment = [0.8, 0.9, 0.85, 0.82, 0.95, 0.87, 0.81]  # first fold ties

    out = paired_comparison(baseline, treatment, 400, 100)

    assert out["wilcoxon_min_p"] == pytest.approx(2 / 2**6)
    assert out["wilcoxon_can_reach_significance"] is True


def test_paired_comparison_all_zero_differences():
    out = paired_comparison([0.8, 0.9, 0.7], [0.8, 0.9, 0.7], 90, 10)
    assert out["diff_mean"] == 0.0 and out["diff_std"] == 0.0
    assert out["diff_ci_low"] == out["diff_ci_high"] == 0.0
    assert math.isnan(out["effect_size_dz"])
    assert math.isnan(out["p_wilcoxon"])
    assert (out["nb_t_stat"], out["p_nadeau_bengio"]) == (0.0, 1.0)


def test_a_difference_of_rounding_noise_alone_is_no_difference():
    baseline = [0.8, 0.9, 0.7, 0.85, 0.75]
    treatment = [0.7 + 0.1, 0.9, 0.7, 0.85, 0.75]  # 0.7 + 0.1 is 0.7999999999999999: equal AUCs, other floats
    differences = np.subtract(treatment, baseline)
    assert differences[0] != 0 and abs(differences.mean()) < 1e-16
    out = paired_comparison(baseline, treatment, 90, 10)
    assert (out["nb_t_stat"], out["p_nadeau_bengio"]) == (0.0, 1.0)
    assert nadeau_bengio_interval(differences, 90, 10) == (0.0, 0.0)
    assert holm_adjust([out["p_nadeau_bengio"], 0.5])[0] == 1.0


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_paired_comparison_constant_nonzero_difference():
    out = paired_comparison([0.7, 0.8, 0.6], [0.8, 0.9, 0.7], 90, 10)
    assert math.isnan(out["effect_size_dz"])
    assert out["p_nadeau_bengio"] == 0.0 and out["nb_t_stat"] == math.inf


def test_the_difference_interval_excludes_zero_exactly_when_nadeau_bengio_rejects():
    rng = np.random.default_rng(11)
    for _ in range(300):
        diff = rng.normal(rng.uniform(-0.02, 0.04), 0.015, size=5)
        low, high = nadeau_bengio_interval(diff, 800, 200)
        _, p = nadeau_bengio_ttest(diff, 800, 200)
        assert (low > 0 or high < 0) == (p < 0.05)
    # The case the plain interval gets wrong: it excludes 0 while the corrected test does not reject.
    out = paired_comparison([0.80] * 5, [0.81, 0.83, 0.798, 0.82, 0.825], 800, 200)
    assert out["paired_t_ci_low"] > 0 and out["p_paired_t"] < 0.05
    assert out["diff_ci_low"] < 0 < out["diff_ci_high"] and out["p_nadeau_bengio"] > 0.05


def test_a_fold_missing_on_one_side_is_left_out_of_both(caplog):
    baseline = [0.80, 0.82, np.nan, 0.81, 0.83]  # fold 2: AUC undefined (one class)
    treatment = [0.85, 0.86, 0.84, 0.87, 0.88]
    n_train = [800, 810, 790, 805, 795]

    out = paired_comparison(baseline, treatment, n_train, 200)

    kept = [0, 1, 3, 4]
    same = paired_comparison(np.take(baseline, kept), np.take(treatment, kept), np.take(n_train, kept), 200)
    assert out == pytest.approx(same, nan_ok=True)
    assert out["n_folds"] == 4 and out["p_nadeau_bengio"] < 0.05
    assert out["p_paired_t"] == pytest.approx(stats.ttest_rel(np.take(treatment, kept), np.take(baseline, kept)).pvalue)
    assert "fold(s) [2]" in caplog.text


def test_fewer_than_two_compared_folds_test_nothing():
    out = paired_comparison([0.8, np.nan, np.nan], [np.nan, 0.9, 0.85], 90, 10)
    assert out["n_folds"] == 0
    assert all(math.isnan(out[k]) for k in ("p_paired_t", "p_nadeau_bengio", "p_wilcoxon", "diff_ci_low"))
    assert out["wilcoxon_can_reach_significance"] is False


def test_paired_comparison_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"5.*4"):
        paired_comparison([0.1] * 5, [0.2] * 4, 90, 10)


def test_holm_by_hand_three_p_values():
    # Sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(1 * 0.04, 0.06) = 0.06.
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_holm_by_hand_running_max_and_clip():
    p = [0.3, 0.004, 0.9, 0.011, 0.6, 0.01]
    # Sorted 0.004, 0.01, 0.011, 0.3, 0.6, 0.9 times (m - i) = 6, 5, 4, 3, 2, 1:
    # 0.024, 0.05, 0.044, 0.9, 1.2, 0.9; running max 0.024, 0.05, 0.05, 0.9, 1.2, 1.2; clipped at 1.
    np.testing.assert_allclose(holm_adjust(p), [0.9, 0.024, 1.0, 0.05, 1.0, 0.05])


def test_holm_keeps_an_untested_comparison_in_the_family():
    out = holm_adjust([0.01, np.nan, 0.04, 0.03])
    assert math.isnan(out[1])
    # The family planned four tests: the untested one counts as p = 1, so the others are corrected for four.
    np.testing.assert_allclose(out[[0, 2, 3]], multipletests([0.01, 1.0, 0.04, 0.03], method="holm")[1][[0, 2, 3]])
    np.testing.assert_allclose(out[[0, 2, 3]], [0.04, 0.09, 0.09])


def test_holm_all_nan():
    assert np.isnan(holm_adjust([np.nan, np.nan])).all()


def _rejection_rate(standardized_gain: float, alpha: float, n_sims: int = 20000) -> float:
    """How often the project's Nadeau-Bengio test rejects on 5-fold differences drawn from their CV model."""
    rng = np.random.default_rng(7)
    rho = 1 / 5  # n_test / (n_train + n_test): the folds' correlation in Nadeau & Bengio's model
    shared, own = rng.normal(size=(n_sims, 1)), rng.normal(size=(n_sims, 5))
    noise = np.sqrt(rho) * shared + np.sqrt(1 - rho) * own
    # The fold differences' sample SD estimates sqrt(1 - rho) (the shared part cancels in it).
    differences = standardized_gain * np.sqrt(1 - rho) + noise
    p = np.array([nadeau_bengio_ttest(d, n_train=4, n_test=1)[1] for d in differences])
    return float(np.mean(p < alpha))


@pytest.mark.parametrize(("gain", "alpha"), [(0.0, 0.05), (2.0, 0.05), (4.0, 0.05 / 9), (6.0, 0.05 / 9)])
def test_nadeau_bengio_power_matches_simulated_rejections(gain, alpha):
    simulated = _rejection_rate(gain, alpha)
    power = nadeau_bengio_power(gain, n_folds=5, test_train_ratio=0.25, alpha=alpha)
    standard_error = math.sqrt(power * (1 - power) / 20000)
    assert abs(simulated - power) < 4 * standard_error + 1e-3


def test_nadeau_bengio_required_gain_inverts_power():
    for power in (0.5, 0.9, 0.99):
        gain = nadeau_bengio_required_gain(power, alpha=0.05 / 9)
        assert nadeau_bengio_power(gain, alpha=0.05 / 9) == pytest.approx(power, abs=1e-6)
    # More comparisons under Holm ask for a larger gain at the same power.
    assert nadeau_bengio_required_gain(0.9, alpha=0.05 / 9) > nadeau_bengio_required_gain(0.9, alpha=0.05)


def test_nadeau_bengio_required_gain_rejects_power_outside_alpha_and_one():
    with pytest.raises(ValueError, match="power must lie between alpha"):
        nadeau_bengio_required_gain(0.01, alpha=0.05)
