"""Reporting node functions called as plain functions on tiny in-memory inputs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from deepfake_kedro.pipelines.phases.nodes import gather_explained
from deepfake_kedro.pipelines.reporting.nodes import build_report, collect_results, summarize_attention
from tests import tiny_tables as tt

# Slides live outside pyplot, so building a deck must not trip its "More than 20 figures" warning.
pytestmark = pytest.mark.filterwarnings("error:More than 20 figures")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_collect_results_separates_phase_tables_from_experiment_summaries():
    summary = tt.metrics_summary("fp", {"auc": [0.8, 0.9]})
    table, detailed = collect_results(phase1_comparison=tt.comparison(["a"], [0.8]),
                                      phase2_comparison=tt.comparison(["b", "c"], [0.7, 0.9]),
                                      phase1_metrics={"phase1.a": {**summary, "experiment": "a"}}, phase2_metrics={})
    assert list(table["phase"]) == ["phase1", "phase2", "phase2"]
    assert list(detailed) == ["phase1"] and detailed["phase1"]["a"]["fingerprint"] == "fp"


def test_summarize_attention_returns_the_table_and_its_figure():
    explained = pd.DataFrame({"pred_type": ["TP", "FP"], "source": ["fake", "real"], "cam_mass_face": [0.5, 0.1],
                              "face_area_share": [0.2, 0.2], "cam_flat": [False, False]})
    phase1 = gather_explained(**{"phase1.a": explained, "phase1.b": explained.iloc[:0]})
    phase2 = gather_explained(**{"phase2.c": explained.assign(cam_mass_face=[0.9, 0.7])})
    summary, figure = summarize_attention(phase1=phase1, phase2=phase2, phase3=gather_explained())
    assert list(summary["experiment"]) == ["phase1.a", "phase2.c"]
    assert summary.loc[0, "all"] == pytest.approx(0.3) and summary.loc[1, "all"] == pytest.approx(0.8)
    assert isinstance(figure, Figure)


def test_summarize_attention_with_no_explained_image_gives_an_empty_table_and_says_so(caplog):
    empty = gather_explained(**{"phase1.a": pd.DataFrame()})
    summary, figure = summarize_attention(phase1=empty, phase2=gather_explained())
    assert summary.empty and {"experiment", "all", "face_area"} <= set(summary.columns)
    assert "no experiment explained any image" in [text.get_text() for text in figure.axes[0].texts]
    assert "No experiment explained any image" in caplog.text


def test_build_report_reads_parameters_and_loads_only_the_overlays_it_shows():
    fields = tt.deck_fields(cv_folds=4)
    loaded = []

    def loader(key: str):
        def load() -> Image.Image:
            loaded.append(key)
            return Image.new("RGB", (16, 16), "blue")
        return load

    overlays = {f"img_{i:02d}": loader(f"img_{i:02d}") for i in range(10)}
    slides = build_report(
        {"root": "data/01_raw/demo", "sources": fields["sources"]},
        {"cv_folds": 4, "seed": 7, "val_ratio": 0.2}, True,
        fields["fold_table"], fields["shortcut_audit"], fields["near_duplicates"], fields["preprocessing_choice"],
        fields["model_selection"], fields["model_costs"], fields["scaling"], fields["attention"],
        fields["benchmark"], overlays,
        **{f"{p}_comparison": t for p, t in fields["comparisons"].items()},
        **{f"{p}_tests": t for p, t in fields["tests"].items()},
    )
    assert loaded == [f"img_{i:02d}" for i in range(8)]
    texts = [tt.slide_text(slide) for slide in slides]
    assert "4-fold cross-validation" in texts[0] and "Data: data/01_raw/demo" in texts[0]
    assert "Caveat: results on the synthetic demo data" in texts[-1]
    assert any(t.startswith("Explainability: resnet18 (phase 4, full run)") for t in texts)


def test_a_demo_check_table_adds_its_slide_and_an_empty_one_adds_none():
    fields = tt.deck_fields(cv_folds=4)
    check = pd.DataFrame([{"effect": "face-local artefact", "expected": "adopted", "found": "adopted",
                           "estimate": 0.04, "ci_low": 0.02, "ci_high": 0.06, "p_holm": 0.01, "recovered": True},
                          {"effect": "data scaling", "expected": "rises", "found": "falls", "estimate": -0.01,
                           "ci_low": None, "ci_high": None, "p_holm": None, "recovered": False}])

    def deck(demo_check):
        return [tt.slide_text(slide) for slide in build_report(
            {"root": "data/01_raw/demo", "sources": fields["sources"]},
            {"cv_folds": 4, "seed": 7, "val_ratio": 0.2}, True,
            fields["fold_table"], fields["shortcut_audit"], fields["near_duplicates"], fields["preprocessing_choice"],
            fields["model_selection"], fields["model_costs"], fields["scaling"], fields["attention"],
            fields["benchmark"], {}, demo_check=demo_check,
            **{f"{p}_comparison": t for p, t in fields["comparisons"].items()},
            **{f"{p}_tests": t for p, t in fields["tests"].items()},
        )]

    with_check, without = deck(check), deck(check.iloc[:0])
    slide = [t for t in with_check if t.startswith("Demo: planted effects recovered?")]
    assert len(slide) == 1 and "recovered 1 of 2" in slide[0] and "face-local artefact" in slide[0]
    assert len(with_check) == len(without) + 1
