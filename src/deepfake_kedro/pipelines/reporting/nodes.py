"""Reporting nodes: gather every phase's results and turn them into tables, figures and slides."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.figures import attention_bars, cost_vs_auc, metric_bars, scaling_curves, source_heatmap
from deepfake_kedro.reporting import (
    auc_text,
    detailed_results,
    figure_pixels,
    headline_table,
    image_slide,
    model_benchmark,
    model_comparison,
    significant_findings,
    table_slide,
    text_slide,
)
from deepfake_kedro.study import PHASES

logger = logging.getLogger(__name__)


def collect_results(**inputs: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One comparison table over all phases and the detailed per-fold results of every experiment.

    Args:
        **inputs: ``<phase>_comparison`` tables and ``<phase>.<experiment>`` metrics summaries.

    Returns:
        ``model_comparison`` and ``detailed_results``.
    """
    comparisons = {key.removesuffix("_comparison"): v for key, v in inputs.items() if key.endswith("_comparison")}
    summaries = {key: v for key, v in inputs.items() if not key.endswith("_comparison")}
    table = model_comparison(comparisons)
    logger.info("model_comparison: %d experiments over %d phases", len(table), len(comparisons))
    return table, detailed_results(summaries)


def benchmark_backbones(benchmark: dict[str, Any]) -> pd.DataFrame:
    """Parameters, GFLOPs and inference images/s of every backbone on this machine's device.

    Args:
        benchmark: ``image_size``, ``batch_size``, ``repeats``.

    Returns:
        One row per backbone.
    """
    table = model_benchmark(benchmark["image_size"], benchmark.get("batch_size", 64), benchmark.get("repeats", 3))
    for row in table.itertuples():
        logger.info("%s: %.2fM params, %.3f GFLOPs, %.0f img/s (%s, %s)", row.backbone, row.params_m, row.gflops,
                    row.images_per_s, row.device, row.precision)
    return table


def summarize_attention(**explained: pd.DataFrame) -> tuple[pd.DataFrame, Figure]:
    """Share of Grad-CAM mass on the central face region, per experiment and prediction type.

    Args:
        **explained: ``<phase>.<experiment>`` -> the experiment's explained images.

    Returns:
        The table and a figure of it.
    """
    rows = [table.assign(experiment=key) for key, table in explained.items() if len(table)]
    combined = pd.concat(rows, ignore_index=True)
    summary = combined.groupby(["experiment", "pred_type"])["cam_mass_centre"].mean().unstack("pred_type")
    overall = combined.groupby("experiment")["cam_mass_centre"].agg(["mean", "count"])
    summary = summary.join(overall.rename(columns={"mean": "all", "count": "n_images"})).reset_index()
    return summary, attention_bars(summary)


def _comparison_slides(comparison: pd.DataFrame, tests: pd.DataFrame, title: str) -> list[Figure]:
    best = comparison.sort_values("auc_mean", ascending=False).iloc[0]
    note = (f"Best {title} AUC: {best['experiment']} {auc_text(best)}. Mean over 5 outer folds, 95% t-interval; "
            f"every metric with std and CI in model_comparison.csv.")
    slides = [table_slide(f"{title}: results", headline_table(comparison), note)]
    findings = significant_findings(tests) if len(tests) else []
    slides.append(image_slide(f"{title}: AUC / accuracy / F1 and per-source AUC",
                              _side_by_side(metric_bars(comparison, title=title),
                                            source_heatmap(comparison, "per-source AUC")),
                              "Bars: mean with 95% CI over folds. Heatmap: real vs each fake source."))
    if findings:
        slides.append(text_slide(f"{title}: paired tests (Nadeau-Bengio, Holm across the phase)", findings[:14]))
    return slides


def _side_by_side(left: Figure, right: Figure):
    import numpy as np

    a, b = figure_pixels(left), figure_pixels(right)
    height = max(a.shape[0], b.shape[0])
    pad = lambda x: np.pad(x, ((0, height - x.shape[0]), (0, 0), (0, 0)), constant_values=255)  # noqa: E731
    return np.concatenate([pad(a), pad(b)], axis=1)


