"""The study's slide deck: one small function per slide kind, every number read from the tables passed in.

Kedro-free: the reporting node gathers the catalog's data into a ``DeckInputs`` and calls ``build_deck``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.comparison import HELDOUT_FLAG_ABOVE, holdout_rows, source_effect_rows
from deepfake_kedro.figures import (
    attention_bars,
    cost_vs_auc,
    metric_bars,
    scaling_curves,
    source_effects,
    source_heatmap,
)
from deepfake_kedro.report_sections import ReportSection, section_slides
from deepfake_kedro.reporting import (
    auc_text,
    figure_pixels,
    headline_table,
    image_slide,
    significant_findings,
    table_slide,
    text_slide,
)
from deepfake_kedro.study import FINAL_QUESTION, FULL, Slot

PHASE_TITLES = {"phase1": "Phase 1", "phase2": "Phase 2", "phase3": "Phase 3", "phase4": "Phase 4"}
HOLDOUT_COLUMNS = ["experiment", "heldout_source", "reference_in_source_auc", "heldout_auc", "delta_vs_reference",
                   "delta_vs_reference_ci_low", "delta_vs_reference_ci_high", "delta_vs_reference_p_holm",
                   "delta_vs_reference_flag"]
HOLDOUT_HEADINGS = {"experiment": "hold-out", "heldout_source": "held-out source",
                    "reference_in_source_auc": "reference AUC (in-source)",
                    "heldout_auc": "hold-out AUC (held-out source)", "delta_vs_reference": "Δ",
                    "delta_vs_reference_ci_low": "Δ CI low", "delta_vs_reference_ci_high": "Δ CI high",
                    "delta_vs_reference_p_holm": "Holm p", "delta_vs_reference_flag": "flag"}
RANKING_COLUMNS = ["rank", "model", "experiment", "val_auc", "worst_source_val_auc", "worst_source", "gflops", "score"]
BENCHMARK_COLUMNS = ["backbone", "params_m", "gflops", "image_size", "batch_size", "images_per_s", "device",
                     "precision"]
MAX_FINDINGS = 14
MAX_OVERLAYS = 8
OVERLAY_TYPES = ("TP", "TN", "FP", "FN")
"""Grad-CAM prediction types in the order the overlay slide takes them (as ``explain.PRED_TYPES``)."""


@dataclass(frozen=True, eq=False)
class DeckInputs:
    """Everything the deck shows, as the catalog holds it.

    Attributes:
        data_root: Where the images came from (``data.root``).
        sources: Source name -> ``real`` / ``fake`` (``data.sources``).
        cv_folds: Outer folds of the cross-validation.
        seed: The study's seed.
        val_ratio: Share of the training groups held for early stopping.
        synthetic: Whether the images are the synthetic demo data (changes the closing caveat).
        fold_table: The study's fold table (``path``, ``source``, ``group``, ``fold``).
        shortcut_audit: The metadata-only shortcut audit.
        near_duplicates: The near-duplicate grouping summary.
        preprocessing_choice: Phase 2's choice.
        model_selection: Phase 4's ranking.
        model_costs: Phase 3's cost table.
        scaling: Phase 4's scaling table.
        attention: Grad-CAM attention summary.
        benchmark: The backbone benchmark.
        comparisons: Phase -> its comparison table.
        tests: Phase -> its paired tests.
        overlays: Grad-CAM overlays (PIL images) of the top phase-4 model's full run, in display order.
        sections: Sections written by pipelines outside the default run (robustness, external sets, ...).
        reporting_dir: The run's report folder (the catalog's ``08_reporting``), named on the slides.
    """

    data_root: str
    sources: Mapping[str, str]
    cv_folds: int
    seed: int
    val_ratio: float
    synthetic: bool
    fold_table: pd.DataFrame
    shortcut_audit: Mapping[str, Any]
    near_duplicates: Mapping[str, Any]
    preprocessing_choice: Mapping[str, Any]
    model_selection: Mapping[str, Any]
    model_costs: pd.DataFrame
    scaling: pd.DataFrame
    attention: pd.DataFrame
    benchmark: pd.DataFrame
    comparisons: Mapping[str, pd.DataFrame]
    tests: Mapping[str, pd.DataFrame]
    overlays: Sequence[Any] = field(default_factory=list)
    sections: Sequence[ReportSection] = field(default_factory=list)
    reporting_dir: str = "data/08_reporting"


def build_deck(deck: DeckInputs) -> list[Figure]:
    """The slide deck: setup, splits, metrics, results and conclusions per phase, shortcuts, explainability.

    Args:
        deck: The deck's inputs.

    Returns:
        One figure per slide.
    """
    slides = [setup_slide(deck), splits_slide(deck.fold_table), metrics_slide(deck.cv_folds),
              audit_slide(deck.shortcut_audit, deck.near_duplicates)]
    for phase in ("phase1", "phase2"):
        slides += comparison_slides(deck.comparisons[phase], deck.tests[phase], PHASE_TITLES[phase], deck.cv_folds)
    holdouts = phase2_holdouts(deck.comparisons["phase2"])
    if holdouts is not None and len(holdouts):
        slides.append(holdout_slide(holdouts))
    slides.append(preprocessing_slide(deck.preprocessing_choice))
    slides += comparison_slides(deck.comparisons["phase3"], deck.tests["phase3"], "Phase 3", deck.cv_folds)
    slides.append(image_slide("Phase 3: cost vs AUC", figure_pixels(cost_vs_auc(deck.model_costs, "cost vs AUC")),
                              "GFLOPs from torch's flop counter at each experiment's image size."))
    slides.append(ranking_slide(deck.model_selection))
    slides += comparison_slides(deck.comparisons["phase4"], deck.tests["phase4"], "Phase 4", deck.cv_folds)
    slides.append(image_slide("Phase 4: data scaling",
                              figure_pixels(scaling_curves(deck.scaling, "AUC vs training data")),
                              "Nested subsets of whole groups, same folds."))
    slides.append(attention_slide(deck.attention, deck.reporting_dir))
    if deck.overlays:
        slides.append(overlay_slide(deck.overlays, deck.model_selection["selected"][0]["model"]))
    slides.append(table_slide("Backbone benchmark", deck.benchmark[BENCHMARK_COLUMNS],
                              "Inference at the batch size shown on this run's device."))
    for section in deck.sections:
        slides += section_slides(section)
    slides.append(text_slide("Conclusions and recommendations", conclusions(deck, holdouts)))
    return slides


def setup_slide(deck: DeckInputs) -> Figure:
    """Title slide: the data, its sources and the protocol."""
    fold_table = deck.fold_table
    counts = fold_table.groupby("source").agg(images=("path", "size"), groups=("group", "nunique"))
    return text_slide("deepfake-kedro: study report", [
        f"Data: {deck.data_root} - {len(fold_table)} usable images, {fold_table['group'].nunique()} identity groups.",
        "Sources: " + ", ".join(f"{s} ({kind}, {counts.loc[s, 'images']} images)" for s, kind in deck.sources.items()
                                if s in counts.index),
        f"Protocol: {deck.cv_folds}-fold cross-validation grouped by identity (StratifiedGroupKFold, seed "
        f"{deck.seed}), inner validation {deck.val_ratio:.0%} of the training groups for early stopping, the "
        "checkpoint, the decision threshold, phase 2's preprocessing and phase 4's models: no test fold chooses "
        "anything, so the test figures of what was chosen are not inflated by the choosing (docs/protocol.md).",
        "Phases: 1 architecture baseline, 2 preprocessing (shortcuts, resolution, face crop, augmentation), "
        "3 architectures on phase 2's preprocessing, 4 final models with data scaling.",
        f"Every number in this deck is read from {deck.reporting_dir} (model_comparison.csv, paired_tests.csv, ...).",
    ])


def splits_slide(fold_table: pd.DataFrame) -> Figure:
    """Images per outer fold and source, and identity groups per fold (before any experiment's subsample)."""
    per_fold = fold_table.pivot_table(index="fold", columns="source", values="path", aggfunc="size", fill_value=0)
    per_fold["groups"] = fold_table.groupby("fold")["group"].nunique()
    return table_slide("Splits: images per outer fold and source", per_fold.reset_index(),
                       "Groups (identity + near-duplicates) never cross folds; checked before every training. An "
                       "experiment with subsample < 1 trains on that share of each fold's groups, and tests on it "
                       "too unless subsample_test is false, as in phase 4's scaling runs (each experiment's n_test "
                       "is in its fold_metrics.csv).", digits=0)


def wilcoxon_note(cv_folds: int) -> str:
    """The Wilcoxon test's name, with a warning when ``cv_folds`` pairs cannot give a two-sided p below 0.05."""
    # The smallest exact two-sided p over n pairs is 2 / 2**n (every difference of one sign).
    return f"Wilcoxon (cannot reach 0.05 with {cv_folds} folds)" if 2 / 2**cv_folds > 0.05 else "Wilcoxon"


def metrics_slide(cv_folds: int) -> Figure:
    """What is measured per fold, how folds are summarised and how experiments are compared."""
    return text_slide("Metrics and statistics", [
        "Per test fold: ROC AUC (headline), accuracy and F1 at p = 0.5 and at the threshold chosen on the "
        "fold's validation rows, average precision, equal error rate; "
        "per source: detection / false-alarm rate and the AUC of real vs each fake source.",
        "Across folds: mean, std and a 95% t-interval (truncated to [0, 1] for AUC, rates and other bounded metrics); "
        "pooled out-of-fold AUC (each fold model's p(fake) calibrated on its validation rows first) with a grouped "
        "bootstrap interval.",
        f"Comparisons: fold-wise paired t-test, Nadeau-Bengio corrected resampled t-test, {wilcoxon_note(cv_folds)}, "
        "Holm adjustment across each phase's pairs per metric; Δ intervals use Nadeau-Bengio's corrected variance.",
        "Source hold-out: Δ = in-source AUC (reference trained with the source) - held-out-source AUC; flag > 0.05.",
    ])


def audit_slide(audit: Mapping[str, Any], near_duplicates: Mapping[str, Any]) -> Figure:
    """The metadata-only shortcut audit and the near-duplicate merging."""
    return text_slide("Data audit: shortcuts in the files themselves", [
        f"Metadata-only classifier: AUC {audit['auc']:.3f} "
        f"[{audit['auc_ci_low']:.3f}, {audit['auc_ci_high']:.3f}] - "
        + ("WARNING: the label leaks through the file format; see the hold-out and normalisation results."
           if audit["warning"] else "no format shortcut above the warning level.")
        + " Its features: size, aspect, file size, JPEG quality, EXIF turn, colour mode and format.",
        f"Near-duplicates (perceptual hash): {near_duplicates['basename_groups_merged']} identity groups held "
        f"near-copies of each other and were merged, leaving {near_duplicates['merged_groups']} groups "
        f"(the largest joins {near_duplicates['largest_merged_group']} identity groups"
        + (f", {near_duplicates['largest_merged_group_images']} images)." if "largest_merged_group_images"
           in near_duplicates else ")."),
    ])


def best_experiment(comparison: pd.DataFrame) -> pd.Series:
    """The comparison row with the highest mean AUC."""
    return comparison.sort_values("auc_mean", ascending=False).iloc[0]


def comparison_slides(comparison: pd.DataFrame, tests: pd.DataFrame, title: str, cv_folds: int) -> list[Figure]:
    """A phase's results table, its metric bars beside the per-source heatmap, its significant tests and which
    sources each compared change helps."""
    best = best_experiment(comparison)
    note = (f"Best {title} AUC: {best['experiment']} {auc_text(best)}. Mean over {cv_folds} outer folds, "
            "95% t-interval; every metric with std and CI in model_comparison.csv.")
    slides = [table_slide(f"{title}: results", headline_table(comparison), note)]
    findings = significant_findings(tests) if len(tests) else []
    slides.append(image_slide(f"{title}: AUC / accuracy / F1 and per-source AUC",
                              side_by_side(metric_bars(comparison, title=title),
                                           source_heatmap(comparison, "per-source AUC")),
                              "Bars: mean with 95% CI over folds. Heatmap: real vs each fake source."))
    if findings:
        slides.append(text_slide(f"{title}: paired tests (Nadeau-Bengio, Holm across the phase)",
                                 findings[:MAX_FINDINGS]))
    if len(source_effect_rows(tests)):
        slides.append(image_slide(f"{title}: which sources each change helps", figure_pixels(source_effects(tests)),
                                  "Δ AUC of real vs each fake source (treatment - baseline, fold mean), Nadeau-Bengio "
                                  "95% CI; * Holm p < 0.05 per source over the phase's pairs."))
    return slides


def phase2_holdouts(phase2: pd.DataFrame) -> pd.DataFrame | None:
    """Phase 2's source hold-out rows, or None when the comparison has no hold-out columns."""
    return phase2.dropna(subset=["delta_vs_reference"]) if "delta_vs_reference" in phase2 else None


def holdout_slide(holdouts: pd.DataFrame) -> Figure:
    """In-source vs held-out-source AUC of each source hold-out, under headings that name whose AUC is whose."""
    references = holdouts["holdout_reference"].dropna().unique() if "holdout_reference" in holdouts else []
    reference = f"The reference ({', '.join(map(str, references))})" if len(references) else "The reference"
    # Comparisons written before hold-outs were Holm-tested have no p column.
    columns = [c for c in HOLDOUT_COLUMNS if c in holdouts or c != "delta_vs_reference_p_holm"]
    return table_slide("Phase 2: source hold-out (source-specific features)",
                       holdouts[columns].rename(columns=HOLDOUT_HEADINGS),
                       f"Δ = reference AUC (in-source) - hold-out AUC (held-out source), same folds, 95% CI. "
                       f"{reference} was trained with every source; each hold-out never saw its held-out source.\n"
                       f"flag: Δ > {HELDOUT_FLAG_ABOVE}, a size worth a look; Holm p (Nadeau-Bengio, across the "
                       "hold-outs) < 0.05 says the model relies on features of the sources it was trained on.")


def decision_line(decision: Mapping[str, Any], metric: str = "val_auc") -> str:
    """One phase-2 selection step: its effect on ``metric`` (``phase2.selection.metric``) and Holm p, or why not."""
    step = f"{decision['baseline']} -> {decision['treatment']}: "
    if not decision["applies"]:
        return step + "not applicable (" + decision["reason"] + ")"
    return step + (f"Δ {metric} {decision.get(f'{metric}_diff', float('nan')):+.3f}, "
                   f"Holm p {decision.get('p_holm', float('nan')):.3g} - {decision['reason']}")


def preprocessing_slide(choice: Mapping[str, Any]) -> Figure:
    """Phase 2's chosen preprocessing, its rule and every step's decision."""
    settings = ", ".join(f"{k} = {v if not isinstance(v, dict) else 'on'}" for k, v in choice["settings"].items())
    return text_slide("Phase 2 conclusion: preprocessing for phases 3-4", [
        f"Chosen ({choice['source']}): " + settings, "Rule: " + choice["rule"],
        *(decision_line(d, choice.get("metric", "val_auc")) for d in choice["decisions"])])


def ranking_slide(selection: Mapping[str, Any]) -> Figure:
    """Phase 4's ranking of the candidate models, its criteria and the models selected."""
    candidates = pd.DataFrame(selection["candidates"])
    shown = candidates[RANKING_COLUMNS].copy()
    elsewhere = ~candidates.get("on_chosen_preprocessing", pd.Series(True, index=candidates.index)).astype(bool)
    # A model with no run on the chosen preprocessing is ranked on its best run elsewhere: marked, not hidden.
    shown.loc[elsewhere, "experiment"] = shown.loc[elsewhere, "experiment"] + " *"
    criteria = ", ".join(f"{c['name']} ({c['direction']} is better, weight {c['weight']:g})"
                         for c in selection["criteria"])
    return table_slide("Phase 4: model ranking", shown,
                       f"Criteria: {criteria}; the AUCs are the folds' inner-validation ones, not their test folds'. "
                       "Each model on its best run on phase 2's chosen preprocessing"
                       + (" (* none there: its best run on another)" if elsewhere.any() else "")
                       + f". Selected ({selection['source']}): " + ", ".join(s["model"] for s in selection["selected"]))


def attention_slide(attention: pd.DataFrame, reporting_dir: str = "data/08_reporting") -> Figure:
    """Share of Grad-CAM mass on the detected face per experiment (overlays under ``reporting_dir``/gradcam)."""
    return image_slide("Explainability: where the models look", figure_pixels(attention_bars(attention)),
                       "Grad-CAM share inside MTCNN's face box, in what the model saw; the tick is the box's share of "
                       f"the input (no preference).\nOverlays per experiment under {reporting_dir}/gradcam/.")


def overlay_slide(overlays: Sequence[Any], model: str) -> Figure:
    """Grad-CAM overlays of the top model's full run (as ``spread_overlays`` chose them), four per row."""
    return image_slide(f"Explainability: {model} (phase 4, full run)", overlay_strip(overlays[:MAX_OVERLAYS]),
                       "Each image explained by the fold model that held it out; TP / TN / FP / FN at that fold's "
                       "decision threshold, spread over types and sources.")


def _round_robin(queues: Sequence[Sequence[str]]) -> list[str]:
    """The first of every queue, then the second of every queue, skipping exhausted ones."""
    longest = max((len(q) for q in queues), default=0)
    return [q[i] for i in range(longest) for q in queues if i < len(q)]


def spread_overlays(keys: Sequence[str], n: int = MAX_OVERLAYS) -> list[str]:
    """Up to ``n`` overlay keys spread evenly over prediction types, and within a type over sources.

    Args:
        keys: Overlay keys ``<pred_type>/<source>/<image>`` (other keys count as one type and source).
        n: How many to keep.

    Returns:
        The chosen keys, grouped by prediction type (TP, TN, FP, FN, then others) and source.
    """
    def type_rank(pred_type: str) -> tuple[int, str]:
        return (OVERLAY_TYPES.index(pred_type) if pred_type in OVERLAY_TYPES else len(OVERLAY_TYPES), pred_type)

    cells: dict[str, dict[str, list[str]]] = {}
    for key in sorted(keys):
        parts = key.split("/")
        pred_type, source = (parts[0], parts[1]) if len(parts) >= 3 else ("", "")
        cells.setdefault(pred_type, {}).setdefault(source, []).append(key)
    types = sorted(cells, key=type_rank)
    per_type = [_round_robin([cells[t][s] for s in sorted(cells[t])]) for t in types]
    chosen = set(_round_robin(per_type)[:n])
    return [key for t in types for s in sorted(cells[t]) for key in cells[t][s] if key in chosen]


def flagged_holdouts(tests: pd.DataFrame | None, holdouts: pd.DataFrame | None
                     ) -> list[tuple[str, float, float | None]] | None:
    """Each held-out source whose Δ is flagged, with Δ and its Holm p (None if not tested); None: no hold-out.

    Read from phase 2's paired tests, one row per held-out source; the comparison rows (``holdouts``) join a
    hold-out's several sources into one cell, so they are read only when the tests hold no hold-out rows.
    """
    per_source = holdout_rows(tests) if tests is not None else pd.DataFrame()
    if len(per_source) and "flag" in per_source:
        return [(r.heldout_source, r.diff_mean, r.p_holm)
                for r in per_source[per_source["flag"] == True].itertuples()]  # noqa: E712 (object column)
    if holdouts is None or not len(holdouts):
        return None
    held = holdouts[holdouts["delta_vs_reference_flag"] == True]  # noqa: E712 (pandas object column)
    return [(r.heldout_source, r.delta_vs_reference, getattr(r, "delta_vs_reference_p_holm", None))
            for r in held.itertuples()]


def conclusions(deck: DeckInputs, holdouts: pd.DataFrame | None) -> list[str]:
    """The closing bullets: best models, significant preprocessing effects, shortcuts, the recommendation."""
    lines = []
    for phase in ("phase1", "phase3"):
        best = best_experiment(deck.comparisons[phase])
        lines.append(f"{phase}: highest mean AUC {best['experiment']}, {auc_text(best)}"
                     + _versus(deck.tests.get(phase), best["experiment"]) + ".")
    lines.append(phase2_conclusion(deck.tests["phase2"], deck.cv_folds))
    flagged = flagged_holdouts(deck.tests.get("phase2"), holdouts)
    if flagged is not None:
        lines.append("Source-specific features (hold-out Δ > 0.05): " + (
            ", ".join(f"{source} (Δ {delta:+.3f}" + (f", Holm p {p:.3g})" if p is not None else ")")
                      for source, delta, p in flagged)
            if flagged else "no hold-out Δ above 0.05."))
    audit = deck.shortcut_audit
    lines.append(f"Metadata shortcut audit AUC {audit['auc']:.3f}"
                 + (" - a format shortcut exists." if audit["warning"] else " - no format shortcut."))
    recommended = recommendation(deck.comparisons["phase4"], deck.model_selection, deck.preprocessing_choice,
                                 deck.tests.get("phase4"))
    lines += [recommended] if recommended else []
    lines.append("Caveat: results on the synthetic demo data show the pipeline, not deepfake detection performance."
                 if deck.synthetic else
                 f"Intervals are over {deck.cv_folds} folds: differences inside them are not evidence.")
    return lines


def _versus(tests: pd.DataFrame | None, experiment: str) -> str:
    """Whether the phase's AUC tests involving ``experiment`` found any difference after Holm."""
    if tests is None or tests.empty or "metric" not in tests:
        return ""
    def names_it(column: str) -> pd.Series:  # phase 3 names phase 1's baselines as phase1.<experiment>
        names = tests[column].astype(str)
        return (names == experiment) | names.str.endswith(f".{experiment}")

    rows = tests[(tests["metric"] == "auc") & (names_it("baseline") | names_it("treatment"))]
    if rows.empty:
        return ""
    significant = rows[rows["p_holm"] < 0.05]
    if significant.empty:
        return f"; no AUC difference from it is significant after Holm (smallest Holm p {rows['p_holm'].min():.3g})"
    # Differences are treatment - baseline: in its favour when it is the treatment and the difference is positive.
    favour = int(((significant["diff_mean"] > 0) == names_it("treatment")[significant.index]).sum())
    return (f"; of its {len(rows)} AUC comparisons, {len(significant)} significant after Holm: {favour} in its "
            f"favour, {len(significant) - favour} against")


def phase2_conclusion(tests: pd.DataFrame, cv_folds: int) -> str:
    """The preprocessing changes significant on AUC after Holm, or why none is."""
    significant = tests[(tests["metric"] == "auc") & (tests["p_holm"] < 0.05)]
    if len(significant):
        return "Phase 2: " + "; ".join(f"{r.question} Δ {r.diff_mean:+.3f}" for r in significant.itertuples())
    return (f"Phase 2: no preprocessing change is significant on AUC after Holm ({cv_folds} folds: only large, "
            "consistent effects can be).")


def recommendation(
    final: pd.DataFrame, selection: Mapping[str, Any], choice: Mapping[str, Any], tests: pd.DataFrame | None = None
) -> str | None:
    """The top phase-4 model with its full-data AUC and its tests against the other final models' full runs,
    or None when its full run is not in the table."""
    top = selection["selected"][0]
    full = final[final["experiment"] == Slot(1, FULL).experiment_name(top["model"])]
    if not len(full):
        return None
    # An override may put a model of any rank first: say how it was chosen.
    chosen = (f"chosen by phase4.ranking.override, rank {top['rank']} on phases 1-3"
              if str(selection.get("source", "")).startswith("override") else
              f"ranked {'first' if top['rank'] == 1 else top['rank']} on phases 1-3")
    return (f"Recommended model: {top['model']} ({chosen}) on the chosen preprocessing "
            f"({choice['source']}), full-data AUC {auc_text(full.iloc[0])}{_against_final_models(tests)}.")


def _against_final_models(tests: pd.DataFrame | None) -> str:
    """The recommended model's full run against each other final model's, on AUC, with Holm's verdict."""
    if tests is None or tests.empty or "question" not in tests:
        return ""
    rows = tests[(tests["metric"] == "auc") & tests["question"].astype(str).str.startswith(FINAL_QUESTION)]
    if rows.empty:
        return ""
    others = [(str(r.question).rsplit(" vs ", 1)[1], r) for r in rows.itertuples()]
    listed = "; ".join(f"{name} Δ {r.diff_mean:+.3f} [{r.diff_ci_low:+.3f}, {r.diff_ci_high:+.3f}], "
                       f"Holm p {r.p_holm:.3g}" for name, r in others)
    better = [name for name, r in others if r.p_holm < 0.05 and r.diff_mean > 0]
    worse = [name for name, r in others if r.p_holm < 0.05 and r.diff_mean < 0]
    verdict = ("no AUC difference from the other final models is significant after Holm" if not better + worse else
               ", ".join(([f"better than {', '.join(better)}"] if better else [])
                         + ([f"worse than {', '.join(worse)}"] if worse else [])) + " after Holm")
    return f"; against the other final models' full runs: {listed} - {verdict}"


def side_by_side(left: Figure, right: Figure) -> np.ndarray:
    """Two figures rendered and placed next to each other, top-aligned on a white background."""
    a, b = figure_pixels(left), figure_pixels(right)
    height = max(a.shape[0], b.shape[0])
    return np.concatenate([_pad_rows(a, height), _pad_rows(b, height)], axis=1)


def _pad_rows(pixels: np.ndarray, height: int) -> np.ndarray:
    return np.pad(pixels, ((0, height - pixels.shape[0]), (0, 0), (0, 0)), constant_values=255)


def overlay_strip(images: Sequence[Any], per_row: int = 4) -> np.ndarray:
    """PIL images tiled ``per_row`` to a row with 4-pixel white gaps."""
    arrays = [np.asarray(image.convert("RGB")) for image in images]
    height = max(a.shape[0] for a in arrays)
    arrays = [np.pad(a, ((0, height - a.shape[0]), (0, 4), (0, 0)), constant_values=255) for a in arrays]
    rows = [np.concatenate(arrays[i:i + per_row], axis=1) for i in range(0, len(arrays), per_row)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)
