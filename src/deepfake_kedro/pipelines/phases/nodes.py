"""Phase analysis nodes: comparison tables and paired tests, the phase-2 preprocessing choice,
phase 3's cost table, phase 4's model ranking and scaling analysis."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.comparison import (
    attach_holdouts,
    comparison_markdown,
    comparison_table,
    paired_tests,
    paired_tests_markdown,
)
from deepfake_kedro.costs import experiment_costs, model_cost
from deepfake_kedro.figures import cost_vs_auc, metric_bars, scaling_curves, source_effects, source_heatmap
from deepfake_kedro.reporting import explained_images
from deepfake_kedro.selection import candidate_table, model_name, rank_models, select_preprocessing
from deepfake_kedro.serialization import json_safe
from deepfake_kedro.study import FINAL_QUESTION, Slot, parse_slot

logger = logging.getLogger(__name__)


def _display_names(experiment_metrics: dict[str, Any]) -> dict[str, Any]:
    """Keys as tables show them: a phase-4 slot (top1_20pct) under its experiment name (p4a_resnet18_20pct)."""
    return {summary.get("experiment", key) if "." not in key else key: summary
            for key, summary in experiment_metrics.items()}


def compare_experiments(
    phase: dict[str, Any], data: dict[str, Any], **experiment_metrics: dict[str, Any]
) -> tuple[pd.DataFrame, str, pd.DataFrame, str, Figure, Figure, Figure]:
    """Puts every experiment of a phase side by side and runs the comparison map's paired tests.

    Each pair is tested on the headline metrics and on every fake source (which sources a change helps).

    Args:
        phase: The phase's parameters (``comparisons``: baseline / treatment pairs; ``holdout_reference``).
        data: ``data.sources``.
        **experiment_metrics: Experiment name -> metrics summary.

    Returns:
        Comparison table, its Markdown, paired tests, their Markdown, a bar figure with CIs, a
        per-source AUC heatmap and the per-source effects of each pair.
    """
    experiment_metrics = _display_names(experiment_metrics)
    # Experiments of earlier phases (named <phase>.<experiment>) serve comparisons only.
    own = {k: v for k, v in experiment_metrics.items() if "." not in k}
    comparisons = list(phase.get("comparisons", []))
    tests = paired_tests(experiment_metrics, comparisons, holdout_reference=phase.get("holdout_reference"),
                         sources=data["sources"], per_source=True)
    comparison = attach_holdouts(comparison_table(own), tests)
    _log_results(comparison, tests)
    name = phase.get("title", "")
    tests_md = paired_tests_markdown(tests, f"{name}: paired tests") if not tests.empty else ""
    return (comparison, comparison_markdown(comparison, f"{name}: comparison"), tests, tests_md,
            metric_bars(comparison, title=name), source_heatmap(comparison, f"{name}: per-source AUC"),
            source_effects(tests, f"{name}: which sources each change helps"))


def _log_results(comparison: pd.DataFrame, tests: pd.DataFrame) -> None:
    """One log line per AUC comparison and per source hold-out."""
    for row in tests[tests["metric"] == "auc"].itertuples() if not tests.empty else []:
        logger.info("%s vs %s: ΔAUC %+.3f [%.3f, %.3f], p(NB) %.3g, p(Holm) %.3g", row.treatment, row.baseline,
                    row.diff_mean, row.diff_ci_low, row.diff_ci_high, row.p_nadeau_bengio, row.p_holm)
    holdouts = comparison.dropna(subset=["delta_vs_reference"]) if "delta_vs_reference" in comparison else None
    for row in holdouts.itertuples() if holdouts is not None else []:
        logger.info("hold-out %s: in-source AUC %.3f, held-out AUC %.3f, Δ %+.3f%s", row.experiment,
                    row.reference_in_source_auc, row.heldout_auc, row.delta_vs_reference,
                    "  FLAG: source-specific features" if row.delta_vs_reference_flag is True else "")


def compare_final_models(
    phase: dict[str, Any], data: dict[str, Any], **experiment_metrics: dict[str, Any]
) -> tuple[pd.DataFrame, str, pd.DataFrame, str, Figure, Figure, Figure]:
    """Phase 4's comparison: every slot under its model's name, each smaller fraction tested against 100%,
    and the top-ranked model's full run against each other model's (the recommendation's test).

    Args:
        phase: ``phase4`` parameters (``title``, ``scaling``: slot suffix -> fraction).
        data: ``data.sources``.
        **experiment_metrics: Slot (``top1_20pct`` ...) -> metrics summary.

    Returns:
        As ``compare_experiments``.
    """
    full_fraction = max(phase["scaling"].values())
    full = {suffix for suffix, fraction in phase["scaling"].items() if fraction == full_fraction}.pop()
    comparisons = []
    for name, summary in experiment_metrics.items():
        slot = parse_slot(name)
        if slot.suffix in phase["scaling"] and slot.suffix != full:
            reference = experiment_metrics[Slot(slot.rank, full).name]["experiment"]
            comparisons.append({"question": f"data scaling {slot.suffix} -> {full} ({model_name(summary['config'])})",
                                "baseline": summary["experiment"], "treatment": reference})
    comparisons += final_model_comparisons(experiment_metrics)
    return compare_experiments({**phase, "comparisons": comparisons}, data, **experiment_metrics)


def final_model_comparisons(experiment_metrics: dict[str, Any]) -> list[dict[str, str]]:
    """The top-ranked model's full run (treatment) against each other model's full run (baseline), same folds."""
    full_runs = {slot.rank: summary for name, summary in experiment_metrics.items() if (slot := parse_slot(name)).full}
    if 1 not in full_runs:
        return []
    top = full_runs[1]
    return [{"question": f"{FINAL_QUESTION} {model_name(top['config'])} vs {model_name(other['config'])}",
             "baseline": other["experiment"], "treatment": top["experiment"]}
            for rank, other in sorted(full_runs.items()) if rank != 1]


def choose_preprocessing(paired_tests: pd.DataFrame, selection: dict[str, Any]) -> dict[str, Any]:
    """Phase 2's recommended preprocessing for phases 3 and 4, with the decision of every step.

    Args:
        paired_tests: Phase 2's paired tests.
        selection: ``phase2.selection``: ``start``, ``steps``, ``alpha``, ``metric``, ``override``.

    Returns:
        The choice (``settings``, ``source``, ``rule``, ``decisions``), saved as JSON.
    """
    choice = select_preprocessing(
        paired_tests, selection["start"], selection.get("steps", []), selection.get("alpha", 0.05),
        selection.get("metric", "val_auc"), selection.get("override"),
    )
    for decision in choice["decisions"]:
        logger.info("selection %s -> %s: %s", decision["baseline"], decision["treatment"], decision["reason"])
    return json_safe(choice)


def compare_costs(**experiment_metrics: dict[str, Any]) -> tuple[pd.DataFrame, Figure]:
    """Parameter count and GFLOPs (torch's flop counter, at each experiment's size) against AUC.

    Args:
        **experiment_metrics: Experiment name -> metrics summary (phase-1 baselines and phase 3).

    Returns:
        The table and a figure of AUC against parameters and GFLOPs.
    """
    table = experiment_costs(experiment_metrics)
    return table, cost_vs_auc(table, "Phase 3: cost vs AUC (phase-1 baselines at their size included)")


def gather_metrics(**summaries: dict[str, Any]) -> dict[str, Any]:
    """A phase's experiment summaries in one dataset, for phase 4's ranking and the report.

    One dataset per phase, not one per experiment, is what later phases read: kedro viz then draws a
    phase's results leaving it as one arrow instead of one per experiment.

    Args:
        **summaries: ``<phase>.<experiment>`` -> metrics summary.

    Returns:
        The same mapping.
    """
    return dict(summaries)


def gather_explained(**explained: pd.DataFrame) -> pd.DataFrame:
    """A phase's Grad-CAM tables in one, ``experiment`` first (``reporting.explained_images``), for the report.

    Args:
        **explained: ``<phase>.<experiment>`` -> its explained images.

    Returns:
        One row per explained image.
    """
    return explained_images(explained)


def choose_final_models(
    ranking: dict[str, Any], preprocessing_choice: dict[str, Any], **phase_metrics: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Ranks every model of phases 1-3 by the documented criteria and picks those phase 4 retrains.

    Args:
        ranking: ``phase4.ranking``: ``weights`` per criterion, ``top_k``, ``override`` (model names).
        preprocessing_choice: Phase 2's choice: each model is ranked on its best experiment there when it has one.
        **phase_metrics: Phase -> its ``gather_metrics`` (``<phase>.<experiment>`` -> metrics summary), phases 1-3.

    Returns:
        The selection (criteria, every candidate's values, ranks and score, the chosen models with the
        config of their best experiment) and the candidates table.
    """
    experiment_metrics = {name: summary for bundle in phase_metrics.values() for name, summary in bundle.items()}
    costs = {name: model_cost(s["config"]["backbone"], s["config"]["image_size"], s["config"]["cnn_preset"])
             for name, s in experiment_metrics.items()}
    candidates = candidate_table(experiment_metrics, costs, preprocessing_choice["settings"])
    selection = rank_models(candidates, ranking["weights"], ranking.get("top_k", 3), ranking.get("override"))
    for chosen in selection["selected"]:
        chosen["config"] = experiment_metrics[chosen["experiment"]]["config"]
    return json_safe(selection), pd.DataFrame(selection["candidates"])


def analyse_scaling(selection: dict[str, Any], **experiment_metrics: dict[str, Any]) -> tuple[pd.DataFrame, Figure]:
    """AUC against the fraction of training data for every phase-4 model.

    Args:
        selection: The phase-4 model selection.
        **experiment_metrics: Phase-4 slot (``top1_20pct`` ...) -> metrics summary.

    Returns:
        One row per model and fraction, and the scaling curves.
    """
    rows = []
    for slot, summary in experiment_metrics.items():
        if parse_slot(slot).full:
            continue  # the full-dataset run is the 100% point (same config, trained once)
        auc = summary["metrics"]["auc"]
        rows.append({"experiment": summary["experiment"], "model": model_name(summary["config"]),
                     "subsample": summary["config"]["subsample"], "auc_mean": auc["mean"], "auc_std": auc["std"],
                     "auc_ci_low": auc["ci_low"], "auc_ci_high": auc["ci_high"],
                     "n_train_mean": sum(f["n_train"] for f in summary["folds"]) / len(summary["folds"]),
                     "n_test_mean": sum(f["n_test"] for f in summary["folds"]) / len(summary["folds"])})
    table = pd.DataFrame(rows).sort_values(["model", "subsample"]).reset_index(drop=True)
    models = ", ".join(s["model"] for s in selection["selected"])
    return table, scaling_curves(table, f"Phase 4: data scaling ({models})")
