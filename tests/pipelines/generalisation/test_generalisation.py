"""The generalisation pipeline through KedroSession: its registration, its catalog, and its family check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project
from PIL import Image

from deepfake_kedro.config import ConfigError
from deepfake_kedro.stats import nadeau_bengio_ttest
from tests.conftest import PROJECT_ROOT

FAKES = ["text2img", "inpainting", "insight"]


def test_registered_by_name_outside_the_default_run_in_its_own_namespace():
    bootstrap_project(PROJECT_ROOT)
    generalisation = pipelines["generalisation"]
    assert not {n.name for n in generalisation.nodes} & {n.name for n in pipelines["__default__"].nodes
                                                         if n.namespace and n.namespace.startswith("generalisation")}
    own = generalisation.only_nodes_with_namespaces(["generalisation"])
    assert {f"generalisation.gen_{s}.evaluate_folds" for s in FAKES} | {"generalisation.analyse_transfer"} <= {
        n.name for n in own.nodes}
    # Everything it needs beyond the preprocessing is its own: phase 2 is read only if it has run.
    assert {i for i in own.inputs() if not i.startswith("params:")} == {
        "fold_table", "image_cache", "face_cache", "face_boxes", "finished_experiments"}


def write_finished_experiments(data_dir, cube: np.ndarray) -> None:
    """metrics.json of every gen_<s> (per-fold pairwise AUCs from ``cube``) and a phase-2 comparison."""
    for i, source in enumerate(FAKES):
        # Per fold 12 real images and 6 of each fake source: a cell's AUC sees 18 of the fold's 30.
        folds = [{"fold": k, "n_train": 90, "n_test": 30, "n:wiki": 12, **{f"n:{t}": 6 for t in FAKES},
                  **{f"pairwise_auc:{t}": cube[i, j, k] for j, t in enumerate(FAKES)}} for k in range(5)]
        summary = {"experiment": f"gen_{source}", "fingerprint": f"gen{i}",
                   "config": {"train_sources": ["wiki", source]}, "folds": folds}
        folder = data_dir / "08_reporting" / "generalisation" / f"gen_{source}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(summary))
    (data_dir / "08_reporting" / "phase2").mkdir(parents=True)
    pd.DataFrame([{"experiment": "p2a_t3_holdout_insight", "fingerprint": "h0", "heldout_source": "insight",
                   "heldout_auc": 0.7,
                   "reference_in_source_auc": 0.9, "delta_vs_reference": 0.2, "delta_vs_reference_ci_low": 0.1,
                   "delta_vs_reference_ci_high": 0.3, "delta_vs_reference_flag": True}]).to_csv(
        data_dir / "08_reporting" / "phase2" / "comparison.csv", index=False)


def test_analysis_reads_the_experiments_and_phase2_from_the_catalog_and_writes_the_matrix(kedro_project):
    data_dir = kedro_project.path / "data" / "demo"
    # Fold noise, so the tests' p-values depend on the fold sizes (a constant difference has p = 0).
    cube = np.full((3, 3, 5), 0.6) + np.random.default_rng(0).normal(0, 0.02, (3, 3, 5))
    for i in range(3):
        cube[i, i] += 0.3
    cube[0, 1] += 0.15
    cube[1, 0] += 0.15
    write_finished_experiments(data_dir, cube)
    # Their resolved configs, as their runs left them: a run reading results checks them against the parameters.
    bootstrap_project(kedro_project.path)
    for name in ("phase2", "generalisation"):
        kedro_project.run(name, node_names=[n.name for n in pipelines[name].nodes
                                            if n.name.startswith(f"{name}.") and n.name.endswith(".resolve_config")])
    kedro_project.run("generalisation", node_names=["generalisation.analyse_transfer"])

    out = data_dir / "08_reporting" / "generalisation"
    matrix = pd.read_csv(out / "transfer_matrix.csv").set_index(["trained_on", "tested_on"])
    assert len(matrix) == 9 and matrix.loc[("text2img", "text2img"), "auc_mean"] == pytest.approx(cube[0, 0].mean())
    assert matrix.loc[("inpainting", "text2img"), "relation"] == "same_family"
    tests = pd.read_csv(out / "transfer_tests.csv").set_index("treatment")
    diagonal = np.mean([cube[i, i] for i in range(3)], axis=0)
    off = np.mean([cube[i, j] for i in range(3) for j in range(3) if i != j], axis=0)
    assert tests.loc["diagonal", "diff_mean"] == pytest.approx((diagonal - off).mean())
    # Nadeau-Bengio's n_test is what a cell's AUC sees (real + the tested source), not the whole fold.
    assert tests.loc["diagonal", "p_nadeau_bengio"] == pytest.approx(nadeau_bengio_ttest(diagonal - off, 90, 18)[1])
    assert tests.loc["diagonal", "p_nadeau_bengio"] != pytest.approx(nadeau_bengio_ttest(diagonal - off, 90, 30)[1])
    same = (cube[0, 1] + cube[1, 0]) / 2
    cross = np.mean([cube[0, 2], cube[1, 2], cube[2, 0], cube[2, 1]], axis=0)
    assert tests.loc["same_family", "diff_mean"] == pytest.approx((same - cross).mean())
    assert Image.open(out / "transfer_heatmap.png").size[0] > 300
    section = data_dir / "08_reporting" / "sections" / "generalisation"
    table = pd.read_csv(section / "table.csv", keep_default_na=False)
    assert table.iloc[-1].tolist()[-1] == "0.70 (Δ +0.20 [+0.10, +0.30])"  # phase 2's hold-out of insight
    written = json.loads((section / "section.json").read_text())
    assert f"Δ {(diagonal - off).mean():+.3f}" in written["caption"]
    # What the deck checks it against: the experiments it shows, the hold-out row's included.
    assert written["experiments"] == {"generalisation.gen_text2img": "gen0", "generalisation.gen_inpainting": "gen1",
                                      "generalisation.gen_insight": "gen2", "phase2.p2a_t3_holdout_insight": "h0"}


def test_a_fake_source_without_a_family_stops_the_run_before_any_cache(tiny_demo):
    tiny_demo.edit_yaml("conf/demo/parameters.yml", {"data": {"families": {"text2img": "diffusion",
                                                                         "insight": "face_swap"}}})
    with pytest.raises(ConfigError, match=r"data.families.inpainting: fake source 'inpainting' has no family"):
        tiny_demo.run("generalisation")
    assert not (tiny_demo.path / "data" / "demo" / "03_primary").exists()
    assert not (tiny_demo.path / "data" / "demo" / "06_models").exists()


def test_a_fake_source_without_an_experiment_stops_the_run_before_any_node(kedro_project):
    file = kedro_project.path / "conf" / "base" / "parameters_generalisation.yml"
    content = yaml.safe_load(file.read_text())
    del content["generalisation"]["experiments"]["gen_inpainting"]
    file.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=r"no experiment trains on fake source 'inpainting'; add gen_inpainting"):
        kedro_project.run("generalisation")
    assert not (kedro_project.path / "data" / "demo").exists()  # rejected before any node wrote anything
