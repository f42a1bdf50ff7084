"""Pipelines built with real namespaces: every dotted dataset a node writes is its own namespace's."""

from __future__ import annotations

import os
import subprocess
import sys

from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project

from tests.conftest import PROJECT_ROOT


def registered():
    bootstrap_project(PROJECT_ROOT)
    return pipelines


def test_every_dotted_output_belongs_to_its_nodes_namespace():
    study = registered()["__default__"]
    foreign = [(node.name, output) for node in study.nodes for output in node.outputs
               if "." in output and not (node.namespace and output.startswith(node.namespace.split(".")[0] + "."))]
    assert foreign == []
    eda = registered()["eda"].only_nodes_with_namespaces(["eda"])
    assert {n.name for n in eda.nodes} == {"eda.describe_images", "eda.data_quality", "eda.audit_metadata_shortcut",
                                           "eda.colour_and_samples"}


def test_namespaces_phase4_holds_the_ranking_and_the_analysis():
    phase4 = registered()["phase4"].only_nodes_with_namespaces(["phase4"])
    names = {n.name for n in phase4.nodes}
    assert {"phase4.choose_final_models", "phase4.compare_final_models", "phase4.analyse_scaling"} <= names
    # The ranking's output feeds every slot inside the namespace: nothing of phase 4 is left outside.
    assert "phase4.model_selection" not in phase4.inputs()
    assert {i for i in phase4.inputs() if not i.startswith("params:")} <= (
        {"fold_table", "image_cache", "face_cache", "face_boxes", "phase2.preprocessing_choice"}
        | {"phase1.experiment_metrics", "phase2.experiment_metrics", "phase3.experiment_metrics"})


def test_later_phases_and_the_report_read_one_gathered_dataset_per_phase_not_one_per_experiment():
    # What keeps kedro viz's study view legible: a phase's results leave it as a handful of datasets.
    study = registered()["__default__"]
    top = {node.name: (node.namespace or "").split(".")[0] for node in study.nodes}
    produced_in = {output: top[node.name] for node in study.nodes for output in node.outputs}
    crossing = {name for node in study.nodes for name in node.inputs
                if name in produced_in and produced_in[name] != top[node.name]}
    per_experiment = sorted(name for name in crossing if name.count(".") >= 2)
    # Phase 2 compares with phase 1's two baselines; the deck shows the top model's Grad-CAM overlays.
    assert per_experiment == ["phase1.p1_resnet18_baseline.metrics", "phase1.p1_simplecnn_baseline.metrics",
                              "phase4.top1_full.gradcam_overlays"]


def test_registering_the_pipelines_logs_no_dotted_name_warning():
    # A fresh interpreter, as `kedro run` starts: the warning fires once per process, at node creation.
    script = ("from kedro.framework.startup import bootstrap_project; bootstrap_project('.'); "
              "from kedro.framework.project import pipelines; print(len(pipelines['__default__'].nodes))")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    done = subprocess.run([sys.executable, "-W", "default", "-c", script], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, check=True)
    assert int(done.stdout.strip().splitlines()[-1]) > 100
    assert "dataset names contain" not in done.stderr
