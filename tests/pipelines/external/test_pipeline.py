"""`kedro run --env demo --pipelines external`: the demo's own external entry, generated on first use."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from deepfake_kedro.datasets import ReportSectionDataset
from deepfake_kedro.demo_data import GENERATOR_MARKER
from deepfake_kedro.report_sections import section_slides
from tests.pipelines.robustness.test_pipeline import MODEL, finish_tiny_experiment, write_study_index


def test_external_pipeline_scores_the_demo_external_set_and_writes_metrics_table_and_slide(kedro_project):
    finish_tiny_experiment(kedro_project)
    kedro_project.edit_yaml("conf/demo/parameters.yml", {"evaluation": {"external_models": [MODEL]}})
    removed_set = kedro_project.path / "data/demo/08_reporting/external/sets/removed_set/metrics.json"
    removed_set.parent.mkdir(parents=True)
    removed_set.write_text("{}")
    kedro_project.run("external")

    assert not removed_set.exists(), "a set no longer in evaluation.external must not keep its old metrics"
    root = kedro_project.path / "data/01_raw/demo_external"
    assert root.is_dir(), "the demo's external entry generates its tree on first use"
    reporting = kedro_project.path / "data/demo/08_reporting/external"
    metrics = json.loads((reporting / "sets/demo_external/metrics.json").read_text())
    tiny = metrics["models"][MODEL]
    n_files = sum(1 for p in root.rglob("*") if p.is_file() and p.name != GENERATOR_MARKER)
    assert tiny["n_images"] == n_files
    assert tiny["auc_ci_low"] <= tiny["auc"] <= tiny["auc_ci_high"]
    assert any(key.startswith("false_alarm_rate:") for key in tiny) and any(k.startswith("detection_rate:")
                                                                           for k in tiny)
    table = pd.read_csv(reporting / "external.csv")
    assert table[["set", "model"]].values.tolist() == [["demo_external", MODEL]]
    assert table.loc[0, "auc"] == tiny["auc"]
    section = ReportSectionDataset(str(kedro_project.path / "data/demo/08_reporting/sections/external")).load()
    assert section.name == "external" and len(section_slides(section)) == 2
    # Accuracy at each package threshold: the section keeps the rule they were chosen by.
    assert section.threshold_rule == tiny_metrics_rule(kedro_project) == "youden"
    assert metrics["left_out_study_copies"] == 0 and pd.read_csv(reporting / "study_copies.csv").empty

    # One of the set's images is also in the study's data (a shared download): left out, counted and listed.
    shared = sorted(str(p.relative_to(root)) for p in (root / "wiki").rglob("*.jpg"))[0]
    (kedro_project.path / "data/01_raw/demo/wiki/shared").mkdir(parents=True)
    shutil.copy(root / shared, kedro_project.path / "data/01_raw/demo/wiki/shared/copy.jpg")
    write_study_index(kedro_project)
    kedro_project.run("external")
    metrics = json.loads((reporting / "sets/demo_external/metrics.json").read_text())
    assert metrics["left_out_study_copies"] == 1 and metrics["models"][MODEL]["n_images"] == n_files - 1
    copies = pd.read_csv(reporting / "study_copies.csv")
    assert copies.to_dict(orient="records") == [{"set": "demo_external", "path": shared,
                                                  "study_path": "wiki/shared/copy.jpg"}]
    assert "Left out as byte-identical copies of the study's images: 1 in demo_external" in ReportSectionDataset(
        str(kedro_project.path / "data/demo/08_reporting/sections/external")).load().caption


def tiny_metrics_rule(kedro_project):
    phase, experiment = MODEL.split(".")
    path = kedro_project.path / "data/demo/08_reporting" / phase / experiment / "metrics.json"
    return json.loads(path.read_text())["threshold_rule"]
