"""Phase-level tables: every experiment's metrics side by side, and paired tests between them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepfake_kedro.stats import holm_adjust, paired_comparison

HEADLINE_METRICS = ("auc", "accuracy", "f1", "average_precision", "eer")
TESTED_METRICS = ("auc", "accuracy", "f1")
HELDOUT_FLAG_ABOVE = 0.05


def comparison_table(summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per experiment: every metric as mean, std, CI low, CI high.

    Args:
        summaries: Experiment name -> summary written by the evaluation node.

    Returns:
        Columns ``experiment``, ``fingerprint``, ``backbone``, ``image_size`` then
        ``<metric>_mean``, ``<metric>_std``, ``<metric>_ci_low``, ``<metric>_ci_high``, pooled AUC bootstrap CI.
    """
    rows = []
    for name, summary in summaries.items():
        config = summary.get("config", {})
        row: dict[str, Any] = {
            "experiment": name, "fingerprint": summary["fingerprint"],
            "backbone": config.get("backbone"), "image_size": config.get("image_size"),
        }
        ordered = list(HEADLINE_METRICS) + [m for m in summary["metrics"] if m not in HEADLINE_METRICS]
        for metric in ordered:
            if metric in summary["metrics"]:
                stats = summary["metrics"][metric]
                for key in ("mean", "std", "ci_low", "ci_high"):
                    row[f"{metric}_{key}"] = stats[key]
        row.update({f"pooled_{k}": v for k, v in summary.get("pooled", {}).items()})
        if "heldout_delta" in summary["metrics"]:
            # Source hold-out: in-source minus held-out-source AUC; above 0.05 = source-specific features.
            row["heldout_flag"] = bool(summary["metrics"]["heldout_delta"]["mean"] > HELDOUT_FLAG_ABOVE)
        rows.append(row)
    return pd.DataFrame(rows)


def _fold_values(summary: Mapping[str, Any], metric: str) -> np.ndarray:
    folds = sorted(summary["folds"], key=lambda f: f["fold"])
    return np.array([f.get(metric, np.nan) for f in folds], dtype=float)


def paired_tests(
    summaries: Mapping[str, Mapping[str, Any]],
    comparisons: Sequence[Mapping[str, str]],
    metrics: Sequence[str] = TESTED_METRICS,
) -> pd.DataFrame:
    """Paired fold-wise tests for each (baseline, treatment) pair and metric, Holm-adjusted per metric.

    Args:
        summaries: Experiment name -> summary (with per-fold records).
        comparisons: ``{question, baseline, treatment}`` entries of the comparison map.
        metrics: Metrics to compare.

    Returns:
        One row per pair and metric: difference (treatment - baseline) with CI, each test's p,
        and ``p_holm`` (Holm over all pairs of the phase for that metric, on the Nadeau-Bengio p).

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
        n_test = _fold_values(base, "n_test")
        for metric in metrics:
            result = paired_comparison(_fold_values(base, metric), _fold_values(treat, metric), n_train, n_test)
            rows.append({"question": pair.get("question", ""), "baseline": pair["baseline"],
                         "treatment": pair["treatment"], "metric": metric, **result})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = np.nan
    for metric, members in table.groupby("metric"):
        table.loc[members.index, "p_holm"] = holm_adjust(members["p_nadeau_bengio"].to_numpy())
    table["significant_holm"] = table["p_holm"] < 0.05
    return table


def comparison_markdown(comparison: pd.DataFrame, title: str, metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """A readable Markdown twin of the comparison table: ``mean ± std [CI low, CI high]`` per metric."""
    shown = comparison[["experiment", "backbone", "image_size"]].copy()
    for metric in metrics:
        if f"{metric}_mean" in comparison:
            shown[metric] = [
                f"{r[f'{metric}_mean']:.3f} ± {r[f'{metric}_std']:.3f} [{r[f'{metric}_ci_low']:.3f}, {r[f'{metric}_ci_high']:.3f}]"
                for _, r in comparison.iterrows()
            ]
    note = "Mean ± std over the outer folds, 95% t-interval in brackets. Every column is in comparison.csv."
    return to_markdown(shown, title) + f"\n{note}\n"


def paired_tests_markdown(tests: pd.DataFrame, title: str) -> str:
    """A readable Markdown twin of the paired tests."""
    columns = ["question", "baseline", "treatment", "metric", "diff_mean", "diff_ci_low", "diff_ci_high",
               "p_paired_t", "p_nadeau_bengio", "p_wilcoxon", "p_holm", "significant_holm"]
    note = ("Differences are treatment - baseline over the same folds. p_holm: Holm adjustment of the "
            "Nadeau-Bengio p over the phase's pairs, per metric. With 5 folds the exact Wilcoxon test "
            "cannot go below p = 0.0625, so it can never be significant at 0.05.")
    return to_markdown(tests[columns], title) + f"\n{note}\n"


def to_markdown(table: pd.DataFrame, title: str, digits: int = 4) -> str:
    """A Markdown twin of a table, numbers rounded for reading."""
    shown = table.copy()
    for column in shown.select_dtypes("number").columns:
        shown[column] = shown[column].map(lambda v: f"{v:.{digits}g}" if pd.notna(v) else "")
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    lines = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([f"# {title}", "", header, rule, *lines, ""])
