"""Notebook 08 executes headless against the catalog after the package, robustness and external pipelines.

It needs no whole study: a finished tiny experiment (``phase4.tiny``) stands in for the final model, so this test
does not use the session fixture ``tiny_study``.
"""

from __future__ import annotations

import json
import shutil

import nbformat
import pandas as pd
from nbclient import NotebookClient

from tests.conftest import PROJECT_ROOT
from tests.notebooks.test_notebooks import images_shown, shown_text
from tests.pipelines.robustness.test_pipeline import MODEL, finish_tiny_experiment

NOTEBOOK = "08_predict_and_robustness.ipynb"


def test_notebook_08_shows_the_package_robustness_and_external_results(kedro_project, monkeypatch):
    finish_tiny_experiment(kedro_project)
    kedro_project.edit_yaml("conf/base/parameters_robustness.yml", {"robustness": {
        "models": [MODEL], "corruptions": {"jpeg": [90, 30], "gaussian_blur": [2], "downscale": [0.5],
                                           "gaussian_noise": []}}})
    kedro_project.edit_yaml("conf/demo/parameters.yml", {"evaluation": {"external_models": [MODEL]}})
    for pipeline in ("robustness", "external"):
        kedro_project.run(pipeline)
    kedro_project.run("package", params={"predict": {"model": MODEL}})
    (kedro_project.path / "notebooks").mkdir()
    shutil.copy(PROJECT_ROOT / "notebooks" / NOTEBOOK, kedro_project.path / "notebooks" / NOTEBOOK)

    monkeypatch.setenv("KEDRO_ENV", "demo")
    notebook = nbformat.read(kedro_project.path / "notebooks" / NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(kedro_project.path)}}).execute()
    text = shown_text(notebook)
    assert "Out of date" not in text  # scored by the current models: no warning
    reporting = kedro_project.path / "data/demo/08_reporting"
    robustness = pd.read_csv(reporting / "robustness/robustness.csv")
    clean = robustness[robustness["corruption"] == "clean"].iloc[0]
    assert f"{MODEL}: clean AUC {clean['auc']:.3f} [{clean['auc_ci_low']:.3f}" in text
    external = pd.read_csv(reporting / "external/external.csv").iloc[0]
    assert f"demo_external / {MODEL}: external AUC {external['auc']:.3f}" in text
    threshold = json.loads((kedro_project.path / "data/demo/06_models/package/package.json").read_text())["threshold"]
    assert f"threshold {threshold['value']:.4f} (youden, mean of the fold thresholds on the calibrated scale)" in text
    # Example predictions, corruption strip, degradation curves and the external figure.
    assert images_shown(notebook) >= 4
