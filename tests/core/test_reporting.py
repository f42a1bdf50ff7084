"""The study's final tables and slide builders, on hand-made tables."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from deepfake_kedro.reporting import (
    attention_summary,
    auc_text,
    detailed_results,
    explained_images,
    figure_pixels,
    headline_table,
    model_comparison,
    significant_findings,
    table_slide,
    text_slide,
)
from tests import tiny_tables as tt


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_model_comparison_stacks_phases_with_phase_first():
    table = model_comparison({"phase1": tt.comparison(["a", "b"], [0.8, 0.7]),
                              "phase2": tt.comparison(["c"], [0.9])})
    assert list(table["phase"]) == ["phase1", "phase1", "phase2"]
    assert table.columns[0] == "phase" and list(table["experiment"]) == ["a", "b", "c"]
    assert table.loc[2, "auc_mean"] == 0.9


def test_model_comparison_of_tables_read_from_csv_warns_nothing(tmp_path):
    # pandas reads a CSV as one block per column; the phase comparisons have some 150 columns.
    wide = tt.comparison(["a", "b"], [0.8, 0.7])
    wide = pd.concat([wide, pd.DataFrame({f"metric_{i}": [0.1, 0.2] for i in range(150)})], axis=1)
    wide.to_csv(tmp_path / "comparison.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = model_comparison({"phase1": pd.read_csv(tmp_path / "comparison.csv")})
    assert list(table["phase"]) == ["phase1", "phase1"] and table.shape[1] == wide.shape[1] + 1


def test_detailed_results_group_by_phase_under_the_experiment_name():
    summary = tt.metrics_summary("fp", {"auc": [0.8, 0.9]})
    detailed = detailed_results({"phase4.top1_full": {**summary, "phase": "phase4", "experiment": "p4b_x_full"},
                                 "phase1.p1_a": summary})
    assert set(detailed) == {"phase4", "phase1"}
    assert detailed["phase4"]["p4b_x_full"]["namespace"] == "phase4.top1_full"
    assert detailed["phase1"]["phase1.p1_a"]["folds"][1]["auc"] == 0.9


def test_headline_table_and_auc_text_show_mean_and_ci():
    comparison = tt.comparison(["a"], [0.8123])
    table = headline_table(comparison)
    assert list(table.columns) == ["experiment", "backbone", "image_size", "auc", "accuracy (p ≥ 0.5)",
                                   "F1 (p ≥ 0.5)", "accuracy (val threshold)", "eer", "Brier"]
    assert table.loc[0, "auc"] == auc_text(comparison.iloc[0]) == "0.812 [0.782, 0.842]"
    assert table.loc[0, "accuracy (val threshold)"] == "0.732 [0.702, 0.762]"
    assert table.loc[0, "eer"] == "0.188 [0.158, 0.218]"
    assert table.loc[0, "Brier"] == "0.094 [0.064, 0.124]"
    # A comparison without threshold metrics (an older run) still gives a table.
    older = headline_table(comparison.drop(columns=[c for c in comparison if c.startswith("accuracy_at")]))
    assert "accuracy (val threshold)" not in older


def test_significant_findings_give_the_verdict_at_005():
    tests = pd.concat([tt.paired_tests("a", "b", 0.05, 0.01), tt.paired_tests("a", "c", -0.01, 0.3)])
    lines = significant_findings(tests)
    assert lines[0] == "a vs b: ΔAUC +0.050 [+0.030, +0.070], Holm p = 0.01 (significant)"
    assert lines[1].endswith("Holm p = 0.3 (not significant)")
    assert significant_findings(tests, metric="f1") == []


def test_attention_summary_takes_names_and_fingerprints_from_the_summaries():
    explained = {key: pd.DataFrame({"pred_type": ["TP"], "source": ["x"], "cam_mass_face": [0.2],
                                    "face_area_share": [0.1], "cam_flat": [False]})
                 for key in ("phase1.a", "phase4.top1_full")}
    summaries = {"phase1.a": {"experiment": "a", "fingerprint": "f1"},
                 "phase4.top1_full": {"experiment": "p4b_cnn_full", "fingerprint": "f2"}}
    summary = attention_summary(explained_images(explained), summaries)
    assert list(summary.columns[:3]) == ["experiment", "name", "fingerprint"]
    assert summary["name"].tolist() == ["a", "p4b_cnn_full"] and summary["fingerprint"].tolist() == ["f1", "f2"]


def test_attention_summary_means_by_prediction_type_source_and_overall():
    nan = float("nan")
    explained = {
        "phase1.a": pd.DataFrame({"pred_type": ["TP", "TP", "FN", "TN"], "source": ["x", "y", "y", "real"],
                                  "cam_mass_face": [0.2, 0.4, 0.9, nan], "face_area_share": [0.1, 0.3, 0.2, nan],
                                  "cam_flat": [False, False, False, True]}),
        "phase1.empty": pd.DataFrame({"pred_type": [], "source": [], "cam_mass_face": [], "face_area_share": [],
                                      "cam_flat": []}),
    }
    summary = attention_summary(explained_images(explained)).set_index("experiment")
    assert list(summary.index) == ["phase1.a"]
    row = summary.loc["phase1.a"]
    assert row["TP"] == pytest.approx(0.3) and row["FN"] == 0.9 and np.isnan(row["TN"])
    assert row["source:y"] == pytest.approx(0.65) and row["source:x"] == pytest.approx(0.2)
    assert row["all"] == pytest.approx(0.5) and row["face_area"] == pytest.approx(0.2)
    assert (row["n_images"], row["n_scored"], row["n_flat"]) == (4, 3, 1)
    stale = {"phase2.b": pd.DataFrame({"pred_type": ["TP"], "source": ["x"], "cam_mass_centre": [0.2]})}
    with pytest.raises(KeyError, match=r"phase2.b.*older version.*--pipelines phase2"):
        explained_images(stale)


def test_table_slide_rounds_fractions_and_keeps_counts_whole():
    slide = table_slide("T", pd.DataFrame({"n": [3, 40], "auc": [0.81234, np.nan]}), note="a note")
    text = tt.slide_text(slide)
    assert "0.812" in text and "40" in text and "40.000" not in text and "a note" in text


def test_table_slide_wraps_long_text_and_widens_its_column():
    finding = "not adopted (gain not significant (Holm p 0.971 >= 0.05)); " * 2
    slide = table_slide("T", pd.DataFrame({"effect": ["face crops", "nulls"], "found": [finding, "no gain"],
                                           "p": [0.5, 0.25]}))
    table = slide.axes[-1].tables[0]
    cells = table.get_celld()
    long_cell, short_cell = cells[1, 1], cells[2, 1]
    assert "\n" in long_cell.get_text().get_text()
    assert all(len(line) <= 44 for line in long_cell.get_text().get_text().split("\n"))
    # The wrapped row is taller than a one-line row; the text column is wider than the number column.
    assert long_cell.get_height() > 2 * short_cell.get_height()
    assert cells[0, 1].get_width() > 3 * cells[0, 2].get_width()


def test_text_slide_wraps_long_lines_into_bullets():
    slide = text_slide("Title", ["word " * 60, "short"])
    texts = [t.get_text() for t in slide.texts]
    assert texts[0] == "Title"
    assert texts[1].startswith("• word") and texts[2].startswith("  word") and texts[-1] == "• short"


def test_figure_pixels_renders_rgb_at_the_dpi_and_closes_the_figure():
    figure = plt.figure(figsize=(2, 1))
    pixels = figure_pixels(figure, dpi=50)
    assert pixels.shape == (50, 100, 3) and pixels.dtype == np.uint8
    assert not plt.fignum_exists(figure.number)