def build_report(
    data: dict[str, Any], defaults: dict[str, Any], fold_table: pd.DataFrame, shortcut_audit: dict[str, Any],
    near_duplicates: dict[str, Any], preprocessing_choice: dict[str, Any], model_selection: dict[str, Any],
    model_costs: pd.DataFrame, scaling: pd.DataFrame, attention: pd.DataFrame, benchmark: pd.DataFrame,
    gradcam_overlays: dict[str, Callable[[], Any]], **phase_tables: pd.DataFrame,
) -> list[Figure]:
    """The slide deck: setup, splits, metrics, results and conclusions per phase, shortcuts, explainability.

    Args:
        data: ``data.root`` and ``data.sources``.
        defaults: Shared defaults (seed, folds, ratios).
        fold_table: The study's fold table.
        shortcut_audit: The metadata-only shortcut audit.
        near_duplicates: The near-duplicate grouping summary.
        preprocessing_choice: Phase 2's choice.
        model_selection: Phase 4's ranking.
        model_costs: Phase 3's cost table.
        scaling: Phase 4's scaling table.
        attention: Grad-CAM attention summary.
        benchmark: The backbone benchmark.
        gradcam_overlays: Overlays of the top phase-4 model's full run (partition -> loader).
        **phase_tables: ``<phase>_comparison`` and ``<phase>_tests`` for the four phases.

    Returns:
        One figure per slide (the PDF dataset writes them).
    """
    comparisons = {p: phase_tables[f"{p}_comparison"] for p in PHASES}
    tests = {p: phase_tables[f"{p}_tests"] for p in PHASES}
    sources = data["sources"]
    counts = fold_table.groupby("source").agg(images=("path", "size"), groups=("group", "nunique"))
    slides = [text_slide("deepfake-kedro: study report", [
        f"Data: {data['root']} - {len(fold_table)} usable images, {fold_table['group'].nunique()} identity groups.",
        "Sources: " + ", ".join(f"{s} ({kind}, {counts.loc[s, 'images']} images)" for s, kind in sources.items()
                                if s in counts.index),
        f"Protocol: {defaults['cv_folds']}-fold cross-validation grouped by identity (StratifiedGroupKFold, seed "
        f"{defaults['seed']}), inner validation {defaults['val_ratio']:.0%} of the training groups for early stopping; "
        "test folds are never used for any choice.",
        "Phases: 1 architecture baseline, 2 preprocessing (shortcuts, resolution, face crop, augmentation), "
        "3 architectures on phase 2's preprocessing, 4 final models with data scaling.",
        "Every number in this deck is read from data/08_reporting (model_comparison.csv, paired_tests.csv, ...).",
    ])]
    per_fold = fold_table.pivot_table(index="fold", columns="source", values="path", aggfunc="size", fill_value=0)
    per_fold["groups"] = fold_table.groupby("fold")["group"].nunique()
    slides.append(table_slide("Splits: test images per fold and source", per_fold.reset_index(),
                              "Groups (identity + near-duplicates) never cross folds; checked before every training.",
                              digits=0))
    slides.append(text_slide("Metrics and statistics", [
        "Per test fold: ROC AUC (headline), accuracy and F1 at p = 0.5, average precision, equal error rate; "
        "per source: detection / false-alarm rate and the AUC of real vs each fake source.",
        "Across folds: mean, std and a 95% t-interval; pooled out-of-fold AUC with a grouped bootstrap interval.",
        "Comparisons: fold-wise paired t-test, Nadeau-Bengio corrected resampled t-test, Wilcoxon (cannot reach "
        "0.05 with 5 folds), Holm adjustment across each phase's pairs per metric.",
        "Source hold-out: Δ = in-source AUC (reference trained with the source) - held-out-source AUC; flag > 0.05.",
    ]))
    audit = shortcut_audit
    slides.append(text_slide("Data audit: shortcuts in the files themselves", [
        f"Metadata-only classifier (size, aspect, JPEG quality, file size): AUC {audit['auc']:.3f} "
        f"[{audit['auc_ci_low']:.3f}, {audit['auc_ci_high']:.3f}] - "
        + ("WARNING: the label leaks through the file format; see the hold-out and normalisation results."
           if audit["warning"] else "no format shortcut above the warning level."),
        f"Near-duplicates (perceptual hash): {near_duplicates['basename_groups_merged']} identity groups held "
        f"near-copies of each other and were merged, leaving {near_duplicates['merged_groups']} groups "
        f"(largest {near_duplicates['largest_merged_group']} images).",
    ]))
    titles = {"phase1": "Phase 1", "phase2": "Phase 2", "phase3": "Phase 3", "phase4": "Phase 4"}
    for phase in ("phase1", "phase2"):
        slides += _comparison_slides(comparisons[phase], tests[phase], titles[phase])
    phase2 = comparisons["phase2"]
    holdouts = phase2.dropna(subset=["delta_vs_reference"]) if "delta_vs_reference" in phase2 else None
    if holdouts is not None and len(holdouts):
        slides.append(table_slide("Phase 2: source hold-out (source-specific features)", holdouts[[
            "experiment", "heldout_source", "reference_in_source_auc", "heldout_auc", "delta_vs_reference",
            "delta_vs_reference_ci_low", "delta_vs_reference_ci_high", "delta_vs_reference_flag"]],
            "Δ > 0.05 flags a model that relies on features of the sources it was trained on."))
    decisions = [f"{d['baseline']} -> {d['treatment']}: " + (
        f"Δ {d.get('auc_diff', float('nan')):+.3f}, Holm p {d.get('p_holm', float('nan')):.3g} - {d['reason']}"
        if d["applies"] else "not applicable (" + d["reason"] + ")") for d in preprocessing_choice["decisions"]]
    slides.append(text_slide("Phase 2 conclusion: preprocessing for phases 3-4", [
        f"Chosen ({preprocessing_choice['source']}): " + ", ".join(f"{k} = {v if not isinstance(v, dict) else 'on'}"
                                                                  for k, v in preprocessing_choice["settings"].items()),
        "Rule: " + preprocessing_choice["rule"], *decisions]))
    slides += _comparison_slides(comparisons["phase3"], tests["phase3"], titles["phase3"])
    slides.append(image_slide("Phase 3: cost vs AUC", figure_pixels(cost_vs_auc(model_costs, "cost vs AUC")),
                              "GFLOPs from torch's flop counter at each experiment's image size."))
    candidates = pd.DataFrame(model_selection["candidates"])
    shown = candidates[["rank", "model", "experiment", "auc_mean", "worst_source_auc", "worst_source", "gflops",
                        "score"]]
    criteria = ", ".join(f"{c['name']} ({c['direction']} is better, weight {c['weight']:g})"
                         for c in model_selection["criteria"])
    slides.append(table_slide("Phase 4: model ranking", shown,
                              f"Criteria: {criteria}. Selected ({model_selection['source']}): "
                              + ", ".join(s["model"] for s in model_selection["selected"])))
    slides += _comparison_slides(comparisons["phase4"], tests["phase4"], titles["phase4"])
    slides.append(image_slide("Phase 4: data scaling", figure_pixels(scaling_curves(scaling, "AUC vs training data")),
                              "Nested subsets of whole groups, same folds."))
    slides.append(image_slide("Explainability: where the models look",
                              figure_pixels(attention_bars(attention)),
                              "Grad-CAM share on the central half of the crop; 0.25 = no preference. "
                              "Overlays per experiment under data/08_reporting/gradcam/."))
    overlay_images = [gradcam_overlays[k]() for k in sorted(gradcam_overlays)[:8]]
    if overlay_images:
        slides.append(image_slide(f"Explainability: {model_selection['selected'][0]['model']} (phase 4, full run)",
                                  _overlay_strip(overlay_images),
                                  "Each image explained by the fold model that held it out."))
    slides.append(table_slide("Backbone benchmark", benchmark[["backbone", "params_m", "gflops", "image_size",
                                                               "batch_size", "images_per_s", "device", "precision"]],
                              "Inference at the batch size shown on this run's device."))
    slides.append(text_slide("Conclusions and recommendations", _conclusions(comparisons, tests, preprocessing_choice,
                                                                             model_selection, audit, holdouts, data)))
    return slides


