"""Phase tables: comparison rows, paired tests with Holm across pairs, hold-out deltas, Markdown twins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from deepfake_kedro.comparison import (
    attach_holdouts,
    comparison_markdown,
    comparison_table,
    format_ci,
    holdout_rows,
    holdout_tests,
    paired_tests,
    paired_tests_markdown,
    to_markdown,
)
from tests import tiny_tables as tt

SOURCES = {"real": "real", "gan": "fake", "diffusion": "fake"}


def summaries() -> dict:
    return {
        "base": tt.metrics_summary("f1", {"auc": [0.80, 0.82, 0.78], "accuracy": [0.7, 0.72, 0.69],
                                          "f1": [0.6, 0.65, 0.62]}),
        "bigger": tt.metrics_summary("f2", {"auc": [0.85, 0.88, 0.86], "accuracy": [0.75, 0.74, 0.78],
                                            "f1": [0.7, 0.66, 0.69]}, image_size=128),
        "flip": tt.metrics_summary("f3", {"auc": [0.81, 0.80, 0.79], "accuracy": [0.7, 0.71, 0.7],
                                          "f1": [0.61, 0.64, 0.6]}),
    }


def test_format_ci_with_and_without_std():
    row = {"auc_mean": 0.91234, "auc_std": 0.0201, "auc_ci_low": 0.87, "auc_ci_high": 0.9546}
    assert format_ci(row, "auc") == "0.912 [0.870, 0.955]"
    assert format_ci(row, "auc", with_std=True) == "0.912 ± 0.020 [0.870, 0.955]"


def test_comparison_table_one_row_per_experiment_with_t_intervals():
    table = comparison_table(summaries()).set_index("experiment")
    assert list(table.index) == ["base", "bigger", "flip"]
    assert table.loc["bigger", "image_size"] == 128 and table.loc["bigger", "fingerprint"] == "f2"
    values = [0.85, 0.88, 0.86]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert table.loc["bigger", "auc_mean"] == pytest.approx(np.mean(values))
    assert table.loc["bigger", "auc_std"] == pytest.approx(np.std(values, ddof=1))
    assert (table.loc["bigger", "auc_ci_low"], table.loc["bigger", "auc_ci_high"]) == pytest.approx((low, high))
    assert table.loc["base", "pooled_auc"] == 0.5
    assert list(table.columns[:3]) == ["fingerprint", "backbone", "image_size"]


def test_a_metric_missing_on_some_folds_says_so_in_the_table_and_its_text():
    # Fold 1's AUC is undefined (a one-class test fold): the mean is over 2 folds and must not pass for 3.
    table = comparison_table({"gap": tt.metrics_summary("g", {"auc": [0.8, np.nan, 0.9], "f1": [0.6, 0.7, 0.8]})})
    row = table.iloc[0]
    assert (row["n_folds"], row["auc_n"], row["f1_n"]) == (3, 2, 3)
    assert format_ci(row, "auc").endswith("(2 of 3 folds)")
    assert "folds)" not in format_ci(row, "f1")
    assert "(2 of 3 folds)" in comparison_markdown(table, "t")


def test_a_pair_with_an_untestable_metric_still_counts_in_holm():
    gap = tt.metrics_summary("g", {"auc": [0.8, np.nan, np.nan], "f1": [0.6, 0.7, 0.8]})
    pairs = [{"question": "size", "baseline": "base", "treatment": "bigger"},
             {"question": "gap", "baseline": "base", "treatment": "gap"}]
    tests = paired_tests({**summaries(), "gap": gap}, pairs, metrics=["auc"]).set_index("question")
    assert tests.loc["gap", "n_folds"] == 1 and np.isnan(tests.loc["gap", "p_holm"])
    # Two comparisons were planned: the testable one is corrected for two, not one.
    assert tests.loc["size", "p_holm"] == pytest.approx(min(1.0, 2 * tests.loc["size", "p_nadeau_bengio"]))


def test_paired_tests_differences_and_holm_across_the_phases_pairs():
    pairs = [{"question": "size", "baseline": "base", "treatment": "bigger"},
             {"question": "flip", "baseline": "base", "treatment": "flip"}]
    tests = paired_tests(summaries(), pairs, metrics=["auc"])
    assert list(tests["question"]) == ["size", "flip"]
    assert tests.loc[0, "diff_mean"] == pytest.approx(np.mean([0.05, 0.06, 0.08]))
    # Holm over two p values: the smaller doubled, the larger max(itself, that).
    p = tests["p_nadeau_bengio"].to_numpy()
    smaller, larger = min(p), max(p)
    expected = [min(1, 2 * smaller) if v == smaller else min(1, max(larger, 2 * smaller)) for v in p]
    np.testing.assert_allclose(tests["p_holm"], expected)
    assert list(tests["significant_holm"]) == list(tests["p_holm"] < 0.05)


def test_paired_tests_compare_accuracy_at_the_validation_threshold_beside_accuracy_at_one_half():
    # The treatment ranks as well as the baseline but scores everything above 0.5 less often:
    # accuracy at 0.5 moves, accuracy at each fold's chosen threshold does not.
    at_half = {"auc": [0.9, 0.91, 0.92, 0.9, 0.91], "accuracy_at_threshold": [0.85, 0.86, 0.84, 0.85, 0.87],
               "f1_at_threshold": [0.84, 0.85, 0.83, 0.86, 0.85]}
    base = tt.metrics_summary("b", {**at_half, "accuracy": [0.84, 0.85, 0.83, 0.85, 0.86],
                                    "f1": [0.83, 0.84, 0.82, 0.85, 0.84]})
    treat = tt.metrics_summary("t", {**at_half, "accuracy": [0.55, 0.52, 0.5, 0.56, 0.51],
                                     "f1": [0.1, 0.05, 0.0, 0.12, 0.04]})
    tests = paired_tests({"base": base, "shifted": treat},
                         [{"question": "q", "baseline": "base", "treatment": "shifted"}]).set_index("metric")
    assert list(tests.index) == ["auc", "accuracy", "f1", "accuracy_at_threshold", "f1_at_threshold"]
    assert tests.loc["accuracy", "p_paired_t"] == pytest.approx(
        stats.ttest_rel(treat_values := [0.55, 0.52, 0.5, 0.56, 0.51], [0.84, 0.85, 0.83, 0.85, 0.86]).pvalue)
    assert tests.loc["accuracy", "diff_mean"] == pytest.approx(np.mean(treat_values) - 0.846)
    assert tests.loc["accuracy", "significant_holm"]
    assert tests.loc["accuracy_at_threshold", "diff_mean"] == 0 and not tests.loc["accuracy_at_threshold",
                                                                                  "significant_holm"]


def test_validation_auc_is_tested_on_the_validation_images_it_saw():
    base = tt.metrics_summary("b", {"auc": [0.80, 0.82, 0.81], "val_auc": [0.78, 0.80, 0.79]})
    treat = tt.metrics_summary("t", {"auc": [0.84, 0.83, 0.86], "val_auc": [0.83, 0.81, 0.86]})
    for summary in (base, treat):
        for fold in summary["folds"]:
            fold["n_val"] = 100  # the validation rows: half the test fold's 200 here
    tests = paired_tests({"base": base, "treat": treat},
                         [{"question": "q", "baseline": "base", "treatment": "treat"}]).set_index("metric")
    # Nadeau-Bengio with n_test = the validation images (100), n_train 800: not the test fold's 200.
    diff = np.array([0.05, 0.01, 0.07])
    t = diff.mean() / np.sqrt((1 / 3 + 100 / 800) * diff.var(ddof=1))
    assert tests.loc["val_auc", "p_nadeau_bengio"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    assert tests.loc["val_auc", "diff_mean"] == pytest.approx(diff.mean())
    test_diff = np.array([0.04, 0.01, 0.05])
    t = test_diff.mean() / np.sqrt((1 / 3 + 200 / 800) * test_diff.var(ddof=1))
    assert tests.loc["auc", "p_nadeau_bengio"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))


def test_paired_tests_leave_out_a_metric_neither_experiment_records():
    tests = paired_tests(summaries(), [{"question": "size", "baseline": "base", "treatment": "bigger"}])
    assert list(tests["metric"]) == ["auc", "accuracy", "f1"]
    assert tests["p_holm"].notna().all()


def test_paired_tests_name_the_bad_experiment_and_refuse_identical_configs():
    with pytest.raises(KeyError, match="treatment 'nope' is not an experiment"):
        paired_tests(summaries(), [{"question": "q", "baseline": "base", "treatment": "nope"}])
    same = {**summaries(), "copy": summaries()["base"]}
    with pytest.raises(ValueError, match="base and copy have identical configs"):
        paired_tests(same, [{"question": "q", "baseline": "base", "treatment": "copy"}])


def holdout_summaries() -> dict:
    reference = tt.metrics_summary("r", {"auc": [0.9, 0.9, 0.9], "pairwise_auc:gan": [0.95, 0.93, 0.94],
                                         "pairwise_auc:diffusion": [0.9, 0.9, 0.9]})
    # Test images per source and fold (n_test 200 in all): a pairwise AUC sees only real's and its source's.
    counts = {"n:real": [100, 100, 100], "n:gan": [50, 40, 60], "n:diffusion": [50, 60, 40]}
    holdout = tt.metrics_summary("h", {"auc": [0.8, 0.8, 0.8], "pairwise_auc:gan": [0.80, 0.85, 0.81],
                                       "pairwise_auc:diffusion": [0.9, 0.9, 0.9], "heldout_delta": [0.1, 0.05, 0.09],
                                       **counts},
                                 train_sources=["real", "diffusion"])
    return {"reference": reference, "no_gan": holdout}


def test_holdout_delta_is_in_source_minus_heldout_auc_on_the_left_out_source():
    table = holdout_tests(holdout_summaries(), "reference", SOURCES)
    assert len(table) == 1  # only gan was left out
    row = table.iloc[0]
    assert row["heldout_source"] == "gan" and row["baseline"] == "no_gan" and row["treatment"] == "reference"
    assert row["diff_mean"] == pytest.approx(np.mean([0.15, 0.08, 0.13]))
    assert row["in_source_auc"] == pytest.approx(0.94)
    assert row["heldout_auc"] == pytest.approx(np.mean([0.8, 0.85, 0.81]))
    assert bool(row["flag"])  # Δ 0.12 > 0.05
    # Nadeau-Bengio on the images that AUC saw: n_test = real + gan = 150 on average (not the fold's 200), n_train 800.
    diff = np.array([0.15, 0.08, 0.13])
    t = diff.mean() / np.sqrt((1 / 3 + 150 / 800) * diff.var(ddof=1))
    assert row["p_nadeau_bengio"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    with pytest.raises(KeyError, match="holdout_reference 'p2_missing'"):
        holdout_tests(holdout_summaries(), "p2_missing", SOURCES)


def test_attach_holdouts_adds_the_delta_to_the_holdout_row_only():
    tests = paired_tests(holdout_summaries(), [], holdout_reference="reference", sources=SOURCES)
    comparison = attach_holdouts(comparison_table(holdout_summaries()), tests).set_index("experiment")
    assert np.isnan(comparison.loc["reference", "delta_vs_reference"])
    assert comparison.loc["no_gan", "delta_vs_reference"] == pytest.approx(np.mean([0.15, 0.08, 0.13]))
    assert comparison.loc["no_gan", "holdout_reference"] == "reference"
    # One flag, the spec's: the reference's in-source AUC minus the hold-out's (not heldout_delta, within one model).
    assert [c for c in comparison.columns if c.endswith("flag")] == ["delta_vs_reference_flag"]
    assert comparison.loc["no_gan", "delta_vs_reference_flag"]
    markdown = comparison_markdown(comparison.reset_index(), "Phase 2")
    assert "Source hold-out" in markdown and "The reference (reference)" in markdown


def test_holdout_rows_name_the_hold_out_and_the_reference_in_both_twins():
    pairs = [{"question": "bigger", "baseline": "reference", "treatment": "bigger"}]
    summaries = {**holdout_summaries(), "bigger": tt.metrics_summary("b", {"auc": [0.91, 0.92, 0.9]}, image_size=128)}
    tests = paired_tests(summaries, pairs, metrics=["auc"], holdout_reference="reference", sources=SOURCES)
    rows = holdout_rows(tests)
    assert rows[["hold-out", "reference", "heldout_source"]].values.tolist() == [["no_gan", "reference", "gan"]]
    # Δ keeps its sign: the reference's in-source AUC minus the hold-out's AUC on the source it never saw.
    assert rows["diff_mean"].iloc[0] == pytest.approx(rows["in_source_auc"].iloc[0] - rows["heldout_auc"].iloc[0])
    lines = paired_tests_markdown(tests, "Phase 2").splitlines()
    pairs_header = lines.index("| question | baseline | treatment | metric | diff_mean | diff_ci_low | diff_ci_high "
                               "| p_paired_t | p_nadeau_bengio | p_wilcoxon | p_holm | significant_holm |")
    holdout_header = next(i for i, line in enumerate(lines) if line.startswith("| question | hold-out | reference |"))
    # Under baseline / treatment the hold-out row would read backwards: it sits under its own headings only.
    assert not any("no_gan" in line for line in lines[pairs_header:holdout_header])
    assert lines[holdout_header + 2].startswith(
        "| source-specific features (gan held out) | no_gan | reference | gan |")


def per_source_summaries() -> dict:
    # Test images per source and fold (n_test 200 in all): a pairwise AUC sees only real's and its source's.
    counts = {"n:real": [100, 100, 100], "n:gan": [50, 40, 60], "n:diffusion": [50, 60, 40]}
    base = tt.metrics_summary("b", {"auc": [0.80, 0.82, 0.78], "pairwise_auc:gan": [0.80, 0.82, 0.78],
                                    "pairwise_auc:diffusion": [0.90, 0.91, 0.89], **counts})
    crop = tt.metrics_summary("c", {"auc": [0.85, 0.86, 0.84], "pairwise_auc:gan": [0.90, 0.93, 0.86],
                                    "pairwise_auc:diffusion": [0.88, 0.90, 0.89], **counts}, face_crop=True)
    aug = tt.metrics_summary("a", {"auc": [0.81, 0.84, 0.79], "pairwise_auc:gan": [0.81, 0.84, 0.78],
                                   "pairwise_auc:diffusion": [0.91, 0.90, 0.90], **counts}, augment=True)
    # Evaluated on real and gan only (eval_sources): it has no diffusion AUC to compare.
    gan_only = tt.metrics_summary("g", {"auc": [0.84, 0.85, 0.83], "pairwise_auc:gan": [0.84, 0.85, 0.83],
                                        "n:real": [100] * 3, "n:gan": [50, 40, 60]}, image_size=128)
    return {"base": base, "crop": crop, "aug": aug, "gan_only": gan_only}


def test_per_source_rows_test_each_fake_source_on_the_images_its_auc_sees_with_holm_per_source():
    pairs = [{"question": f"{name}", "baseline": "base", "treatment": name} for name in ("crop", "aug", "gan_only")]
    assert paired_tests(per_source_summaries(), pairs, metrics=["auc"], sources=SOURCES)["metric"].eq("auc").all()
    tests = paired_tests(per_source_summaries(), pairs, metrics=["auc"], sources=SOURCES, per_source=True)
    rows = tests[tests["metric"].str.startswith("pairwise_auc:")].set_index(["treatment", "metric"])
    assert sorted(rows.index) == [("aug", "pairwise_auc:diffusion"), ("aug", "pairwise_auc:gan"),
                                  ("crop", "pairwise_auc:diffusion"), ("crop", "pairwise_auc:gan"),
                                  ("gan_only", "pairwise_auc:gan")]  # no diffusion AUC on one side: not tested
    gan = rows.loc[("crop", "pairwise_auc:gan")]
    diff = np.array([0.10, 0.11, 0.08])
    assert gan["diff_mean"] == pytest.approx(diff.mean())
    # Nadeau-Bengio on the images that AUC saw: real + gan = 150 on average (not the fold's 200), n_train 800.
    t = diff.mean() / np.sqrt((1 / 3 + 150 / 800) * diff.var(ddof=1))
    assert gan["p_nadeau_bengio"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    # Holm within each source's family: gan has three pairs, diffusion two.
    for metric, size in (("pairwise_auc:gan", 3), ("pairwise_auc:diffusion", 2)):
        family = tests[tests["metric"] == metric].sort_values("p_nadeau_bengio")
        stepped = np.maximum.accumulate(family["p_nadeau_bengio"].to_numpy() * np.arange(size, 0, -1))
        np.testing.assert_allclose(family["p_holm"], np.minimum(stepped, 1.0))
    lines = paired_tests_markdown(tests, "Phase 2").splitlines()
    title = lines.index("# Which sources each change helps: AUC of the real images against one fake source")
    assert not any("pairwise_auc" in line for line in lines[:title])  # not mixed into the headline table
    assert any(line.startswith("| crop | base | crop | gan | ") for line in lines[title:])


def test_markdown_twins_show_mean_std_and_ci():
    table = comparison_table(summaries())
    markdown = comparison_markdown(table, "Phase 1")
    assert markdown.startswith("# Phase 1\n")
    assert f"| base | resnet18 | 64 | {format_ci(table.iloc[0], 'auc', with_std=True)} |" in markdown
    assert to_markdown(pd.DataFrame({"a": [0.123456, np.nan]}), "T").splitlines()[-2:] == ["| 0.1235 |", "|  |"]


def test_a_difference_interval_of_a_unit_interval_metric_stays_within_minus_one_and_one():
    # Two folds of wildly different F1 differences: the t-interval's half-width exceeds 1.
    base = tt.metrics_summary("b", {"auc": [0.5, 0.6], "f1": [0.0, 0.9]})
    treat = tt.metrics_summary("t", {"auc": [0.6, 0.7], "f1": [0.9, 0.05]})
    tests = paired_tests({"b": base, "t": treat}, [{"question": "q", "baseline": "b", "treatment": "t"}],
                         metrics=["f1"]).iloc[0]
    assert tests["diff_ci_low"] == -1.0 and tests["diff_ci_high"] == 1.0
    assert -1.0 <= tests["paired_t_ci_low"] and tests["paired_t_ci_high"] <= 1.0
