"""`kedro run --env demo --pipelines attribution` on a shrunk demo, through Kedro's session and catalog."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepfake_kedro.datasets import ReportSectionDataset

TINY_ATTRIBUTION = {
    "defaults": {"cv_folds": 3, "epochs": 1, "scheduler": {"type": "cosine_annealing", "T_max": 1}},
    "attribution": {"model": {"backbone": "simple_cnn", "cnn_preset": "micro", "pretrained": False, "image_size": 16,
                              "subsample": 1.0, "epochs": 1, "scheduler": {"T_max": 1}}, "gradcam_images": 4},
}


def test_attribution_writes_both_approaches_metrics_confusion_matrices_and_their_comparison(tiny_demo):
    tiny_demo.edit_yaml("conf/demo/parameters.yml", {"defaults": TINY_ATTRIBUTION["defaults"]})
    tiny_demo.edit_yaml("conf/demo/parameters_attribution.yml", {"attribution": TINY_ATTRIBUTION["attribution"]})
    tiny_demo.run("attribution")
    out = tiny_demo.path / "data/demo"
    classes = ["real", "text2img", "inpainting", "insight"]
    for approach in ("flat", "hierarchical"):
        folder = out / "08_reporting/attribution" / approach
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["classes"] == classes
        end = metrics["views"]["end_to_end"]
        assert end["balanced_accuracy"]["n"] == 3 and 0 <= end["balanced_accuracy"]["mean"] <= 1
        confusion = pd.read_csv(folder / "confusion_matrix.csv").set_index("true")
        assert list(confusion.columns) == classes
        np.testing.assert_allclose(confusion.sum(axis=1), 1.0)
        fold_metrics = pd.read_csv(folder / "fold_metrics.csv")
        oof = pd.read_parquet(out / "07_model_output/attribution" / approach / "oof_predictions.parquet")
        fold_table = pd.read_parquet(out / "05_model_input/fold_table.parquet")
        assert sorted(oof["path"]) == sorted(fold_table["path"])  # every image predicted once, out of fold
        end_rows = fold_metrics[fold_metrics["view"] == "end_to_end"].set_index("fold")
        for fold, of_fold in oof.groupby("fold"):
            correct = of_fold["true"] == of_fold["pred"]
            assert end_rows.loc[fold, "accuracy"] == pytest.approx(correct.mean())
    hierarchical = json.loads((out / "08_reporting/attribution/hierarchical/metrics.json").read_text())
    assert set(hierarchical["views"]) == {"end_to_end", "level1", "level2", "level3_diffusion"}
    oof = pd.read_parquet(out / "07_model_output/attribution/hierarchical/oof_predictions.parquet")
    assert (oof.loc[oof["pred:level1"] == "real", "pred"] == "real").all()
    assert (oof.loc[oof["pred:level1"] == "fake", "pred"] != "real").all()
    tests = pd.read_csv(out / "08_reporting/attribution/paired_tests.csv")
    assert tests["metric"].tolist() == ["balanced_accuracy", "macro_f1"] and tests["p_holm"].notna().all()
    assert (out / "08_reporting/attribution/confusion_matrices.png").stat().st_size > 0
    assert (out / "08_reporting/attribution/gradcam_predicted_class.png").stat().st_size > 0
    section = ReportSectionDataset(str(out / "08_reporting/sections/attribution")).load()
    assert section.name == "attribution" and section.table["metric"].tolist() == ["balanced_accuracy", "macro_f1"]
    # Four models (flat, level 1, level 2, level 3 of the diffusion family), three folds each.
    assert len(list((out / "06_models/attribution_runs").glob("*/fold_*/meta.json"))) == 12


def test_attribution_is_registered_by_name_as_namespaced_groups_outside_the_default_run():
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    from tests.conftest import PROJECT_ROOT

    bootstrap_project(PROJECT_ROOT)
    attribution = pipelines["attribution"].only_nodes_with_namespaces(["attribution"])
    assert {n.namespace for n in attribution.nodes} == {"attribution", "attribution.flat", "attribution.hierarchical"}
    foreign = [(n.name, o) for n in attribution.nodes for o in n.outputs
               if "." in o and not o.startswith("attribution.")]
    assert foreign == []
    assert not any(n.namespace and n.namespace.startswith("attribution") for n in pipelines["__default__"].nodes)


def test_the_report_section_states_the_chance_level_in_its_caption_and_table(tmp_path):
    from deepfake_kedro.attribution import compare_approaches
    from deepfake_kedro.pipelines.attribution.nodes import report_section
    from tests.core.test_attribution import perfect_evaluation

    flat_metrics, flat = perfect_evaluation(tmp_path / "flat", "flat")
    hierarchical_metrics, hierarchical = perfect_evaluation(tmp_path / "hierarchical", "hierarchical")
    section = report_section(flat, hierarchical, compare_approaches(flat_metrics, hierarchical_metrics))
    assert "chance: a guess's balanced accuracy, 1/4 = 0.250" in section.caption
    assert section.table.set_index("metric").loc["balanced_accuracy", "chance"] == "0.250"