def _overlay_strip(images: list[Any]):
    import numpy as np

    arrays = [np.asarray(image.convert("RGB")) for image in images]
    height = max(a.shape[0] for a in arrays)
    arrays = [np.pad(a, ((0, height - a.shape[0]), (0, 4), (0, 0)), constant_values=255) for a in arrays]
    rows = [np.concatenate(arrays[i:i + 4], axis=1) for i in range(0, len(arrays), 4)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def _conclusions(comparisons, tests, choice, selection, audit, holdouts, data) -> list[str]:
    lines = []
    for phase in ("phase1", "phase3"):
        best = comparisons[phase].sort_values("auc_mean", ascending=False).iloc[0]
        lines.append(f"{phase}: best {best['experiment']} with AUC {auc_text(best)}.")
    significant = tests["phase2"][(tests["phase2"]["metric"] == "auc") & (tests["phase2"]["p_holm"] < 0.05)]
    lines.append("Phase 2: " + ("; ".join(f"{r.question} Δ {r.diff_mean:+.3f}" for r in significant.itertuples())
                                if len(significant) else "no preprocessing change is significant after Holm "
                                "(5 folds: only large, consistent effects can be)."))
    if holdouts is not None and len(holdouts):
        flagged = holdouts[holdouts["delta_vs_reference_flag"] == True]  # noqa: E712 (pandas object column)
        lines.append("Source-specific features: " + (", ".join(f"{r.heldout_source} (Δ {r.delta_vs_reference:+.3f})"
                                                               for r in flagged.itertuples())
                                                     if len(flagged) else "no hold-out Δ above 0.05."))
    lines.append(f"Metadata shortcut audit AUC {audit['auc']:.3f}" + (" - a format shortcut exists." if audit["warning"]
                                                                       else " - no format shortcut."))
    top = selection["selected"][0]
    final = comparisons["phase4"]
    full = final[final["experiment"] == f"p4b_{top['model']}_full"]
    if len(full):
        lines.append(f"Recommended model: {top['model']} on the chosen preprocessing ({choice['source']}), "
                     f"full-data AUC {auc_text(full.iloc[0])}.")
    lines.append("Caveat: results on the synthetic demo data show the pipeline, not deepfake detection performance."
                 if "demo" in str(data["root"]) else
                 "Intervals are over 5 folds: differences inside them are not evidence.")
    return lines
