"""All notebooks execute headless against the catalog of a (tiny) whole demo study and show its results."""

from __future__ import annotations

import json
import re

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from deepfake_kedro.comparison import format_ci
from tests.conftest import PROJECT_ROOT

# Notebooks reading pipelines outside the default run have their own test (test_predict_and_robustness.py).
OWN_TEST = {"08_predict_and_robustness.ipynb"}
NOTEBOOKS = sorted(p.name for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb") if p.name not in OWN_TEST)
# Notebooks whose headline table shows a phase's comparison.csv, one row per experiment with its AUC and CI.
COMPARISON_OF = {"03_phase1_analysis.ipynb": "phase1", "04_phase2_analysis.ipynb": "phase2",
                 "05_phase3_analysis.ipynb": "phase3"}
# Notebooks that print the metadata-only shortcut audit's AUC.
PRINTS_AUDIT = {"01_eda.ipynb", "07_gradcam_deep_dive.ipynb"}


def shown_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the executed notebook shows as text: printed streams, tables (HTML and plain)."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts += [data.get("text/html", ""), data.get("text/plain", "")]
    return "\n".join(parts)


def images_shown(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_headless_and_shows_the_study(tiny_study, name, monkeypatch):
    monkeypatch.setenv("KEDRO_ENV", "demo")
    notebook = nbformat.read(tiny_study.path / "notebooks" / name, as_version=4)
    # execute() raises CellExecutionError on the first failing cell.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tiny_study.path)}}).execute()
    text = shown_text(notebook)
    reporting = tiny_study.path / "data/demo/08_reporting"
    assert images_shown(notebook) >= 1, f"{name} shows no figure"
    # The study as it ran: no notebook warns that its results are out of date.
    assert "Out of date" not in text, f"{name} calls results out of date that match the parameters"
    for number, cell in enumerate(notebook.cells):
        pngs = [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        # A figure drawn in the cell shows (no off-screen backend forced on the kernel), and only once.
        if cell.cell_type == "code" and "plt.subplots" in cell.source:
            assert pngs, f"{name} cell {number} draws a figure but shows none"
        assert len(pngs) == len(set(pngs)), f"{name} cell {number} shows the same figure twice"
    if name in COMPARISON_OF:
        comparison = pd.read_csv(reporting / COMPARISON_OF[name] / "comparison.csv")
        for _, row in comparison.iterrows():
            assert row["experiment"] in text, f"{name} does not show experiment {row['experiment']}"
            assert format_ci(row, "auc") in text, f"{name} does not show {row['experiment']}'s AUC"
    if name in PRINTS_AUDIT:
        audit = json.loads((reporting / "eda/shortcut_audit.json").read_text())
        assert f"metadata-only AUC {audit['auc']:.3f}" in text
    if name == "09_generalisation_attribution.ipynb":
        matrix = pd.read_csv(reporting / "generalisation/transfer_matrix.csv")
        assert len(matrix) == 9  # the demo's three fake sources, trained-on x tested-on
        for row in matrix.itertuples():
            assert f"{row.auc_mean:.3f} [{row.auc_ci_low:.3f}, {row.auc_ci_high:.3f}]" in text, \
                f"{name} does not show the {row.trained_on} -> {row.tested_on} cell"
        for approach in ("flat", "hierarchical"):
            summary = json.loads((reporting / f"attribution/{approach}/metrics.json").read_text())
            accuracy = summary["views"]["end_to_end"]["balanced_accuracy"]
            assert f"{accuracy['mean']:.3f} [{accuracy['ci_low']:.3f}, {accuracy['ci_high']:.3f}]" in text, \
                f"{name} does not show {approach}'s balanced accuracy"
    if name == "06_phase4_analysis.ipynb":
        selection = json.loads((reporting / "phase4/selection.json").read_text())
        for candidate in selection["candidates"]:
            assert candidate["experiment"] in text, f"{name} does not show candidate {candidate['experiment']}"
        assert re.search(r"\b0\.\d{3,4}\b", text), f"{name} shows no AUC-like number"
