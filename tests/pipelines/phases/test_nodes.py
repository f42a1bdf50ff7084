"""Phase analysis node functions called as plain functions on tiny in-memory metrics summaries."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from deepfake_kedro.costs import model_cost
from deepfake_kedro.pipelines.phases.nodes import (
    analyse_scaling,
    choose_preprocessing,
    compare_costs,
    compare_experiments,
    compare_final_models,
)
from tests import tiny_tables as tt

DATA = {"sources": tt.SOURCES}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def summary(fingerprint: str, aucs: list[float], **config) -> dict:
    per_fold = {"auc": aucs, "accuracy": [a - 0.1 for a in aucs], "f1": [a - 0.2 for a in aucs],
                "pairwise_auc:gan": aucs, "pairwise_auc:diffusion": [a - 0.05 for a in aucs],
                "n:real": [100] * len(aucs), "n:gan": [50] * len(aucs), "n:diffusion": [50] * len(aucs)}
    return tt.metrics_summary(fingerprint, per_fold, **config)


def test_compare_experiments_tables_own_experiments_and_tests_pairs_across_phases():
    phase = {"title": "Phase 2", "comparisons": [
        {"question": "size", "baseline": "phase1.p1_a", "treatment": "p2_big"},
        {"question": "flip", "baseline": "p2_big", "treatment": "p2_flip"}]}
    comparison, comparison_md, tests, tests_md, bars, heatmap, effects = compare_experiments(
        phase, DATA, **{"phase1.p1_a": summary("a", [0.7, 0.72, 0.71]), "p2_big": summary("b", [0.8, 0.83, 0.81]),
                        "p2_flip": summary("c", [0.82, 0.84, 0.85])})
    assert list(comparison["experiment"]) == ["p2_big", "p2_flip"]  # earlier phases serve comparisons only
    auc = tests[tests["metric"] == "auc"].set_index("question")
    assert auc.loc["size", "diff_mean"] == pytest.approx(np.mean([0.1, 0.11, 0.10]))
    assert comparison_md.startswith("# Phase 2: comparison") and tests_md.startswith("# Phase 2: paired tests")
    assert bars._suptitle.get_text() == "Phase 2"
    assert heatmap.axes[0].get_title() == "Phase 2: per-source AUC"
    # Every pair is tested on each fake source too: which sources a change helps.
    per_source = tests[tests["metric"].str.startswith("pairwise_auc:")]
    assert sorted(zip(per_source["question"], per_source["metric"])) == [
        ("flip", "pairwise_auc:diffusion"), ("flip", "pairwise_auc:gan"),
        ("size", "pairwise_auc:diffusion"), ("size", "pairwise_auc:gan")]
    assert per_source["p_nadeau_bengio"].notna().all()
    assert effects.axes[0].get_title() == "Phase 2: which sources each change helps"


def test_compare_final_models_tests_each_fraction_against_the_full_run():
    phase = {"title": "Phase 4", "scaling": {"20pct": 0.2, "full": 1.0}}
    metrics = {"top1_20pct": {**summary("s", [0.7, 0.71, 0.69]), "experiment": "p4a_resnet18_20pct"},
               "top1_full": {**summary("f", [0.8, 0.82, 0.81]), "experiment": "p4b_resnet18_full"}}
    comparison, _, tests, _, _, _, _ = compare_final_models(phase, DATA, **metrics)
    assert list(comparison["experiment"]) == ["p4a_resnet18_20pct", "p4b_resnet18_full"]
    assert set(tests["question"]) == {"data scaling 20pct -> full (resnet18)"}
    assert set(tests["baseline"]) == {"p4a_resnet18_20pct"} and set(tests["treatment"]) == {"p4b_resnet18_full"}


def test_compare_final_models_tests_the_top_models_full_run_against_each_others():
    phase = {"title": "Phase 4", "scaling": {"20pct": 0.2, "100pct": 1.0}}
    models = {1: ("resnet18", [0.80, 0.82, 0.81]), 2: ("convnext_tiny", [0.78, 0.80, 0.77]),
              3: ("resnet50", [0.79, 0.83, 0.80])}
    metrics = {}
    for rank, (model, aucs) in models.items():
        for suffix, shift in (("20pct", -0.1), ("100pct", 0.0), ("full", 0.0)):
            slot = f"top{rank}_{suffix}"
            experiment = f"p4b_{model}_full" if suffix == "full" else f"p4a_{model}_{suffix}"
            metrics[slot] = {**summary(slot, [a + shift for a in aucs], backbone=model), "experiment": experiment}
    _, _, tests, _, _, _, _ = compare_final_models(phase, DATA, **metrics)
    final = tests[(tests["metric"] == "auc") & tests["question"].str.startswith("final model")].set_index("baseline")
    assert list(final.index) == ["p4b_convnext_tiny_full", "p4b_resnet50_full"]
    assert set(final["treatment"]) == {"p4b_resnet18_full"}
    assert final.loc["p4b_convnext_tiny_full", "diff_mean"] == pytest.approx(np.mean([0.02, 0.02, 0.04]))
    assert final.loc["p4b_resnet50_full", "question"] == "final model (full data): resnet18 vs resnet50"
    # Holm runs over the whole phase: three scaling tests and two final-model tests per metric.
    assert (tests["metric"] == "auc").sum() == 5


def test_choose_preprocessing_returns_json_safe_decisions():
    # Validation says the crop gains; the test folds say it loses: the node's default metric reads validation.
    tests = pd.concat([tt.paired_tests("p2_a", "p2_b", 0.04, 0.01).assign(metric="val_auc"),
                       tt.paired_tests("p2_a", "p2_b", -0.04, 0.01)],
                      ignore_index=True).assign(p_nadeau_bengio=0.005, diff_ci_low=np.nan)
    selection = {"start": {"image_size": 64, "face_crop": False},
                 "steps": [{"set": {"face_crop": True}, "baseline": "p2_a", "treatment": "p2_b"}]}
    choice = choose_preprocessing(tests, selection)
    assert choice["settings"] == {"image_size": 64, "face_crop": True} and choice["metric"] == "val_auc"
    assert choice["decisions"][0]["diff_ci"][0] is None  # nan -> null
    json.dumps(choice, allow_nan=False)


def test_compare_costs_reads_each_experiments_backbone_and_size():
    metrics = {"p3_cnn": summary("c", [0.7, 0.8], backbone="simple_cnn", cnn_preset="micro", image_size=32)}
    table, figure = compare_costs(**metrics)
    cost = model_cost("simple_cnn", 32, "micro")
    assert table.loc[0, "params_m"] == cost["params_m"] and table.loc[0, "gflops"] == cost["gflops"]
    assert table.loc[0, "auc_mean"] == pytest.approx(0.75) and table.loc[0, "model"].startswith("simple_cnn")
    assert len(figure.axes) == 2


def test_analyse_scaling_skips_the_full_run_and_averages_training_sizes():
    selection = {"selected": [{"model": "resnet18"}]}
    metrics = {"top1_20pct": {**summary("s", [0.7, 0.72], subsample=0.2), "experiment": "p4a_resnet18_20pct"},
               "top1_100pct": {**summary("h", [0.8, 0.82], subsample=1.0), "experiment": "p4a_resnet18_100pct"},
               "top1_full": {**summary("f", [0.8, 0.82], subsample=1.0), "experiment": "p4b_resnet18_full"}}
    table, figure = analyse_scaling(selection, **metrics)
    assert list(table["experiment"]) == ["p4a_resnet18_20pct", "p4a_resnet18_100pct"]
    assert list(table["subsample"]) == [0.2, 1.0] and table.loc[0, "n_train_mean"] == 800
    assert figure.axes[0].get_title() == "Phase 4: data scaling (resnet18)"
