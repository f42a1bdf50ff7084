"""Phase-level tables: every experiment's metrics side by side, and paired tests between them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepfake_kedro.metrics import metric_range
from deepfake_kedro.stats import holm_adjust, paired_comparison

HEADLINE_METRICS = ("auc", "accuracy", "f1", "average_precision", "eer", "brier")
THRESHOLD_METRICS = ("threshold", "accuracy_at_threshold", "f1_at_threshold", "tpr_at_threshold",
                     "fpr_at_threshold", "tpr", "fpr")
"""Metrics at each fold's validation-chosen threshold, then TPR / FPR at 0.5, next to the headline ones."""
TESTED_METRICS = ("auc", "accuracy", "f1", "accuracy_at_threshold", "f1_at_threshold", "val_auc")
"""Compared pair by pair. At p = 0.5 accuracy and F1 also move with calibration (a model that ranks well but
scores everything below 0.5 reads accuracy 0.5); at each fold's validation-chosen threshold they do not.
``val_auc`` (each fold's inner-validation AUC) is what phase 2's preprocessing choice reads: no test fold
chooses anything."""
VALIDATION_METRIC_PREFIX = "val_"
"""Metrics measured on each fold's inner validation rows; Nadeau-Bengio's test size for them is ``n_val``."""
HELDOUT_FLAG_ABOVE = 0.05
HOLDOUT_METRIC = "heldout_source_auc"
SOURCE_METRIC_PREFIX = "pairwise_auc:"
"""Per-source rows of the paired tests: AUC of the real images against one fake source's, per fold."""
HOLDOUT_ROLES = {"baseline": "hold-out", "treatment": "reference"}
"""A hold-out row's roles as a reader sees them. paired_tests.csv keeps its one layout (baseline = the
hold-out, treatment = the reference, so treatment - baseline is Δ), which demo_check and attach_holdouts read."""


def format_ci(row: Mapping[str, Any], metric: str, with_std: bool = False) -> str:
    """``0.912 [0.870, 0.954]``: a metric's mean over folds and its 95% interval, from a comparison row.

    Args:
        row: A comparison row (``<metric>_mean``, ``<metric>_ci_low``, ``<metric>_ci_high``, ``<metric>_std``).
        metric: The metric's name, e.g. ``auc``.
        with_std: Adds the std after the mean: ``0.912 ± 0.020 [0.870, 0.954]``.

    Returns:
        The text, three decimals; ``(4 of 5 folds)`` after it when some folds had no value.
    """
    std = f" ± {row[f'{metric}_std']:.3f}" if with_std else ""
    text = f"{row[f'{metric}_mean']:.3f}{std} [{row[f'{metric}_ci_low']:.3f}, {row[f'{metric}_ci_high']:.3f}]"
    n, folds = row.get(f"{metric}_n"), row.get("n_folds")
    # A mean over fewer folds (an AUC undefined on a one-class fold) must not pass for a full one.
    if n is not None and folds is not None and pd.notna(n) and pd.notna(folds) and n < folds:
        text += f" ({int(n)} of {int(folds)} folds)"
    return text


