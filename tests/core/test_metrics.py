"""Tests for deepfake_kedro.metrics."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from deepfake_kedro.metrics import (
    binary_metrics,
    equal_error_rate,
    grouped_bootstrap_ci,
    metric_range,
    per_source_metrics,
    safe_auc,
    summarize,
)


def _random_scores(n=200, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    prob = np.clip(0.3 * y + rng.uniform(0, 0.7, size=n), 0, 1)
    return y, prob


def test_eer_perfectly_separable_is_zero():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.0


def test_eer_perfectly_inverted_is_one():
    assert equal_error_rate([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 1.0


def test_eer_interpolates_between_bracketing_points():
    # Descending scores: 0.8 P, 0.6 P, 0.5 N, 0.4 P, 0.2 N.
    # ROC points (FPR, FNR): (0, 1/3) then (1/2, 1/3) bracket the crossing;
    # FNR - FPR goes 1/3 -> -1/6, so frac = (1/3) / (1/2) = 2/3, EER = 2/3 * 1/2 = 1/3.
    y = [0, 0, 1, 1, 1]
    s = [0.2, 0.5, 0.4, 0.6, 0.8]
    assert equal_error_rate(y, s) == pytest.approx(1 / 3)


def test_eer_exact_crossing_on_roc_point():
    # Descending: 0.9 P, 0.6 N, 0.4 P, 0.1 N -> ROC point (FPR 1/2, FNR 1/2).
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == pytest.approx(0.5)


def test_eer_single_class_is_nan():
    assert math.isnan(equal_error_rate([1, 1, 1], [0.2, 0.5, 0.9]))


def test_binary_metrics_match_sklearn():
    y, prob = _random_scores()
    threshold = 0.45
    pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()

    out = binary_metrics(y, prob, threshold=threshold)

    assert out["auc"] == pytest.approx(roc_auc_score(y, prob))
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert out["f1"] == pytest.approx(f1_score(y, pred))
    assert out["average_precision"] == pytest.approx(average_precision_score(y, prob))
    assert out["eer"] == pytest.approx(equal_error_rate(y, prob))
    assert (out["tn"], out["fp"], out["fn"], out["tp"]) == (tn, fp, fn, tp)
    assert out["tn"] + out["fp"] + out["fn"] + out["tp"] == len(y)
    # The calibration scores, against their definitions: mean squared error and mean negative log-likelihood.
    assert out["brier"] == pytest.approx(np.mean((prob - y) ** 2))
    assert out["log_loss"] == pytest.approx(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))


def test_binary_metrics_threshold_is_inclusive():
    out = binary_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert (out["tn"], out["fp"], out["fn"], out["tp"]) == (0, 1, 0, 1)


def test_binary_metrics_single_class_gives_nan_ranking_metrics():
    out = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert math.isnan(out["auc"])
    assert math.isnan(out["average_precision"])
    assert math.isnan(out["eer"])
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert (out["tn"], out["fp"], out["fn"], out["tp"]) == (2, 1, 0, 0)
    # Calibration is defined on one class too: a real image scored 0.7 costs 0.49.
    assert out["brier"] == pytest.approx((0.1**2 + 0.7**2 + 0.2**2) / 3)
    assert math.isfinite(out["log_loss"])


def test_per_source_metrics_counts_by_hand():
    sources = np.array(["ffhq", "ffhq", "ffhq", "ffhq", "sd", "sd", "sd", "gan", "gan"])
    prob = np.array([0.1, 0.6, 0.2, 0.3, 0.9, 0.4, 0.7, 0.95, 0.55])
    y = (sources != "ffhq").astype(int)

    out = per_source_metrics(y, prob, sources, real_sources=["ffhq"], threshold=0.5)

    assert out["n:ffhq"] == 4 and out["n:sd"] == 3 and out["n:gan"] == 2
    assert out["false_alarm_rate:ffhq"] == pytest.approx(1 / 4)  # only 0.6
    assert out["detection_rate:sd"] == pytest.approx(2 / 3)  # 0.9, 0.7
    assert out["detection_rate:gan"] == pytest.approx(1.0)
    # sd vs real: 0.9 and 0.7 beat all 4 real; 0.4 beats 0.1, 0.2, 0.3 -> (4 + 4 + 3) / 12.
    assert out["pairwise_auc:sd"] == pytest.approx(11 / 12)
    # gan vs real: 0.95 beats all 4, 0.55 beats 3 of 4 -> 7 / 8.
    assert out["pairwise_auc:gan"] == pytest.approx(7 / 8)
    assert out["pairwise_auc_var"] == pytest.approx(np.var([11 / 12, 7 / 8], ddof=1))
    assert "detection_rate:ffhq" not in out and "false_alarm_rate:sd" not in out


def test_per_source_pairwise_auc_matches_sklearn_subset():
    rng = np.random.default_rng(3)
    sources = rng.choice(["real_a", "real_b", "f1", "f2", "f3"], size=150)
    y = (~np.isin(sources, ["real_a", "real_b"])).astype(int)
    prob = np.clip(0.25 * y + rng.uniform(0, 0.75, size=150), 0, 1)

    out = per_source_metrics(y, prob, sources, real_sources=["real_a", "real_b"])

    aucs = []
    for fake in ["f1", "f2", "f3"]:
        mask = np.isin(sources, ["real_a", "real_b", fake])
        aucs.append(roc_auc_score(y[mask], prob[mask]))
        assert out[f"pairwise_auc:{fake}"] == pytest.approx(aucs[-1])
    assert out["pairwise_auc_var"] == pytest.approx(np.var(aucs, ddof=1))
    for real in ["real_a", "real_b"]:
        assert out[f"false_alarm_rate:{real}"] == pytest.approx(
            np.mean(prob[sources == real] >= 0.5)
        )


def test_per_source_single_fake_source_has_nan_variance():
    out = per_source_metrics([0, 1], [0.2, 0.8], ["real", "fake"], real_sources=["real"])
    assert out["pairwise_auc:fake"] == 1.0
    assert math.isnan(out["pairwise_auc_var"])


def test_per_source_rejects_labels_contradicting_sources():
    with pytest.raises(ValueError):
        per_source_metrics([1, 1], [0.2, 0.8], ["real", "fake"], real_sources=["real"])


def test_summarize_t_interval_by_hand():
    values = [0.81, 0.85, np.nan, 0.79, 0.88, 0.84]
    clean = np.array([0.81, 0.85, 0.79, 0.88, 0.84])
    mean, std = clean.mean(), clean.std(ddof=1)
    half = stats.t.ppf(0.975, df=4) * std / np.sqrt(5)

    out = summarize(values)

    assert out["n"] == 5
    assert out["mean"] == pytest.approx(mean)
    assert out["std"] == pytest.approx(std)
    assert out["ci_low"] == pytest.approx(mean - half)
    assert out["ci_high"] == pytest.approx(mean + half)


def test_summarize_confidence_changes_width():
    values = [1.0, 2.0, 4.0]
    half90 = stats.t.ppf(0.95, df=2) * np.std(values, ddof=1) / np.sqrt(3)
    out = summarize(values, confidence=0.90)
    assert out["ci_high"] - out["ci_low"] == pytest.approx(2 * half90)


def test_summarize_truncates_a_bounded_metric_s_interval_to_its_range():
    aucs = [1.0, 0.99, 1.0, 0.96, 1.0]
    low, high = stats.t.interval(0.95, df=4, loc=np.mean(aucs), scale=np.std(aucs, ddof=1) / np.sqrt(5))
    assert high > 1.0  # the raw t-interval leaves the range an AUC can take
    raw, bounded = summarize(aucs), summarize(aucs, bounds=metric_range("auc"))
    assert raw["ci_high"] == pytest.approx(high)
    assert bounded["ci_high"] == 1.0 and bounded["ci_low"] == pytest.approx(low)
    assert bounded["mean"] == raw["mean"] and bounded["std"] == raw["std"]


@pytest.mark.parametrize("name", ["auc", "eer", "pairwise_auc:insight", "detection_rate:text2img", "tpr_at_threshold",
                                  "false_alarm_rate:wiki", "balanced_accuracy", "recall:wiki", "threshold"])
def test_rates_areas_and_probabilities_lie_in_the_unit_interval(name):
    assert metric_range(name) == (0.0, 1.0)


@pytest.mark.parametrize("name", ["n_train", "n:wiki", "tp", "best_epoch", "train_val_gap", "pairwise_auc_var"])
def test_counts_gaps_and_variances_are_not_truncated(name):
    assert metric_range(name) is None


def test_summarize_degenerate_cases():
    one = summarize([0.7, np.nan])
    assert one["n"] == 1 and one["mean"] == 0.7
    assert math.isnan(one["std"]) and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])

    const = summarize([0.1, 0.1, 0.1])
    assert const["std"] == 0.0
    assert const["ci_low"] == const["ci_high"] == const["mean"] == pytest.approx(0.1)


def _grouped_data(n_groups=40, per_group=10, seed=5):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    # Each group (e.g. one video) is all real or all fake and shares an offset,
    # so images inside a group are strongly correlated.
    y = groups % 2
    offset = rng.normal(0, 1.0, size=n_groups)[groups]
    prob = 1 / (1 + np.exp(-(1.0 * y + offset + rng.normal(0, 0.3, size=y.size))))
    return y, prob, groups


def test_grouped_bootstrap_deterministic_and_contains_point_auc():
    y, prob, groups = _grouped_data()
    a = grouped_bootstrap_ci(y, prob, groups, n_boot=200, seed=11)
    b = grouped_bootstrap_ci(y, prob, groups, n_boot=200, seed=11)
    c = grouped_bootstrap_ci(y, prob, groups, n_boot=200, seed=12)
    assert a == b
    assert a != c
    assert a[0] < roc_auc_score(y, prob) < a[1]


def test_grouped_bootstrap_resamples_whole_groups():
    y, prob, groups = _grouped_data(n_groups=8, per_group=4)
    row_of = {p: i for i, p in enumerate(prob)}
    seen = []

    def spy(y_b, p_b):
        rows = np.array([row_of[p] for p in p_b])
        counts = np.bincount(rows, minlength=y.size).reshape(8, 4)
        # Every row of a drawn group appears exactly as often as the group was drawn.
        assert np.all(counts == counts[:, :1])
        assert counts.sum() == y.size
        seen.append(counts[:, 0])
        return roc_auc_score(y_b, p_b)

    grouped_bootstrap_ci(y, prob, groups, metric=spy, n_boot=50, seed=0)
    assert len(seen) >= 45  # a few single-class resamples may be skipped
    assert any(np.any(c == 0) for c in seen)  # resampling actually happens


def test_grouped_bootstrap_invariant_to_duplicating_rows_within_groups():
    # Doubling every row keeps each resample's AUC unchanged only if groups are drawn whole.
    y, prob, groups = _grouped_data(n_groups=30, per_group=6)
    base = grouped_bootstrap_ci(y, prob, groups, n_boot=200, seed=4)
    doubled = grouped_bootstrap_ci(
        np.repeat(y, 2), np.repeat(prob, 2), np.repeat(groups, 2), n_boot=200, seed=4
    )
    assert doubled == pytest.approx(base)


def test_grouped_bootstrap_widens_when_rows_are_grouped():
    # Treating 400 correlated images as independent understates uncertainty;
    # resampling the 40 groups must give a clearly wider interval.
    y, prob, groups = _grouped_data(n_groups=40, per_group=10)
    per_row = grouped_bootstrap_ci(y, prob, np.arange(y.size), n_boot=200, seed=0)
    per_group = grouped_bootstrap_ci(y, prob, groups, n_boot=200, seed=0)
    assert per_group[1] - per_group[0] > 2 * (per_row[1] - per_row[0])


def test_grouped_bootstrap_skips_single_class_resamples():
    # Two groups, one per class: half the resamples hold a single class and must be skipped.
    calls = []

    def spy(y_b, p_b):
        assert set(np.unique(y_b)) == {0, 1}
        calls.append(1)
        return roc_auc_score(y_b, p_b)

    low, high = grouped_bootstrap_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], ["a", "a", "b", "b"],
                                     metric=spy, n_boot=100, seed=0)
    assert 0 < len(calls) < 100
    assert low == high == 1.0


def test_safe_auc_is_sklearns_auc_or_nan_for_one_class():
    y, prob = _random_scores()
    assert safe_auc(y, prob) == pytest.approx(roc_auc_score(y, prob))
    assert math.isnan(safe_auc(np.ones(5), np.linspace(0, 1, 5)))
    assert math.isnan(safe_auc([], []))


def test_multiclass_metrics_of_a_hand_made_three_source_table_match_sklearn_and_hand_counts():
    from sklearn.metrics import balanced_accuracy_score

    from deepfake_kedro.metrics import multiclass_metrics, normalized_confusion

    classes = ["real", "text2img", "inpainting", "insight"]
    truth = ["real"] * 4 + ["text2img"] * 3 + ["inpainting"] * 3 + ["insight"] * 2
    called = ["real", "real", "real", "text2img", "text2img", "text2img", "inpainting", "inpainting", "real",
              "inpainting", "insight", "insight"]
    y_true = np.array([classes.index(c) for c in truth])
    y_pred = np.array([classes.index(c) for c in called])
    got = multiclass_metrics(y_true, y_pred, classes)
    # By hand: recalls 3/4, 2/3, 2/3, 2/2.
    assert [got[f"recall:{c}"] for c in classes] == pytest.approx([0.75, 2 / 3, 2 / 3, 1.0])
    assert got["balanced_accuracy"] == pytest.approx((0.75 + 2 / 3 + 2 / 3 + 1.0) / 4)
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    # F1 per class by hand: real 2*(3/4)(3/4)/(3/2)=0.75, text2img 2/3, inpainting 2/3, insight 1.
    assert got["macro_f1"] == pytest.approx((0.75 + 2 / 3 + 2 / 3 + 1.0) / 4)
    matrix = normalized_confusion(y_true, y_pred, classes)
    np.testing.assert_allclose(matrix, confusion_matrix(y_true, y_pred, normalize="true"))
    np.testing.assert_allclose(matrix[2], [1 / 3, 0, 2 / 3, 0])
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_multiclass_metrics_leave_a_class_missing_from_truth_and_predictions_out_of_macro_f1():
    from deepfake_kedro.metrics import multiclass_metrics

    got = multiclass_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["real", "a", "b"])
    assert math.isnan(got["recall:b"])
    assert got["macro_f1"] == pytest.approx(f1_score([0, 0, 1, 1], [0, 1, 1, 1], labels=[0, 1], average="macro"))
    # By hand: real 2*(1)(1/2)/(3/2) = 2/3, a 2*(2/3)(1)/(5/3) = 4/5; b, absent from both, does not count.
    assert got["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    perfect = multiclass_metrics([0, 0, 1, 2], [0, 0, 1, 2], ["real", "a", "b", "c"])
    assert perfect["macro_f1"] == perfect["balanced_accuracy"] == 1.0
    # A class only predicted counts, as F1 = 0: a false alarm on it is an error.
    spurious = multiclass_metrics([0, 0, 1, 1], [0, 2, 1, 1], ["real", "a", "b", "c"])
    assert spurious["macro_f1"] == pytest.approx(f1_score([0, 0, 1, 1], [0, 2, 1, 1], labels=[0, 1, 2],
                                                          average="macro", zero_division=0.0))
    assert spurious["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_multiclass_metrics_of_no_rows_are_nan_not_an_error():
    from deepfake_kedro.metrics import multiclass_metrics

    got = multiclass_metrics([], [], ["a", "b"])
    assert set(got) == {"balanced_accuracy", "macro_f1", "accuracy", "recall:a", "recall:b"}
    assert all(math.isnan(v) for v in got.values())


def test_multiclass_auc_is_sklearn_one_vs_rest_and_nan_without_every_class():
    from deepfake_kedro.metrics import multiclass_auc

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=30)
    labels = np.arange(30) % 3
    assert multiclass_auc(labels, probabilities) == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    assert multiclass_auc(labels % 2, probabilities[:, :2] / probabilities[:, :2].sum(1, keepdims=True)) == \
        pytest.approx(roc_auc_score(labels % 2, probabilities[:, 1] / probabilities[:, :2].sum(1)))
    assert math.isnan(multiclass_auc(labels % 2, probabilities))
