"""The generalisation analysis: the transfer matrix, the family gap and the hold-outs beside them."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.comparison import to_markdown
from deepfake_kedro.config import validate_families
from deepfake_kedro.datasets import FinishedExperiments
from deepfake_kedro.generalisation import (
    cell_test_sizes,
    design,
    fold_aucs,
    holdouts_beside,
    matrix_table,
    summary_sentence,
    transfer_heatmap,
    transfer_matrix,
    transfer_tests,
)
from deepfake_kedro.report_sections import ReportSection

logger = logging.getLogger(__name__)

SECTION = "generalisation"


def _n_train(summaries: dict[str, Any]) -> np.ndarray:
    """Per fold, ``n_train`` averaged over the experiments (for Nadeau-Bengio)."""
    per_experiment = [[f["n_train"] for f in sorted(s["folds"], key=lambda f: f["fold"])] for s in summaries.values()]
    return np.asarray(per_experiment, dtype=float).mean(axis=0)


def analyse_transfer(
    generalisation: dict[str, Any], data: dict[str, Any], finished_experiments: FinishedExperiments,
    **experiment_metrics: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, str, Figure, ReportSection]:
    """The S × S AUC matrix with CIs, its paired tests, and the leave-one-out hold-outs beside it.

    Args:
        generalisation: ``title`` and ``holdouts_from`` (the phase whose comparison holds the hold-outs;
            read only when that phase has run, null to leave them out).
        data: ``data.sources`` and ``data.families``.
        finished_experiments: Finished results of other pipelines (the hold-outs' phase comparison).
        **experiment_metrics: Experiment name -> metrics summary, one experiment per fake source.

    Returns:
        The matrix (one row per cell), the tests, their Markdown, the heatmap and the report section.
    """
    families = validate_families(data)
    trained_on = design({name: s["config"] for name, s in experiment_metrics.items()}, data["sources"])
    fakes = list(trained_on)
    cube = fold_aucs(experiment_metrics, trained_on)
    matrix = transfer_matrix(cube, fakes, families)
    tests = transfer_tests(cube, fakes, families, _n_train(experiment_metrics),
                           cell_test_sizes(experiment_metrics, trained_on, data["sources"]))
    phase = generalisation.get("holdouts_from")
    comparison = finished_experiments.comparison(
        phase, reader=f"generalisation's hold-out row (generalisation.holdouts_from: {phase})",
        alternative="set generalisation.holdouts_from: null to leave the hold-outs out",
        thresholds=False) if phase else None  # the hold-out row shows AUCs alone
    holdouts = holdouts_beside(comparison, fakes)
    summary = summary_sentence(tests) if not tests.empty else "no two cell groups to compare"
    for line in summary.splitlines():
        logger.info("generalisation: %s", line)
    if phase and holdouts.empty:
        logger.info("generalisation: no hold-outs beside the matrix (run %s for its leave-one-out rows)", phase)

    title = generalisation.get("title", "Generalisation")
    table = matrix_table(matrix, holdouts)
    markdown = _markdown(table, tests, holdouts, title, phase)
    caption = ("Rows: trained on real + one fake source; columns: real vs each fake source on the same outer folds. "
               "AUC mean over folds [95% t-interval]. Per fold, group means are paired; Nadeau-Bengio, Holm.\n"
               + summary)
    # One figure for the catalog and the slide: the section renders it now, the catalog saves it at its own dpi.
    heatmap = transfer_heatmap(matrix, title)
    shown = {f"{SECTION}.{name}": summary["fingerprint"] for name, summary in experiment_metrics.items()}
    if len(holdouts):  # the hold-out row rests on the phase's experiments (its hold-outs and their reference)
        shown.update({f"{phase}.{name}": fingerprint
                      for name, fingerprint in zip(comparison["experiment"], comparison["fingerprint"], strict=True)})
    section = ReportSection.with_figure(SECTION, title, caption, heatmap, table, shown)
    return matrix, tests, markdown, heatmap, section


def _markdown(table: pd.DataFrame, tests: pd.DataFrame, holdouts: pd.DataFrame, title: str, phase: str | None) -> str:
    text = to_markdown(table, f"{title}: AUC, trained on one source (rows), tested on each (columns)")
    text += "\nMean over the outer folds, 95% t-interval in brackets. Every cell and fold is in transfer_matrix.csv.\n"
    if len(holdouts):
        text += (f"The hold-out row is {phase}'s leave-one-out: trained on every fake source but the column's, "
                 f"Δ = the reference's in-source AUC minus that held-out AUC.\n")
    if not tests.empty:
        columns = ["question", "baseline", "treatment", "baseline_mean", "baseline_ci_low", "baseline_ci_high",
                   "treatment_mean", "treatment_ci_low", "treatment_ci_high", "diff_mean", "diff_ci_low",
                   "diff_ci_high", "p_nadeau_bengio", "p_holm", "significant_holm"]
        text += "\n" + to_markdown(tests[columns], "Cell groups compared over folds (treatment - baseline)")
        text += "\nPer fold, a group's AUC is the mean of its cells; p_holm: Holm over these comparisons.\n"
    return text
