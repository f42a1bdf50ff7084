"""Figures return a Figure with the expected axes, titles and labels, drawn from the table passed in."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from deepfake_kedro.figures import (
    attention_bars,
    confidence_histograms,
    cost_vs_auc,
    image_gallery,
    learning_curves,
    metadata_distributions,
    metric_bars,
    reliability_diagram,
    scaling_curves,
    source_effects,
    source_heatmap,
)
from tests import tiny_tables as tt


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_metric_bars_one_axis_per_metric_with_the_means_written_on_the_bars():
    figure = metric_bars(tt.comparison(["a", "b"], [0.8123, 0.7]), title="Phase 1")
    assert [ax.get_title() for ax in figure.axes] == ["auc (mean, 95% CI)", "accuracy (mean, 95% CI)",
                                                      "f1 (mean, 95% CI)"]
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["a", "b"]
    assert "0.812" in [t.get_text() for t in figure.axes[0].texts]
    assert figure._suptitle.get_text() == "Phase 1"


def test_source_heatmap_one_column_per_fake_source_and_annotated_cells():
    figure = source_heatmap(tt.comparison(["a", "b"], [0.8, 0.7]), "per-source AUC")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["real vs gan", "real vs diffusion"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.texts] == ["0.810", "0.790", "0.710", "0.690"]


def test_source_effects_one_row_per_pair_one_column_per_source_and_a_star_where_holm_says_so():
    tests = pd.DataFrame([
        {"question": "face crop", "baseline": "b", "treatment": "c", "metric": "pairwise_auc:gan", "diff_mean": 0.1,
         "diff_ci_low": 0.05, "diff_ci_high": 0.15, "p_holm": 0.01},
        {"question": "face crop", "baseline": "b", "treatment": "c", "metric": "pairwise_auc:diffusion",
         "diff_mean": -0.02, "diff_ci_low": -0.06, "diff_ci_high": 0.02, "p_holm": 0.4},
        {"question": "", "baseline": "b", "treatment": "a", "metric": "pairwise_auc:gan", "diff_mean": 0.01,
         "diff_ci_low": -0.01, "diff_ci_high": 0.03, "p_holm": 0.3},
        {"question": "face crop", "baseline": "b", "treatment": "c", "metric": "auc", "diff_mean": 0.05,
         "diff_ci_low": 0.0, "diff_ci_high": 0.1, "p_holm": 0.04},
    ])
    ax = source_effects(tests, "Phase 2").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["real vs gan", "real vs diffusion"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["face crop", "a vs b"]
    assert [t.get_text() for t in ax.texts] == ["+0.100*\n[+0.050, +0.150]", "-0.020\n[-0.060, +0.020]",
                                                "+0.010\n[-0.010, +0.030]"]  # the pair a-b has no diffusion row
    # Centred on no change, the colour scale is symmetric.
    low, high = ax.images[0].get_clim()
    assert low == -high
    empty = source_effects(tests[tests["metric"] == "auc"])
    assert "no per-source tests" in empty.axes[0].texts[0].get_text()


def test_cost_vs_auc_two_log_axes_one_legend_entry_per_experiment():
    table = pd.DataFrame({"experiment": ["x", "y"], "params_m": [1.0, 10.0], "gflops": [0.1, 2.0],
                          "auc_mean": [0.8, 0.9], "auc_ci_low": [0.75, 0.85], "auc_ci_high": [0.85, 0.95]})
    figure = cost_vs_auc(table, "cost")
    assert [ax.get_xscale() for ax in figure.axes] == ["log", "log"]
    assert [ax.get_xlabel() for ax in figure.axes] == ["parameters (millions), log scale",
                                                       "GFLOPs per image, log scale"]
    # Each experiment named once, in the shared legend, with the same marker and colour on both axes.
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["x", "y"]
    left, right = ([line for line in ax.get_lines() if line.get_marker() != "_"] for ax in figure.axes)
    assert [(a.get_marker(), a.get_color()) for a in left] == [(b.get_marker(), b.get_color()) for b in right]
    assert [a.get_xdata()[0] for a in right] == [0.1, 2.0] and [a.get_ydata()[0] for a in left] == [0.8, 0.9]


def test_scaling_curves_one_line_per_model_in_percent():
    table = pd.DataFrame({"model": ["m1", "m1", "m2", "m2"], "subsample": [0.2, 1.0, 0.2, 1.0],
                          "auc_mean": [0.7, 0.8, 0.6, 0.9], "auc_ci_low": [0.6, 0.7, 0.5, 0.8],
                          "auc_ci_high": [0.8, 0.9, 0.7, 1.0]})
    ax = scaling_curves(table, "scaling").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m1", "m2"]
    np.testing.assert_allclose(np.asarray(ax.lines[0].get_xdata(), dtype=float), [20, 100])
    assert ax.get_title() == "scaling"


def test_learning_curves_train_and_val_lines_per_fold():
    histories = [pd.DataFrame({"fold": k, "epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.69, 0.6],
                               "train_auc": [0.6, 0.8], "val_auc": [0.55, 0.7]}) for k in range(3)]
    figure = learning_curves(histories, "lc")
    loss_ax, auc_ax = figure.axes
    assert len(loss_ax.lines) == len(auc_ax.lines) == 6
    assert [t.get_text() for t in auc_ax.get_legend().get_texts()] == ["fold 0", "fold 1", "fold 2"]
    assert auc_ax.get_ylim() == (0.4, 1.01)
    # A train AUC below chance (0.381, an early epoch) stays on the axis.
    histories[1].loc[0, "train_auc"] = 0.381
    assert learning_curves(histories, "lc").axes[1].get_ylim()[0] == pytest.approx(0.361)


def test_prediction_figures_one_panel_per_source_and_calibration_counts():
    predictions = pd.DataFrame({"source": ["real"] * 4 + ["gan"] * 4, "label": [0] * 4 + [1] * 4,
                                "prob": [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.4]})
    histograms = confidence_histograms(predictions, "conf")
    assert [ax.get_title() for ax in histograms.axes] == ["real (real, n=4)", "gan (fake, n=4)"]
    calibration, counts = reliability_diagram(predictions, n_bins=5).axes
    assert len(calibration.lines) == 2 and len(counts.patches) == 1  # the diagonal and the raw curve
    # As packaged: the calibrated probabilities get their own curve, Brier and count outline.
    both = reliability_diagram(predictions.assign(prob_calibrated=[0.1, 0.3, 0.3, 0.5, 0.5, 0.7, 0.9, 0.9]), 5)
    calibration, counts = both.axes
    legend = [t.get_text() for t in calibration.get_legend().get_texts()]
    # Brier by hand: squared errors 0.01, 0.09, 0.09, 0.25 (reals) and 0.25, 0.09, 0.01, 0.01 (fakes), mean 0.100.
    assert legend[2] == "calibrated on validation (as packaged): pooled Brier 0.100" and len(counts.patches) == 2
    # Bins of width 0.2: {0.1} and {0.3, 0.3} real, {0.5, 0.5} half fake, {0.7} and {0.9, 0.9} fake.
    np.testing.assert_allclose(calibration.lines[2].get_ydata(), [0, 0, 0.5, 1, 1], atol=1e-12)


def test_attention_bars_name_experiments_once_per_fingerprint_in_landscape_panels():
    names = [f"p2_{i:02d}" for i in range(16)] + ["p4a_cnn_100pct", "p4b_cnn_full"]
    attention = pd.DataFrame({
        "experiment": [f"phase2.{n}" for n in names[:16]] + ["phase4.top1_100pct", "phase4.top1_full"],
        "name": names, "fingerprint": [f"fp{i}" for i in range(16)] + ["fp3", "fp3"],
        "all": [0.1] * 18, "face_area": [0.05] * 18,
    })
    figure = attention_bars(attention)
    # 16 distinct models: two panels side by side, none of phase 4's slot names, the shared model once.
    assert len(figure.axes) == 2
    labels = [t.get_text() for ax in figure.axes for t in ax.get_yticklabels()]
    assert len(labels) == 16 and not any("top1" in label for label in labels)
    assert "p2_03 = p4a_cnn_100pct = p4b_cnn_full" in labels
    width, height = figure.get_size_inches()
    assert width > height


def test_attention_bars_and_gallery():
    attention = pd.DataFrame({"experiment": ["a", "b", "c"], "all": [0.3, 0.6, float("nan")],
                              "face_area": [0.1, 0.5, float("nan")]})
    ax = attention_bars(attention).axes[0]
    # The first experiment on top; each bar is the mass on the face, its tick the face's share of the input.
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["c (no scored CAM)", "b", "a"]
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.0, 0.6, 0.3])
    np.testing.assert_allclose(ax.collections[0].get_offsets()[1:, 0], [0.5, 0.1])
    gallery = image_gallery([np.zeros((8, 8, 3), np.uint8)] * 3, ["one", "two", "three"], "g", columns=2)
    assert len(gallery.axes) == 4
    assert [ax.get_title() for ax in gallery.axes[:3]] == ["one", "two", "three"]


def test_metadata_distributions_draw_every_source_even_where_their_values_coincide():
    # Three fakes with the same width, height and quality: overlaid histograms drew them on one bar.
    sources = ["fake_a", "fake_b", "fake_c", "real"]
    index = pd.DataFrame({"source": np.repeat(sources, [5, 5, 5, 3])})
    features = pd.DataFrame({"width": [128.0] * 15 + [96.0, 120.0, 160.0], "height": 128.0, "aspect": 1.0,
                             "bytes": np.arange(18.0) * 100, "jpeg_quality": [90.0] * 15 + [70.0, 80.0, 95.0]})
    figure = metadata_distributions(index, features)
    drawn = {}
    for ax in figure.axes:
        bars = [(c.patches[0].get_label(), sum(p.get_height() for p in c.patches)) for c in ax.containers]
        assert len(bars) <= 1, f"{len(bars)} sources share one panel: their equal bars hide each other"
        for source, images in bars:
            drawn.setdefault(source, []).append(images)
    # Each source in all five panels, every image counted once per panel.
    assert drawn == {"fake_a": [5] * 5, "fake_b": [5] * 5, "fake_c": [5] * 5, "real": [3] * 5}