def comparison_table(summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per experiment: every metric as mean, std, CI low, CI high.

    Args:
        summaries: Experiment name -> summary written by the evaluation node.

    Returns:
        Columns ``experiment``, ``fingerprint``, ``backbone``, ``image_size`` then
        ``<metric>_mean``, ``<metric>_std``, ``<metric>_ci_low``, ``<metric>_ci_high``, ``<metric>_n`` (the folds
        with a value, of ``n_folds``), pooled AUC bootstrap CI.
    """
    rows = []
    for name, summary in summaries.items():
        config = summary.get("config", {})
        row: dict[str, Any] = {
            "experiment": name, "fingerprint": summary["fingerprint"],
            "backbone": config.get("backbone"), "image_size": config.get("image_size"),
            "n_folds": len(summary.get("folds", [])) or None,
        }
        first = HEADLINE_METRICS + THRESHOLD_METRICS
        ordered = list(first) + [m for m in summary["metrics"] if m not in first]
        for metric in ordered:
            if metric in summary["metrics"]:
                stats = summary["metrics"][metric]
                for key in ("mean", "std", "ci_low", "ci_high", "n"):
                    row[f"{metric}_{key}"] = stats.get(key)
        if "threshold_rule" in summary:
            row["threshold_rule"] = summary["threshold_rule"]
        row.update({f"pooled_{k}": v for k, v in summary.get("pooled", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _fold_values(summary: Mapping[str, Any], metric: str) -> np.ndarray:
    folds = sorted(summary["folds"], key=lambda f: f["fold"])
    return np.array([f.get(metric, np.nan) for f in folds], dtype=float)


def pairwise_test_sizes(summary: Mapping[str, Any], source: str, sources: Mapping[str, str]) -> np.ndarray:
    """Per fold, the test images a pairwise AUC (real vs ``source``) sees: the real ones plus ``source``'s.

    They, not the whole test fold, are that AUC's Nadeau-Bengio ``n_test``; nan where a fold has no ``n:<source>``.
    """
    reals = [s for s, kind in sources.items() if kind == "real"]
    folds = sorted(summary["folds"], key=lambda f: f["fold"])
    return np.array([sum(f.get(f"n:{r}", 0) for r in reals) + f.get(f"n:{source}", np.nan) for f in folds],
                    dtype=float)


def holdout_tests(
    summaries: Mapping[str, Mapping[str, Any]], reference: str, sources: Mapping[str, str]
) -> pd.DataFrame:
    """Source hold-out: the reference's in-source AUC vs each hold-out's AUC on the source it never saw.

    Per held-out fake source ``s`` and fold: Δ = pairwise AUC (real vs ``s``) of ``reference`` (trained
    with ``s``) minus that of the hold-out experiment (trained without it), on the same test folds.
    The Nadeau-Bengio correction takes the images that AUC sees (real + ``s``) as the test size.

    Args:
        summaries: Experiment name -> summary; hold-outs are those with ``train_sources`` other than all.
        reference: The experiment trained on every source (experiments.md: p2a_t1_original).
        sources: ``data.sources``.

    Returns:
        One row per hold-out and held-out source, in the paired-tests layout (``metric`` =
        ``heldout_source_auc``, ``diff_mean`` = Δ) plus ``in_source_auc``, ``heldout_auc`` and ``flag``.
    """
    if reference not in summaries:
        raise KeyError(f"holdout_reference {reference!r} is not an experiment of this phase "
                       f"(known: {sorted(summaries)})")
    rows = []
    for name, summary in summaries.items():
        trained = summary["config"]["train_sources"]
        if trained == "all":
            continue
        for source in [s for s, kind in sources.items() if kind == "fake" and s not in trained]:
            metric = f"pairwise_auc:{source}"
            in_source, heldout = _fold_values(summaries[reference], metric), _fold_values(summary, metric)
            result = paired_comparison(heldout, in_source, _fold_values(summary, "n_train"),
                                       pairwise_test_sizes(summary, source, sources))
            rows.append({"question": f"source-specific features ({source} held out)", "baseline": name,
                         "treatment": reference, "metric": HOLDOUT_METRIC, **result,
                         "heldout_source": source, "in_source_auc": float(np.nanmean(in_source)),
                         "heldout_auc": float(np.nanmean(heldout)),
                         "flag": bool(result["diff_mean"] > HELDOUT_FLAG_ABOVE)})
    return pd.DataFrame(rows)


def paired_tests(
    summaries: Mapping[str, Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, str]],
    metrics: Sequence[str] = TESTED_METRICS,
    holdout_reference: str | None = None,
    sources: Mapping[str, str] | None = None,
    per_source: bool = False,
) -> pd.DataFrame:
    """Paired fold-wise tests for each (baseline, treatment) pair and metric, Holm-adjusted per metric.

    Args:
        summaries: Experiment name -> summary (with per-fold records).
        comparisons: ``{question, baseline, treatment}`` entries of the comparison map.
        metrics: Metrics to compare; one that neither experiment of a pair records is left out for that pair.
        holdout_reference: When given, adds ``holdout_tests`` rows (in-source vs held-out-source AUC).
        sources: ``data.sources`` (needed with ``holdout_reference`` or ``per_source``).
        per_source: Also test each pair on every fake source its two experiments both evaluate (metric
            ``pairwise_auc:<source>``: which sources a change helps); Nadeau-Bengio's test size is then the
            real and that source's test images (``pairwise_test_sizes``).

    Returns:
        One row per pair and metric: difference (treatment - baseline) with CI, each test's p,
        and ``p_holm`` (Holm over all pairs of the phase for that metric, on the Nadeau-Bengio p; so each
        source is its own family).

    Raises:
        KeyError: A comparison names an experiment that is not in the phase.
    """
    rows = []
    for pair in comparisons:
        for role in ("baseline", "treatment"):
            if pair[role] not in summaries:
                raise KeyError(
                    f"comparison {pair.get('question', '')!r}: {role} {pair[role]!r} is not an experiment "
                    f"of this phase (known: {sorted(summaries)})"
                )
        base, treat = summaries[pair["baseline"]], summaries[pair["treatment"]]
        if base["fingerprint"] == treat["fingerprint"]:
            raise ValueError(f"comparison {pair.get('question', '')!r}: {pair['baseline']} and {pair['treatment']} "
                             f"have identical configs; there is nothing to compare")
        n_train = _fold_values(base, "n_train")
        n_test, n_val = _fold_values(base, "n_test"), _fold_values(base, "n_val")
        tested = [(metric, n_val if metric.startswith(VALIDATION_METRIC_PREFIX) else n_test) for metric in metrics
                  # neither experiment may record it (e.g. summaries written before thresholds existed)
                  if any(metric in fold for summary in (base, treat) for fold in summary["folds"])]
        if per_source:
            tested += [(f"{SOURCE_METRIC_PREFIX}{source}", pairwise_test_sizes(base, source, sources or {}))
                       for source, kind in (sources or {}).items() if kind == "fake"
                       # both must evaluate the source (an eval_sources subset may leave it out)
                       and all(any(f"{SOURCE_METRIC_PREFIX}{source}" in fold for fold in summary["folds"])
                               for summary in (base, treat))]
        for metric, test_sizes in tested:
            result = paired_comparison(_fold_values(base, metric), _fold_values(treat, metric), n_train, test_sizes)
            bounds = metric_range(metric)
            if bounds is not None:  # a difference of two [0, 1] metrics lies in [-1, 1]: so does its interval
                span = bounds[1] - bounds[0]
                for key in ("diff_ci_low", "diff_ci_high", "paired_t_ci_low", "paired_t_ci_high"):
                    result[key] = float(np.clip(result[key], -span, span))
            rows.append({"question": pair.get("question", ""), "baseline": pair["baseline"],
                         "treatment": pair["treatment"], "metric": metric, **result})
    table = pd.DataFrame(rows)
    if holdout_reference:
        table = pd.concat([table, holdout_tests(summaries, holdout_reference, sources or {})], ignore_index=True)
    if table.empty:
        return table
    table["p_holm"] = np.nan
    for _metric, members in table.groupby("metric"):
        table.loc[members.index, "p_holm"] = holm_adjust(members["p_nadeau_bengio"].to_numpy())
    table["significant_holm"] = table["p_holm"] < 0.05
    return table


def attach_holdouts(comparison: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Adds each hold-out's Δ against the reference (and its CI and flag) to its comparison row."""
    if tests.empty or "heldout_source" not in tests:
        return comparison
    holdouts = tests[tests["metric"] == HOLDOUT_METRIC].rename(columns={
        "baseline": "experiment", "in_source_auc": "reference_in_source_auc", "diff_mean": "delta_vs_reference",
        "diff_ci_low": "delta_vs_reference_ci_low", "diff_ci_high": "delta_vs_reference_ci_high",
        "p_holm": "delta_vs_reference_p_holm", "flag": "delta_vs_reference_flag", "treatment": "holdout_reference",
    })
    columns = ["experiment", "heldout_source", "holdout_reference", "reference_in_source_auc", "heldout_auc",
               "delta_vs_reference", "delta_vs_reference_ci_low", "delta_vs_reference_ci_high",
               "delta_vs_reference_p_holm", "delta_vs_reference_flag"]
    # One hold-out may leave out several sources: one row per source would duplicate the experiment.
    joined = holdouts[columns].groupby("experiment", as_index=False).agg(
        lambda v: v.iloc[0] if len(v) == 1 else "; ".join(map(str, v)))
    return comparison.merge(joined, on="experiment", how="left")


def comparison_markdown(comparison: pd.DataFrame, title: str, metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """A readable Markdown twin of the comparison table: ``mean ± std [CI low, CI high]`` per metric."""
    shown = comparison[["experiment", "backbone", "image_size"]].copy()
    for metric in metrics:
        if f"{metric}_mean" in comparison:
            shown[metric] = [format_ci(r, metric, with_std=True) for _, r in comparison.iterrows()]
    note = ("Mean ± std over the outer folds, 95% t-interval in brackets (truncated to [0, 1]). "
            "Every column is in comparison.csv.")
    text = to_markdown(shown, title) + f"\n{note}\n"
    if "delta_vs_reference" in comparison:
        holdouts = comparison.dropna(subset=["delta_vs_reference"])
        shown = holdouts[["experiment", "heldout_source", "reference_in_source_auc", "heldout_auc",
                          "delta_vs_reference", "delta_vs_reference_ci_low", "delta_vs_reference_ci_high",
                          "delta_vs_reference_flag"]].rename(columns={"experiment": "hold-out"})
        text += "\n" + to_markdown(shown, "Source hold-out: Δ = in-source AUC of the reference - held-out-source AUC")
        text += (f"\nThe reference ({holdouts['holdout_reference'].iloc[0]}) was trained with the source; the hold-out "
                 f"never saw it. Flag: Δ > {HELDOUT_FLAG_ABOVE} (source-specific features).\n")
    return text


def holdout_rows(tests: pd.DataFrame) -> pd.DataFrame:
    """The paired tests' source hold-out rows, their ``baseline`` shown as ``hold-out``, ``treatment`` as ``reference``.

    ``diff_mean`` and its interval keep their sign: Δ = the reference's in-source AUC - the hold-out's AUC on
    the source it never saw.
    """
    if "metric" not in tests:  # a phase without tests saves a table without columns
        return pd.DataFrame(columns=[HOLDOUT_ROLES.get(c, c) for c in tests.columns])
    return tests[tests["metric"] == HOLDOUT_METRIC].rename(columns=HOLDOUT_ROLES)


def source_effect_rows(tests: pd.DataFrame) -> pd.DataFrame:
    """The paired tests' per-source rows (``paired_tests(per_source=True)``), with the fake ``source`` named."""
    if "metric" not in tests:  # a phase without tests saves a table without columns
        return pd.DataFrame(columns=[*tests.columns, "source"])
    rows = tests[tests["metric"].astype(str).str.startswith(SOURCE_METRIC_PREFIX)]
    return rows.assign(source=rows["metric"].str.removeprefix(SOURCE_METRIC_PREFIX))


def paired_tests_markdown(tests: pd.DataFrame, title: str) -> str:
    """A readable Markdown twin of the paired tests; the per-source rows and the source hold-outs in tables of their
    own.

    A hold-out row's baseline is the hold-out and its treatment the reference, so under the first table's
    headings it would read backwards.
    """
    columns = ["question", "baseline", "treatment", "metric", "diff_mean", "diff_ci_low", "diff_ci_high",
               "p_paired_t", "p_nadeau_bengio", "p_wilcoxon", "p_holm", "significant_holm"]
    held = tests["metric"] == HOLDOUT_METRIC
    per_source = source_effect_rows(tests)
    note = ("Differences are treatment - baseline over the same folds; diff_ci is their 95% interval with "
            "Nadeau-Bengio's corrected variance (it excludes 0 exactly when p_nadeau_bengio < 0.05). "
            "p_holm: Holm adjustment of the "
            "Nadeau-Bengio p over the phase's pairs, per metric. accuracy and f1 are at p = 0.5, so a "
            "calibration shift moves them; accuracy_at_threshold and f1_at_threshold use each fold's "
            "validation-chosen threshold. val_auc is each fold's inner-validation AUC (n_test = its validation "
            "images): the metric phase 2's preprocessing choice reads, so that no test fold chooses anything. "
            "With 5 folds the exact Wilcoxon test "
            "cannot go below p = 0.0625, so it can never be significant at 0.05.")
    text = to_markdown(tests.loc[~held].drop(index=per_source.index)[columns], title) + f"\n{note}\n"
    if len(per_source):
        shown = per_source[["question", "baseline", "treatment", "source", "baseline_mean", "treatment_mean",
                            "diff_mean", "diff_ci_low", "diff_ci_high", "p_nadeau_bengio", "p_holm",
                            "significant_holm"]]
        text += "\n" + to_markdown(shown, "Which sources each change helps: AUC of the real images against one "
                                          "fake source")
        text += ("\nPer fold, the AUC of the real test images against that source's (metric pairwise_auc:<source> "
                 "in paired_tests.csv); Nadeau-Bengio's test size is those images. p_holm: Holm over the phase's "
                 "pairs, per source.\n")
    if held.any():
        shown = holdout_rows(tests)[["question", "hold-out", "reference", "heldout_source", "in_source_auc",
                                     "heldout_auc", "diff_mean", "diff_ci_low", "diff_ci_high", "p_nadeau_bengio",
                                     "p_holm", "significant_holm", "flag"]]
        text += "\n" + to_markdown(shown, "Source hold-out: reference in-source AUC vs hold-out AUC on the held-out "
                                          "source")
        text += ("\ndiff_mean = Δ = in_source_auc of the reference (trained with the source) - heldout_auc of the "
                 "hold-out (which never saw it), over the same folds; paired_tests.csv stores the hold-out as "
                 "baseline and the reference as treatment. p_holm: Holm across the hold-outs. "
                 f"flag: Δ > {HELDOUT_FLAG_ABOVE} (source-specific features).\n")
    return text


def to_markdown(table: pd.DataFrame, title: str, digits: int = 4) -> str:
    """A Markdown twin of a table, numbers rounded for reading."""
    shown = table.copy()
    for column in shown.select_dtypes("number").columns:
        shown[column] = shown[column].map(lambda v: f"{v:.{digits}g}" if pd.notna(v) else "")
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    lines = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([f"# {title}", "", header, rule, *lines, ""])
