"""The slide deck, built from hand-made tables: which slides appear and that their numbers come from the input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from PIL import Image

from deepfake_kedro.report_deck import (
    DeckInputs,
    build_deck,
    conclusions,
    decision_line,
    holdout_slide,
    overlay_strip,
    phase2_conclusion,
    phase2_holdouts,
    ranking_slide,
    spread_overlays,
    wilcoxon_note,
)
from tests import tiny_tables as tt

# Slides live outside pyplot, so building a deck must not trip its "More than 20 figures" warning.
pytestmark = pytest.mark.filterwarnings("error:More than 20 figures")

BASE_SLIDES = 20  # setup, splits, metrics, audit; per phase table + figures (+ tests in phase 2); 8 single slides


def deck_inputs(cv_folds: int = 3, synthetic: bool = False, **changes) -> DeckInputs:
    return DeckInputs(**{**tt.deck_fields(cv_folds, synthetic), **changes})


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_deck_has_one_slide_per_kind_and_reads_numbers_from_the_tables():
    slides = build_deck(deck_inputs(cv_folds=3))
    texts = [tt.slide_text(slide) for slide in slides]
    assert len(slides) == BASE_SLIDES
    assert texts[0].startswith("deepfake-kedro: study report")
    assert "3-fold cross-validation" in texts[0] and "seed 7" in texts[0] and "inner validation 20%" in texts[0]
    assert "gan (fake, 6 images)" in texts[0]
    phase1 = next(t for t in texts if t.startswith("Phase 1: results"))
    assert "0.812 [0.782, 0.842]" in phase1  # the headline cell: mean [CI] of the input row
    assert "Best Phase 1 AUC: p1_resnet18 0.812 [0.782, 0.842]. Mean over 3 outer folds" in phase1
    assert "Metadata-only classifier" in texts[3] and "AUC 0.612 [0.550, 0.670]" in texts[3]


def test_deck_names_the_runs_report_folder():
    texts = [tt.slide_text(slide) for slide in build_deck(deck_inputs(reporting_dir="data/demo/08_reporting"))]
    assert "read from data/demo/08_reporting (model_comparison.csv" in texts[0]
    attention = next(t for t in texts if t.startswith("Explainability: where the models look"))
    assert "under data/demo/08_reporting/gradcam/" in attention
    assert not any("data/08_reporting" in t for t in texts)


def test_cv_folds_and_synthetic_flag_reach_the_text():
    real = conclusions(deck_inputs(cv_folds=7, synthetic=False), None)
    demo = conclusions(deck_inputs(cv_folds=7, synthetic=True), None)
    assert real[-1] == "Intervals are over 7 folds: differences inside them are not evidence."
    assert demo[-1].startswith("Caveat: results on the synthetic demo data")
    assert real[:-1] == demo[:-1]
    assert real[0].startswith("phase1: highest mean AUC p1_resnet18, 0.812 [0.782, 0.842]")
    assert real[1].startswith("phase3: highest mean AUC p3_vit, 0.878 [0.848, 0.908]")
    assert ("Recommended model: resnet18 (ranked first on phases 1-3) on the chosen preprocessing (selection), "
            "full-data AUC 0.934") in real[-2]


def test_the_recommendation_reports_its_tests_against_the_other_final_models():
    base = deck_inputs()
    question = "final model (full data): resnet18 vs convnext_tiny"
    for diff, p_holm, verdict in ((0.012, 0.4, "no AUC difference from the other final models is significant"),
                                  (0.05, 0.01, "better than convnext_tiny after Holm"),
                                  (-0.05, 0.01, "worse than convnext_tiny after Holm")):
        final_tests = tt.paired_tests("p4b_convnext_tiny_full", "p4b_resnet18_full", diff, p_holm).assign(
            question=question)
        line = conclusions(deck_inputs(tests={**base.tests, "phase4": final_tests}), None)[-2]
        assert f"convnext_tiny Δ {diff:+.3f} [{diff - 0.02:+.3f}, {diff + 0.02:+.3f}], Holm p {p_holm:.3g}" in line
        assert verdict in line


def test_a_recommendation_chosen_by_override_says_so_and_gives_the_model_s_rank():
    base = deck_inputs()
    override = {**base.model_selection, "source": "override (parameter phase4.ranking.override)",
                "selected": [{**base.model_selection["selected"][0], "rank": 3}]}
    line = conclusions(deck_inputs(model_selection=override), None)[-2]
    assert line.startswith("Recommended model: resnet18 (chosen by phase4.ranking.override, rank 3 on phases 1-3)")


def test_the_best_experiment_is_only_called_better_when_a_test_says_so():
    base = deck_inputs()
    for diff, p_holm, said in (
            (0.003, 0.666, "no AUC difference from it is significant after Holm (smallest Holm p 0.666)"),
            (0.11, 0.01, "of its 1 AUC comparisons, 1 significant after Holm: 1 in its favour, 0 against"),
            (-0.2, 0.01, "of its 1 AUC comparisons, 1 significant after Holm: 0 in its favour, 1 against")):
        tests = {**base.tests, "phase1": tt.paired_tests("p1_cnn", "p1_resnet18", diff, p_holm)}
        first = conclusions(deck_inputs(tests=tests), None)[0]
        assert first == f"phase1: highest mean AUC p1_resnet18, 0.812 [0.782, 0.842]; {said}."


def test_phase2_conclusion_names_significant_changes_or_the_fold_count():
    assert phase2_conclusion(tt.paired_tests("a", "b", 0.031, 0.01), 5) == "Phase 2: a vs b Δ +0.031"
    assert "(4 folds: only large" in phase2_conclusion(tt.paired_tests("a", "b", 0.031, 0.2), 4)


def test_wilcoxon_note_only_warns_when_the_folds_cannot_reach_005():
    # Exact two-sided minimum p = 2 / 2**n: 0.0625 at 5 folds, 0.03125 at 6.
    assert wilcoxon_note(5) == "Wilcoxon (cannot reach 0.05 with 5 folds)"
    assert wilcoxon_note(6) == "Wilcoxon"


def test_significant_tests_holdouts_and_overlays_add_slides():
    phase2 = tt.comparison(["p2_a", "p2_holdout"], [0.8, 0.7]).assign(
        heldout_source=[None, "gan"], reference_in_source_auc=[None, 0.81], heldout_auc=[None, 0.7],
        delta_vs_reference=[None, 0.11], delta_vs_reference_ci_low=[None, 0.05],
        delta_vs_reference_ci_high=[None, 0.17], delta_vs_reference_flag=[None, True])
    base = deck_inputs()
    inputs = deck_inputs(comparisons={**base.comparisons, "phase2": phase2},
                         tests={**base.tests, "phase1": tt.paired_tests("p1_cnn", "p1_resnet18", 0.11, 0.03)},
                         overlays=[Image.new("RGB", (20, 10), "red")] * 5)
    texts = [tt.slide_text(slide) for slide in build_deck(inputs)]
    assert len(texts) == BASE_SLIDES + 3
    assert any(t.startswith("Phase 1: paired tests") and "Holm p = 0.03 (significant)" in t for t in texts)
    assert any(t.startswith("Phase 2: source hold-out") and "0.110" in t for t in texts)
    assert any(t.startswith("Explainability: resnet18 (phase 4, full run)") for t in texts)
    assert "Source-specific features (hold-out Δ > 0.05): gan (Δ +0.110)" in texts[-1]


def test_holdout_slide_heads_each_column_with_whose_auc_it_holds():
    phase2 = tt.comparison(["p2_reference", "p2_no_gan"], [0.8, 0.7]).assign(
        heldout_source=[None, "gan"], holdout_reference=[None, "p2_reference"], reference_in_source_auc=[None, 0.81],
        heldout_auc=[None, 0.7], delta_vs_reference=[None, 0.11], delta_vs_reference_ci_low=[None, 0.05],
        delta_vs_reference_ci_high=[None, 0.17], delta_vs_reference_p_holm=[None, 0.012],
        delta_vs_reference_flag=[None, True])
    slide = holdout_slide(phase2_holdouts(phase2))
    cells = slide.axes[0].tables[0].get_celld()
    header = [cells[0, column].get_text().get_text() for column in range(9)]
    row = [cells[1, column].get_text().get_text() for column in range(9)]
    assert dict(zip(header, row)) == {
        "hold-out": "p2_no_gan", "held-out source": "gan", "reference AUC (in-source)": "0.810",
        "hold-out AUC (held-out source)": "0.700", "Δ": "0.110", "Δ CI low": "0.050", "Δ CI high": "0.170",
        "Holm p": "0.012", "flag": "True"}
    assert "reference (p2_reference)" in tt.slide_text(slide)
    # A comparison written before the hold-outs were Holm-tested still gets its slide, without the p column.
    older = holdout_slide(phase2_holdouts(phase2.drop(columns="delta_vs_reference_p_holm")))
    assert "Holm p" not in [cell.get_text().get_text() for cell in older.axes[0].tables[0].get_celld().values()]


def test_decision_line_says_why_a_step_did_not_apply():
    applied, skipped = tt.preprocessing_choice()["decisions"]
    assert decision_line(applied) == "p2_a -> p2_b: Δ val_auc +0.031, Holm p 0.012 - kept"
    assert decision_line(skipped) == "p2_b -> p2_c: not applicable (no such pair)"
    # Chosen on another metric (phase2.selection.metric: f1), the step holds f1_diff and says so.
    on_f1 = {**{k: v for k, v in applied.items() if k != "auc_diff"}, "f1_diff": 0.08}
    assert decision_line(on_f1, "f1") == "p2_a -> p2_b: Δ f1 +0.080, Holm p 0.012 - kept"


def test_overlays_are_spread_over_prediction_types_then_sources():
    # The demo's top full run: 3 FN, 2 FP, 3 TN first in key order hid its 4 TP.
    keys = ["FN/inpainting/a", "FN/insight/b", "FN/text2img/c", "FP/wiki/d", "FP/wiki/e", "TN/wiki/f", "TN/wiki/g",
            "TN/wiki/h", "TP/inpainting/i", "TP/inpainting/j", "TP/insight/k", "TP/text2img/l"]
    chosen = spread_overlays(keys, 8)
    assert chosen == ["TP/inpainting/i", "TP/insight/k", "TN/wiki/f", "TN/wiki/g", "FP/wiki/d", "FP/wiki/e",
                      "FN/inpainting/a", "FN/insight/b"]
    # An empty type gives its places to the others; fewer keys than places keeps them all.
    assert [k.split("/")[0] for k in spread_overlays([k for k in keys if k[:2] != "FP"], 8)] == (
        ["TP"] * 3 + ["TN"] * 3 + ["FN"] * 2)
    assert sorted(spread_overlays(keys[:3], 8)) == keys[:3]


def test_overlay_strip_tiles_four_per_row_with_gaps():
    strip = overlay_strip([Image.new("RGB", (20, 10), "red")] * 5)
    assert strip.shape == (2 * (10 + 4), 4 * (20 + 4), 3)
    assert (strip[0, 0] == [255, 0, 0]).all() and (strip[-1, -1] == 255).all()


def test_the_ranking_slide_marks_a_model_ranked_on_another_preprocessing():
    selection = tt.model_selection()
    assert "*" not in tt.slide_text(ranking_slide(selection))
    selection["candidates"][0]["on_chosen_preprocessing"] = False
    text = tt.slide_text(ranking_slide(selection))
    assert "p3_resnet18 *" in text and "(* none there: its best run on another)" in text


def test_a_hold_out_leaving_out_two_sources_is_flagged_for_the_source_it_relies_on():
    import pandas as pd

    from deepfake_kedro.comparison import HOLDOUT_METRIC, attach_holdouts
    from deepfake_kedro.report_deck import phase2_holdouts

    # One hold-out trained on real + sA: Δ 0.20 on sB (flagged, Holm p 0.01), 0.01 on sC.
    holdout_tests = pd.DataFrame([
        {"question": "hold-out", "baseline": "p2_holdout", "treatment": "p2_a", "metric": HOLDOUT_METRIC,
         "heldout_source": source, "in_source_auc": 0.9, "heldout_auc": 0.9 - delta, "diff_mean": delta,
         "diff_ci_low": delta - 0.05, "diff_ci_high": delta + 0.05, "p_holm": p, "flag": delta > 0.05}
        for source, delta, p in (("sB", 0.20, 0.01), ("sC", 0.01, 0.8))])
    base = deck_inputs()
    tests = pd.concat([base.tests["phase2"], holdout_tests], ignore_index=True)
    phase2 = attach_holdouts(tt.comparison(["p2_a", "p2_holdout"], [0.8, 0.7]), tests)
    assert phase2.loc[1, "delta_vs_reference_flag"] == "True; False"  # the comparison row joins both sources
    inputs = deck_inputs(comparisons={**base.comparisons, "phase2": phase2}, tests={**base.tests, "phase2": tests})
    lines = conclusions(inputs, phase2_holdouts(phase2))
    assert "Source-specific features (hold-out Δ > 0.05): sB (Δ +0.200, Holm p 0.01)" in lines


def test_a_phase_whose_pairs_were_tested_per_source_gets_the_which_sources_slide():
    per_source = tt.paired_tests("p2_a", "p2_b", 0.03, 0.2).assign(metric="pairwise_auc:gan")
    tests = {**tt.deck_fields()["tests"],
             "phase2": pd.concat([tt.paired_tests("p2_a", "p2_b", 0.03, 0.2), per_source], ignore_index=True)}
    texts = [tt.slide_text(slide) for slide in build_deck(deck_inputs(tests=tests))]
    assert len(texts) == BASE_SLIDES + 1
    slide = next(t for t in texts if t.startswith("Phase 2: which sources each change helps"))
    assert "Δ AUC of real vs each fake source" in slide
    assert not any(t.startswith("Phase 1: which sources") for t in texts)  # phase 1's tests have no such rows
