"""Paired significance tests for comparing models evaluated on the same CV folds."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

from deepfake_kedro.metrics import summarize

logger = logging.getLogger(__name__)


def nadeau_bengio_ttest(
    differences: ArrayLike, n_train: ArrayLike, n_test: ArrayLike
) -> tuple[float, float]:
    """Run the corrected resampled t-test of Nadeau & Bengio (2003).

    The variance of the fold differences is inflated by ``n_test / n_train`` to
    account for overlapping training sets across folds.

    Args:
        differences: Per-fold metric differences (treatment - baseline).
        n_train: Training-set size, scalar or one per fold (the mean is used).
        n_test: Test-set size, scalar or one per fold (the mean is used).

    Returns:
        ``(t, p)`` with a two-sided p-value from Student's t with ``k - 1`` df.
        Zero variance (differences equal up to rounding) gives ``(±inf, 0.0)`` for
        a non-zero mean and ``(0.0, 1.0)`` otherwise.

    Raises:
        ValueError: If fewer than two folds are given.
    """
    d = np.asarray(differences, dtype=float).ravel()
    k = d.size
    if k < 2:
        raise ValueError(f"Need at least 2 folds for the Nadeau-Bengio test, got {k}.")
    mean = float(d.mean())
    # Fold differences such as 0.8 - 0.7 and 0.9 - 0.8 differ only by rounding noise.
    if np.allclose(d, d[0], rtol=1e-9, atol=1e-12):
        return (float(np.copysign(np.inf, mean)), 0.0) if mean != 0 else (0.0, 1.0)
    var = float(d.var(ddof=1))
    ratio = float(np.mean(n_test)) / float(np.mean(n_train))
    t_stat = mean / np.sqrt((1.0 / k + ratio) * var)
    p_value = 2.0 * stats.t.sf(abs(t_stat), df=k - 1)
    return float(t_stat), float(p_value)


def nadeau_bengio_power(
    standardized_gain: float, n_folds: int = 5, test_train_ratio: float = 0.25, alpha: float = 0.05
) -> float:
    """Probability that the two-sided Nadeau-Bengio test rejects at ``alpha`` for a true effect of this size.

    Under Nadeau & Bengio's model of k-fold CV (fold differences equicorrelated with correlation
    ``n_test / (n_train + n_test)``), their corrected t follows a noncentral t with ``k - 1`` df and
    noncentrality ``standardized_gain / sqrt(1/k + n_test/n_train)``: the power below is exact under that model.

    Args:
        standardized_gain: The true mean fold difference over the standard deviation the fold differences show
            (``effect_size_dz`` in the paired tests estimates it).
        n_folds: Number of folds k.
        test_train_ratio: ``n_test / n_train`` (1/4 for 5-fold CV).
        alpha: The level the raw p must reach (for Holm over m comparisons, at most ``alpha / m``).

    Returns:
        The power, in [alpha, 1).
    """
    df = n_folds - 1
    noncentrality = standardized_gain / np.sqrt(1.0 / n_folds + test_train_ratio)
    critical = stats.t.ppf(1.0 - alpha / 2.0, df)
    # P(T < -c | λ) = P(T > c | -λ): scipy's nct.cdf returns nan deep in the lower tail, its sf does not.
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality))


def nadeau_bengio_required_gain(
    power: float, n_folds: int = 5, test_train_ratio: float = 0.25, alpha: float = 0.05
) -> float:
    """The standardized gain (mean fold difference / its SD) the Nadeau-Bengio test detects with this power.

    Args:
        power: Wanted probability of rejecting, in (alpha, 1).
        n_folds: Number of folds k.
        test_train_ratio: ``n_test / n_train``.
        alpha: The level the raw p must reach.

    Returns:
        The smallest positive standardized gain with at least that power.

    Raises:
        ValueError: If ``power`` is not between ``alpha`` and 1.
    """
    if not alpha < power < 1.0:
        raise ValueError(f"power must lie between alpha ({alpha}) and 1, got {power}")
    return float(optimize.brentq(
        lambda gain: nadeau_bengio_power(gain, n_folds, test_train_ratio, alpha) - power, 1e-9, 100.0))


def _wilcoxon(diff: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank p of the differences, and the smallest p their count allows."""
    n_nonzero = int(np.count_nonzero(diff))
    # scipy reports p=1 when every difference is zero; there is no test to run then.
    p = float(stats.wilcoxon(diff, alternative="two-sided").pvalue) if n_nonzero else float("nan")
    return p, min(1.0, 2.0 / 2.0**n_nonzero)


def paired_comparison(
    baseline: ArrayLike,
    treatment: ArrayLike,
    n_train: ArrayLike,
    n_test: ArrayLike,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare fold-wise scores of two models evaluated on the same folds.

    Args:
        baseline: Per-fold metric of the baseline model.
        treatment: Per-fold metric of the treatment model, same fold order.
        n_train: Training-set size, scalar or per fold (for Nadeau-Bengio).
        n_test: Test-set size, scalar or per fold (for Nadeau-Bengio).
        confidence: Coverage of the t-interval of the differences.

    Returns:
        Dict with ``n_folds``, ``baseline_mean``, ``treatment_mean``, ``diff_mean``,
        ``diff_std``, ``diff_ci_low``, ``diff_ci_high``, ``effect_size_dz``,
        ``t_stat``, ``p_paired_t``, ``nb_t_stat``, ``p_nadeau_bengio``,
        ``p_wilcoxon``, ``wilcoxon_min_p`` and ``wilcoxon_can_reach_significance``.
        Differences are treatment - baseline.

    Raises:
        ValueError: If the two arrays differ in length or hold fewer than two folds.
    """
    base = np.asarray(baseline, dtype=float).ravel()
    treat = np.asarray(treatment, dtype=float).ravel()
    if base.size != treat.size:
        raise ValueError(
            f"baseline has {base.size} folds but treatment has {treat.size}; "
            "paired comparison needs the same folds."
        )
    diff = treat - base
    diff_summary = summarize(diff, confidence=confidence)
    diff_std = diff_summary["std"]
    paired = stats.ttest_rel(treat, base)
    nb_t, nb_p = nadeau_bengio_ttest(diff, n_train, n_test)

    p_wilcoxon, wilcoxon_min_p = _wilcoxon(diff)

    return {
        "n_folds": int(diff.size),
        "baseline_mean": float(base.mean()),
        "treatment_mean": float(treat.mean()),
        "diff_mean": float(diff.mean()),
        "diff_std": diff_std,
        "diff_ci_low": diff_summary["ci_low"],
        "diff_ci_high": diff_summary["ci_high"],
        "effect_size_dz": (
            float(diff.mean() / diff_std) if diff_std > 0 else float("nan")
        ),
        "t_stat": float(paired.statistic),
        "p_paired_t": float(paired.pvalue),
        "nb_t_stat": nb_t,
        "p_nadeau_bengio": nb_p,
        "p_wilcoxon": p_wilcoxon,
        "wilcoxon_min_p": wilcoxon_min_p,
        "wilcoxon_can_reach_significance": bool(wilcoxon_min_p < 0.05),
    }


def holm_adjust(p_values: ArrayLike) -> np.ndarray:
    """Adjust a family of p-values with the Holm step-down procedure.

    Args:
        p_values: Raw p-values; nan entries are excluded from the family.

    Returns:
        Holm-adjusted p-values in the input order, nan where the input was nan.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    adjusted = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        adjusted[valid] = multipletests(p[valid], method="holm")[1]
    return adjusted
