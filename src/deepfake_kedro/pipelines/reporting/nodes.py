"""Reporting nodes: gather every phase's results and turn them into tables, figures and slides."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.demo_check import check_planted_effects
from deepfake_kedro.figures import attention_bars
from deepfake_kedro.report_deck import MAX_OVERLAYS, DeckInputs, build_deck, spread_overlays
from deepfake_kedro.report_sections import ReportSection
from deepfake_kedro.reporting import attention_summary, detailed_results, model_benchmark, model_comparison
from deepfake_kedro.study import PHASES

logger = logging.getLogger(__name__)


def collect_results(**inputs: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One comparison table over all phases and the detailed per-fold results of every experiment.

    Args:
        **inputs: ``<phase>_comparison`` tables and ``<phase>_metrics`` (the phase's gathered summaries,
            ``<phase>.<experiment>`` -> summary).

    Returns:
        ``model_comparison`` and ``detailed_results``.
    """
    comparisons = {key.removesuffix("_comparison"): v for key, v in inputs.items() if key.endswith("_comparison")}
    summaries = {name: summary for key, bundle in inputs.items() if key.endswith("_metrics")
                 for name, summary in bundle.items()}
    table = model_comparison(comparisons)
    logger.info("model_comparison: %d experiments over %d phases", len(table), len(comparisons))
    return table, detailed_results(summaries)


def benchmark_backbones(benchmark: dict[str, Any]) -> pd.DataFrame:
    """Parameters, GFLOPs and inference images/s of every backbone on this machine's device.

    Args:
        benchmark: ``image_size``, ``batch_size``, ``repeats``, ``cnn_preset`` (SimpleCNN's, as the study trains it).

    Returns:
        One row per backbone.
    """
    table = model_benchmark(benchmark["image_size"], benchmark.get("batch_size", 64), benchmark.get("repeats", 3),
                            benchmark.get("cnn_preset", "medium"))
    for row in table.itertuples():
        logger.info("%s: %.2fM params, %.3f GFLOPs, %.0f img/s (%s, %s)", row.backbone, row.params_m, row.gflops,
                    row.images_per_s, row.device, row.precision)
    return table


def summarize_attention(**inputs: Any) -> tuple[pd.DataFrame, Figure]:
    """Share of Grad-CAM mass on the detected face, per experiment, prediction type and source.

    Args:
        **inputs: Phase -> its gathered explained images (``experiment`` first), and optionally
            ``<phase>_metrics`` (its gathered summaries: experiment names and fingerprints for the figure).

    Returns:
        The table and a figure of it.
    """
    summaries = {name: summary for key, bundle in inputs.items() if key.endswith("_metrics")
                 for name, summary in bundle.items()}
    explained = {key: table for key, table in inputs.items() if not key.endswith("_metrics")}
    tables = [table for table in explained.values() if len(table)]
    if not tables:
        logger.warning("No experiment explained any image, so the attention summary is empty")
    summary = attention_summary(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(), summaries)
    return summary, attention_bars(summary)


def planted_effects(
    planted: list[dict[str, Any]], preprocessing_choice: dict[str, Any], scaling: pd.DataFrame,
    **phase_tables: pd.DataFrame,
) -> pd.DataFrame:
    """The demo's simulation check: each effect planted in the synthetic data against what the study found.

    Args:
        planted: ``demo.planted_effects`` (empty outside the demo: the table is then empty).
        preprocessing_choice: Phase 2's choice.
        scaling: Phase 4's scaling table.
        **phase_tables: ``<phase>_comparison`` and ``<phase>_tests`` for the four phases.

    Returns:
        One row per planted effect (``demo_check.check_planted_effects``).
    """
    table = check_planted_effects(
        planted, {p: phase_tables[f"{p}_comparison"] for p in PHASES}, {p: phase_tables[f"{p}_tests"] for p in PHASES},
        preprocessing_choice, scaling,
    )
    for row in table.itertuples():
        logger.info("planted effect %s: expected %s, found %s -> %s", row.effect, row.expected, row.found,
                    "recovered" if row.recovered else "NOT recovered")
    return table


