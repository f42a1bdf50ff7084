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

_ROUNDING = 1e-12
"""A mean fold difference this small is float rounding (AUCs are ratios of counts), not an effect."""


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
        a non-zero mean and ``(0.0, 1.0)`` for a mean at rounding level (``|mean| <= 1e-12``).

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
        # A mean at rounding level (one fold's 0.7 + 0.1 against 0.8) is no difference, not an infinite t.
        return (float(np.copysign(np.inf, mean)), 0.0) if abs(mean) > _ROUNDING else (0.0, 1.0)
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


def nadeau_bengio_interval(
    differences: ArrayLike, n_train: ArrayLike, n_test: ArrayLike, confidence: float = 0.95
) -> tuple[float, float]:
    """The confidence interval of the mean fold difference that matches the Nadeau-Bengio test.

    Same corrected variance ``(1/k + n_test/n_train) * var`` and ``k - 1`` df as
    :func:`nadeau_bengio_ttest`, so the interval excludes 0 exactly when that test's p is below
    ``1 - confidence``. The plain t-interval (``var / k``) is too narrow for CV, whose training
    sets overlap.

    Returns:
        ``(low, high)``; ``(mean, mean)`` for differences equal up to rounding (``(0, 0)`` when the mean is
        at rounding level, as the test's p is then 1); nan below two folds.
    """
    d = np.asarray(differences, dtype=float).ravel()
    k = d.size
    if k < 2:
        return float("nan"), float("nan")
    mean = float(d.mean())
    if np.allclose(d, d[0], rtol=1e-9, atol=1e-12):
        return (mean, mean) if abs(mean) > _ROUNDING else (0.0, 0.0)
    ratio = float(np.mean(n_test)) / float(np.mean(n_train))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=k - 1)) * np.sqrt((1.0 / k + ratio) * float(d.var(ddof=1)))
    return mean - half, mean + half


def _per_fold(sizes: ArrayLike, keep: np.ndarray) -> np.ndarray:
    # n_train / n_test come as a scalar or one value per fold; only the compared folds count.
    arr = np.asarray(sizes, dtype=float).ravel()
    return arr[keep] if arr.size == keep.size else arr


def paired_comparison(
    baseline: ArrayLike,
    treatment: ArrayLike,
    n_train: ArrayLike,
    n_test: ArrayLike,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare fold-wise scores of two models evaluated on the same folds.

    A fold where either model has no value (an AUC undefined on a one-class fold, a metric one of
    them never recorded) is left out of both sides, with a warning; ``n_folds`` says how many
    folds were compared. Below two compared folds nothing can be tested: every p is nan.

    Args:
        baseline: Per-fold metric of the baseline model.
        treatment: Per-fold metric of the treatment model, same fold order.
        n_train: Training-set size, scalar or per fold (for Nadeau-Bengio).
        n_test: Test-set size, scalar or per fold (for Nadeau-Bengio).
        confidence: Coverage of the intervals of the difference.

    Returns:
        Dict with ``n_folds``, ``baseline_mean``, ``treatment_mean``, ``diff_mean``,
        ``diff_std``, ``diff_ci_low``, ``diff_ci_high`` (the Nadeau-Bengio interval, consistent with
        ``p_nadeau_bengio`` and so with ``p_holm``), ``paired_t_ci_low``, ``paired_t_ci_high`` (the plain
        t-interval, consistent with ``p_paired_t``), ``effect_size_dz``, ``t_stat``, ``p_paired_t``,
        ``nb_t_stat``, ``p_nadeau_bengio``, ``p_wilcoxon``, ``wilcoxon_min_p`` and
        ``wilcoxon_can_reach_significance``. Differences are treatment - baseline.

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
    if base.size < 2:
        raise ValueError(f"Need at least 2 folds for a paired comparison, got {base.size}.")
    compared = np.isfinite(base) & np.isfinite(treat)
    if not compared.all():
        logger.warning("Paired comparison: fold(s) %s have no value for one side and are left out of both; "
                       "%d of %d folds compared.", np.flatnonzero(~compared).tolist(), compared.sum(), compared.size)
    base, treat = base[compared], treat[compared]
    n_train, n_test = _per_fold(n_train, compared), _per_fold(n_test, compared)
    diff = treat - base
    diff_summary = summarize(diff, confidence=confidence)
    diff_std = diff_summary["std"]
    result: dict[str, Any] = {
        "n_folds": int(diff.size),
        "baseline_mean": float(base.mean()) if diff.size else float("nan"),
        "treatment_mean": float(treat.mean()) if diff.size else float("nan"),
        "diff_mean": diff_summary["mean"],
        "diff_std": diff_std,
        "diff_ci_low": float("nan"), "diff_ci_high": float("nan"),
        "paired_t_ci_low": diff_summary["ci_low"],
        "paired_t_ci_high": diff_summary["ci_high"],
        "effect_size_dz": (
            float(diff.mean() / diff_std) if diff_std > 0 else float("nan")
        ),
        "t_stat": float("nan"), "p_paired_t": float("nan"), "nb_t_stat": float("nan"),
        "p_nadeau_bengio": float("nan"), "p_wilcoxon": float("nan"), "wilcoxon_min_p": float("nan"),
        "wilcoxon_can_reach_significance": False,
    }
    if diff.size < 2:
        logger.warning("Paired comparison: only %d fold(s) with values on both sides; nothing to test.", diff.size)
        return result
    paired = stats.ttest_rel(treat, base)
    nb_t, nb_p = nadeau_bengio_ttest(diff, n_train, n_test)
    nb_low, nb_high = nadeau_bengio_interval(diff, n_train, n_test, confidence)
    p_wilcoxon, wilcoxon_min_p = _wilcoxon(diff)
    result.update({
        "diff_ci_low": nb_low, "diff_ci_high": nb_high,
        "t_stat": float(paired.statistic), "p_paired_t": float(paired.pvalue),
        "nb_t_stat": nb_t, "p_nadeau_bengio": nb_p,
        "p_wilcoxon": p_wilcoxon, "wilcoxon_min_p": wilcoxon_min_p,
        "wilcoxon_can_reach_significance": bool(wilcoxon_min_p < 0.05),
    })
    return result


def holm_adjust(p_values: ArrayLike) -> np.ndarray:
    """Adjust a family of p-values with the Holm step-down procedure.

    Args:
        p_values: Raw p-values of the planned family; nan marks a comparison that could not be tested.

    Returns:
        Holm-adjusted p-values in the input order, nan where the input was nan. An untested comparison
        still counts in the family (as p = 1): dropping it would correct the others for fewer tests
        than were planned.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    tested = ~np.isnan(p)
    if not tested.any():
        return np.full_like(p, np.nan)
    adjusted = multipletests(np.where(tested, p, 1.0), method="holm")[1]
    return np.where(tested, adjusted, np.nan)
