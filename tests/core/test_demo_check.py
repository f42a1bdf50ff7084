"""Tests for the demo's planted-effects check."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from deepfake_kedro.demo_check import CHECK_COLUMNS, PlantedEffectError, check_planted_effects, format_table, main

PHASE1 = pd.DataFrame([
    {"experiment": "p1_cnn", "auc_mean": 0.93, "auc_ci_low": 0.90, "auc_ci_high": 0.96,
     "pairwise_auc:text2img_mean": 0.99, "pairwise_auc:insight_mean": 0.88, "detection_rate:insight_mean": 0.7},
    {"experiment": "p1_r18", "auc_mean": 0.86, "auc_ci_low": 0.80, "auc_ci_high": 0.92},
])
PHASE2_TESTS = pd.DataFrame([
    {"baseline": "phase1.p1_r18", "treatment": "p2b", "metric": "auc", "diff_mean": 0.06, "diff_ci_low": 0.04,
     "diff_ci_high": 0.08, "p_holm": 0.01},
    {"baseline": "p2b", "treatment": "p2d_aug", "metric": "auc", "diff_mean": 0.01, "diff_ci_low": -0.01,
     "diff_ci_high": 0.03, "p_holm": 0.4},
    {"baseline": "hold_insight", "treatment": "p2b", "metric": "heldout_source_auc", "diff_mean": 0.4,
     "diff_ci_low": 0.3, "diff_ci_high": 0.5, "p_holm": 0.001, "heldout_source": "insight", "in_source_auc": 0.95,
     "heldout_auc": 0.55},
    {"baseline": "hold_inpainting", "treatment": "p2b", "metric": "heldout_source_auc", "diff_mean": 0.02,
     "diff_ci_low": -0.01, "diff_ci_high": 0.05, "p_holm": 0.5, "heldout_source": "inpainting",
     "in_source_auc": 0.99, "heldout_auc": 0.97},
    {"baseline": "p2c_crop", "treatment": "p2e_aug_crop", "metric": "auc", "diff_mean": -0.17, "diff_ci_low": -0.3,
     "diff_ci_high": -0.04, "p_holm": 0.03},
])
CHOICE = {"metric": "auc", "decisions": [
    {"treatment": "p2c_crop", "adopted": True, "reason": "significant gain", "auc_diff": 0.03, "diff_ci": [0.01, 0.05],
     "p_holm": 0.02},
    {"treatment": "p2d_aug", "adopted": False, "reason": "no gain", "auc_diff": -0.01, "diff_ci": [-0.03, 0.01],
     "p_holm": 1.0},
    {"baseline": "p2c_crop", "treatment": "p2e_aug_crop", "adopted": False, "applies": False,
     "reason": "condition not met"},
]}
SCALING = pd.DataFrame([
    {"model": "resnet18", "subsample": 0.2, "auc_mean": 0.80, "auc_ci_low": 0.75, "auc_ci_high": 0.85},
    {"model": "resnet18", "subsample": 0.5, "auc_mean": 0.78, "auc_ci_low": 0.70, "auc_ci_high": 0.86},
    {"model": "resnet18", "subsample": 1.0, "auc_mean": 0.95, "auc_ci_low": 0.93, "auc_ci_high": 0.97},
])


def _check(planted, scaling=SCALING):
    return check_planted_effects(planted, {"phase1": PHASE1}, {"phase2": PHASE2_TESTS}, CHOICE, scaling)


def test_each_check_reads_the_studys_own_numbers_and_says_whether_the_effect_was_recovered():
    table = _check([
        {"effect": "cnn learns", "check": "auc_at_least", "experiment": "phase1.p1_cnn", "value": 0.9},
        {"effect": "r18 learns", "check": "auc_at_least", "experiment": "phase1.p1_r18", "value": 0.9},
        {"effect": "insight", "check": "holdout_flagged", "experiment": "hold_insight"},
        {"effect": "inpainting", "check": "holdout_small", "experiment": "hold_inpainting"},
        {"effect": "inpainting flagged?", "check": "holdout_flagged", "experiment": "hold_inpainting"},
        {"effect": "resolution", "check": "significant_gain", "phase": "phase2", "baseline": "phase1.p1_r18",
         "treatment": "p2b"},
        {"effect": "aug gain?", "check": "significant_gain", "phase": "phase2", "baseline": "p2b",
         "treatment": "p2d_aug"},
        {"effect": "crop", "check": "adopted", "treatment": "p2c_crop"},
        {"effect": "aug", "check": "not_adopted", "treatment": "p2d_aug"},
        {"effect": "aug on crops", "check": "not_adopted", "treatment": "p2e_aug_crop"},
    ])
    assert list(table.columns) == CHECK_COLUMNS
    assert table["recovered"].tolist() == [True, False, True, True, False, True, False, True, True, True]
    first = table.iloc[0]
    assert (first["estimate"], first["ci_low"], first["ci_high"]) == (0.93, 0.90, 0.96)
    assert "per-source AUC: text2img 0.99, insight 0.88" in first["found"]
    assert "detection rate: insight 0.70" in first["found"]
    insight = table.iloc[2]
    assert (insight["estimate"], insight["ci_low"], insight["p_holm"]) == (0.4, 0.3, 0.001)
    assert table.iloc[5]["p_holm"] == 0.01
    assert table.iloc[7]["estimate"] == 0.03 and table.iloc[7]["ci_high"] == 0.05


def test_a_step_that_did_not_apply_is_judged_by_its_own_paired_test_not_passed_for_free():
    planted = [{"effect": "aug on crops", "check": "not_adopted", "treatment": "p2e_aug_crop"}]
    # A Holm-significant loss: the rule would not adopt it.
    row = _check(planted).iloc[0]
    assert row["recovered"] and (row["estimate"], row["p_holm"]) == (-0.17, 0.03)
    assert row["found"] == ("the step did not apply (condition not met); by its paired test it would not be adopted "
                            "(Δauc -0.170, Holm p 0.03)")
    # A Holm-significant gain: the rule would adopt it, so the planted null was not recovered.
    gain = PHASE2_TESTS.copy()
    gain.loc[4, ["diff_mean", "diff_ci_low", "diff_ci_high"]] = [0.17, 0.04, 0.3]
    table = check_planted_effects(planted, {"phase1": PHASE1}, {"phase2": gain}, CHOICE, SCALING)
    assert not table.iloc[0]["recovered"] and "it would be adopted" in table.iloc[0]["found"]
    # No test of the pair: nothing says what the rule would decide.
    untested = PHASE2_TESTS.drop(index=4)
    table = check_planted_effects(planted, {"phase1": PHASE1}, {"phase2": untested}, CHOICE, SCALING)
    assert not table.iloc[0]["recovered"] and table.iloc[0]["found"].startswith("not tested")


def test_a_flagged_holdout_needs_the_holm_test_not_only_an_interval_above_zero():
    planted = [{"effect": "insight", "check": "holdout_flagged", "experiment": "hold_insight"}]
    # Δ 0.094 [0.003, 0.185]: above the flag with an unadjusted interval above 0, but Holm p 0.137.
    weak = PHASE2_TESTS.copy()
    weak.loc[2, ["diff_mean", "diff_ci_low", "diff_ci_high", "p_holm"]] = [0.094, 0.003, 0.185, 0.137]
    table = check_planted_effects(planted, {"phase1": PHASE1}, {"phase2": weak}, CHOICE, SCALING)
    assert table["recovered"].tolist() == [False] and table.iloc[0]["expected"] == "Δ > 0.05, Holm p < 0.05"
    assert _check(planted)["recovered"].tolist() == [True]


def test_scaling_must_rise_and_each_step_stay_within_the_previous_ci():
    planted = [{"effect": "scaling", "check": "scaling_monotone"}]
    assert _check(planted)["recovered"].tolist() == [True]  # 0.78 dips but stays above 0.75 (the 20% CI low)
    dipping = SCALING.assign(auc_mean=[0.80, 0.70, 0.95])
    assert _check(planted, dipping)["recovered"].tolist() == [False]
    falling = SCALING.assign(auc_mean=[0.80, 0.79, 0.76])
    table = _check(planted, falling)
    assert table["recovered"].tolist() == [False]
    assert table.iloc[0]["estimate"] == pytest.approx(-0.04)


def test_nothing_planted_gives_an_empty_table_with_the_columns():
    table = _check([])
    assert table.empty and list(table.columns) == CHECK_COLUMNS
    assert "empty" in format_table(table)


@pytest.mark.parametrize("entry, message", [
    ({"effect": "x", "check": "bogus"}, "unknown check 'bogus'"),
    ({"effect": "x", "check": "auc_at_least", "experiment": "phase1.p1_cnn"}, r"\['value'\] missing"),
    ({"effect": "x", "check": "auc_at_least", "experiment": "phase1.nope", "value": 0.9}, "'phase1.nope'"),
    ({"effect": "x", "check": "holdout_flagged", "experiment": "hold_text2img"}, "'hold_text2img'"),
    ({"effect": "x", "check": "adopted", "treatment": "p2x"}, "'p2x'"),
])
def test_an_entry_the_results_cannot_answer_is_an_error_naming_it(entry, message):
    with pytest.raises(PlantedEffectError, match=r"demo\.planted_effects\[0\]") as error:
        _check([entry])
    assert re.search(message, str(error.value))


def test_the_command_prints_the_table_and_fails_when_an_effect_was_missed(tmp_path, capsys):
    table = _check([
        {"effect": "cnn learns", "check": "auc_at_least", "experiment": "phase1.p1_cnn", "value": 0.9},
        {"effect": "r18 learns", "check": "auc_at_least", "experiment": "phase1.p1_r18", "value": 0.9},
    ])
    table.to_csv(tmp_path / "demo_check.csv", index=False)
    assert main([str(tmp_path / "demo_check.csv")]) == 1
    printed = capsys.readouterr().out
    assert "cnn learns" in printed and "NO" in printed and "recovered: 1 of 2" in printed
    table.iloc[:1].to_csv(tmp_path / "ok.csv", index=False)
    assert main([str(tmp_path / "ok.csv")]) == 0
    assert main([str(tmp_path / "missing.csv")]) == 2