def _demo_check_section(demo_check: pd.DataFrame | None) -> list[ReportSection]:
    """The demo-check slide, when the demo planted effects (an empty table adds none)."""
    if demo_check is None or demo_check.empty:
        return []
    shown = demo_check[["effect", "expected", "found", "estimate", "p_holm", "recovered"]].copy()
    shown["recovered"] = shown["recovered"].map(lambda value: "yes" if bool(value) else "NO")
    recovered = int(demo_check["recovered"].astype(bool).sum())
    caption = (f"The demo data is a simulation with effects planted by construction (docs/demo.md); the study "
               f"recovered {recovered} of {len(demo_check)}. Numbers are the study's own (phase tables, Holm p).")
    return [ReportSection("demo_check", "Demo: planted effects recovered?", caption, table=shown)]


def build_report(
    data: dict[str, Any], defaults: dict[str, Any], synthetic: bool, fold_table: pd.DataFrame,
    shortcut_audit: dict[str, Any], near_duplicates: dict[str, Any], preprocessing_choice: dict[str, Any],
    model_selection: dict[str, Any], model_costs: pd.DataFrame, scaling: pd.DataFrame, attention: pd.DataFrame,
    benchmark: pd.DataFrame, gradcam_overlays: dict[str, Callable[[], Any]], reporting_dir: str = "data/08_reporting",
    sections: list[ReportSection] | None = None, demo_check: pd.DataFrame | None = None,
    **phase_tables: pd.DataFrame,
) -> list[Figure]:
    """The slide deck (``report_deck.build_deck``) from every phase's results.

    Args:
        data: ``data.root`` and ``data.sources``.
        defaults: Shared defaults (``cv_folds``, ``seed``, ``val_ratio``).
        synthetic: ``reporting.synthetic``: the data is the synthetic demo set.
        fold_table: The study's fold table.
        shortcut_audit: The metadata-only shortcut audit.
        near_duplicates: The near-duplicate grouping summary.
        preprocessing_choice: Phase 2's choice.
        model_selection: Phase 4's ranking.
        model_costs: Phase 3's cost table.
        scaling: Phase 4's scaling table.
        attention: Grad-CAM attention summary.
        benchmark: The backbone benchmark.
        gradcam_overlays: Overlays of the top phase-4 model's full run (``<pred_type>/<source>/<image>`` -> loader);
            at most ``MAX_OVERLAYS`` are loaded, spread over prediction types and sources.
        reporting_dir: ``reporting.folder``: where the catalog writes the reports (named on the slides).
        sections: Report sections written by pipelines outside the default run (robustness, external, ...).
        demo_check: The demo's planted-effects table (a slide when not empty).
        **phase_tables: ``<phase>_comparison`` and ``<phase>_tests`` for the four phases.

    Returns:
        One figure per slide (the PDF dataset writes them).
    """
    # Spread over TP / TN / FP / FN and sources: the first keys in order were all FN, FP and TN.
    overlays = [gradcam_overlays[key]() for key in spread_overlays(list(gradcam_overlays), MAX_OVERLAYS)]
    return build_deck(DeckInputs(
        data_root=str(data["root"]), sources=data["sources"], cv_folds=defaults["cv_folds"], seed=defaults["seed"],
        val_ratio=defaults["val_ratio"], synthetic=synthetic, fold_table=fold_table, shortcut_audit=shortcut_audit,
        near_duplicates=near_duplicates, preprocessing_choice=preprocessing_choice, model_selection=model_selection,
        model_costs=model_costs, scaling=scaling, attention=attention, benchmark=benchmark,
        comparisons={p: phase_tables[f"{p}_comparison"] for p in PHASES},
        tests={p: phase_tables[f"{p}_tests"] for p in PHASES}, overlays=overlays,
        sections=[*_demo_check_section(demo_check), *(sections or [])], reporting_dir=reporting_dir,
    ))
