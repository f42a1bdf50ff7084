"""The phase analysis node: comparison table, paired tests, their Markdown twins and a figure."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.comparison import comparison_markdown, comparison_table, paired_tests, paired_tests_markdown
from deepfake_kedro.figures import metric_bars

logger = logging.getLogger(__name__)


def compare_experiments(
    phase: dict[str, Any], **experiment_metrics: dict[str, Any]
) -> tuple[pd.DataFrame, str, pd.DataFrame, str, Figure]:
    """Puts every experiment of a phase side by side and runs the comparison map's paired tests.

    Args:
        phase: The phase's parameters (``comparisons``: baseline / treatment pairs).
        **experiment_metrics: Experiment name -> metrics summary.

    Returns:
        Comparison table, its Markdown, paired tests, their Markdown and a bar figure with CIs.
    """
    # Experiments of earlier phases (named <phase>.<experiment>) serve comparisons only.
    comparison = comparison_table({k: v for k, v in experiment_metrics.items() if "." not in k})
    tests = paired_tests(experiment_metrics, phase.get("comparisons", []))
    for row in tests[tests["metric"] == "auc"].itertuples() if not tests.empty else []:
        logger.info("%s vs %s: ΔAUC %+.3f [%.3f, %.3f], p(NB) %.3g, p(Holm) %.3g", row.treatment, row.baseline,
                    row.diff_mean, row.diff_ci_low, row.diff_ci_high, row.p_nadeau_bengio, row.p_holm)
    name = phase.get("title", "")
    tests_md = paired_tests_markdown(tests, f"{name}: paired tests") if not tests.empty else ""
    return (comparison, comparison_markdown(comparison, f"{name}: comparison"),
            tests, tests_md, metric_bars(comparison, title=name))
