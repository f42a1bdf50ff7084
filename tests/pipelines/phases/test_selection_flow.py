"""Choices between phases through Kedro's real session: phase 3 follows phase 2's results (or the
override), phase 4 retrains the ranked models on nested subsets of whole groups."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from deepfake_kedro.config import active_experiments, resolve_experiment
from deepfake_kedro.folds import select_fold_rows
from deepfake_kedro.selection import SelectionError

PHASE3 = ("p3_resnet34", "p3_resnet50", "p3_efficientnet_b0", "p3_convnext_tiny", "p3_mobilenetv3_small")
PAIRS = {"t2": ("p2a_t1_original", "p2a_t2_real_norm"), "c": ("p2b_resnet18_224", "p2c_resnet18_facecrop"),
         "d": ("p2b_resnet18_224", "p2d_resnet18_aug"), "e": ("p2c_resnet18_facecrop", "p2e_resnet18_facecrop_aug")}


def seed_phase2_tests(project, gains: dict[str, tuple[float, float]]) -> None:
    """Writes phase 2's paired tests as if phase 2 had run: (validation-AUC gain, Holm p) per step; the test
    folds' AUC rows say the opposite, which the choice must not read."""
    rows = [{"question": key, "baseline": PAIRS[key][0], "treatment": PAIRS[key][1], "metric": metric,
             "diff_mean": gain if metric == "val_auc" else -gain, "diff_ci_low": gain - 0.02,
             "diff_ci_high": gain + 0.02, "p_nadeau_bengio": p, "p_holm": p if metric == "val_auc" else 0.001}
            for key, (gain, p) in gains.items() for metric in ("val_auc", "auc")]
    path = project.path / "data/demo/08_reporting/phase2/paired_tests.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def resolve_nodes(project, *phases: str) -> list[str]:
    """The resolve node of every experiment of ``phases``: a run that reads a phase's results checks them against
    its experiments' resolved configs, which a seeded phase would otherwise lack."""
    bootstrap_project(project.path)
    with KedroSession.create(project_path=project.path, env="demo") as session:
        params = session.load_context().params
    return [f"{phase}.{name}.{'resolve_with_preprocessing' if phase == 'phase3' else 'resolve_config'}"
            for phase in phases for name in active_experiments(params[phase]["experiments"])]


def phase3_configs(project) -> dict[str, dict]:
    resolve = [f"phase3.{n}.resolve_with_preprocessing" for n in PHASE3]
    project.run("phase3", node_names=["phase2.choose_preprocessing", *resolve_nodes(project, "phase2"), *resolve])
    return {n: json.loads((project.path / f"data/demo/05_model_input/phase3/{n}/resolved_config.json").read_text())
            for n in PHASE3}


def preprocessing_of(resolved: dict) -> tuple:
    config = resolved["config"]
    return config["image_size"], config["face_crop"], bool(config["augment"]), config["normalization"]


def test_phase3_follows_phase2_results_and_the_override_wins(tiny_demo):
    seed_phase2_tests(tiny_demo, {"t2": (0.01, 0.5), "c": (0.08, 0.01), "d": (0.0, 1.0), "e": (-0.02, 0.4)})
    cropped = phase3_configs(tiny_demo)
    assert {preprocessing_of(c) for c in cropped.values()} == {(32, True, False, "imagenet")}
    assert {c["config"]["backbone"] for c in cropped.values()} == {
        "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny", "mobilenetv3_small"}

    seed_phase2_tests(tiny_demo, {"t2": (0.03, 0.02), "c": (0.02, 0.3), "d": (0.04, 0.01), "e": (0.0, 1.0)})
    other = phase3_configs(tiny_demo)
    assert {preprocessing_of(c) for c in other.values()} == {(32, False, True, "real_norm")}
    assert other["p3_resnet50"]["fingerprint"] != cropped["p3_resnet50"]["fingerprint"]
    choice = json.loads((tiny_demo.path / "data/demo/08_reporting/phase2/preprocessing_choice.json").read_text())
    assert choice["source"] == "phase-2 results" and [d["adopted"] for d in choice["decisions"]] == [
        True, False, True, False]

    tiny_demo.edit_yaml("conf/demo/parameters_phase2.yml", {"phase2": {"selection": {"override": {"face_crop": True}}}})
    forced = phase3_configs(tiny_demo)
    assert {preprocessing_of(c) for c in forced.values()} == {(32, True, True, "real_norm")}
    assert {c["preprocessing_source"] for c in forced.values()} == {"override (parameter phase2.selection.override)"}


def test_bad_override_fails_before_any_training(tiny_demo):
    tiny_demo.edit_yaml("conf/demo/parameters_phase2.yml",
                        {"phase2": {"selection": {"override": {"face_crop": True, "image_size": 64}}}})
    with pytest.raises(Exception, match=r"phase3\.p3_resnet34.*override.*'image_size'"):
        tiny_demo.run("phase3")
    tiny_demo.edit_yaml("conf/demo/parameters_phase2.yml", {"phase2": {"selection": {"override": {"colour": "x"}}}})
    with pytest.raises(SelectionError, match=r"phase2\.selection\.override.*'colour'"):
        tiny_demo.run("phase3")
    assert not (tiny_demo.path / "data/demo/06_models/runs").exists()


def seed_phase_results(project) -> dict[str, dict]:
    """metrics.json of every phase 1-3 experiment (configs resolved from the demo parameters, invented scores)."""
    # The demo's parameters as Kedro merges them (conf/demo lists only what it changes from base).
    with KedroSession.create(project_path=project.path, env="demo") as session:
        params = session.load_context().params
    scores = {"p1_simplecnn_baseline": 0.70, "p1_resnet18_baseline": 0.80, "p3_resnet50": 0.93,
              "p3_convnext_tiny": 0.91, "p3_mobilenetv3_small": 0.86, "p3_resnet34": 0.84, "p3_efficientnet_b0": 0.82}
    written = {}
    for phase in ("phase1", "phase2", "phase3"):
        experiments = params[phase]["experiments"]
        for name in experiments:
            config = resolve_experiment(name, experiments, params["defaults"]).model_dump(mode="json")
            auc = scores.get(name, 0.75)
            metrics = {"val_auc": {"mean": auc, "std": 0.02, "ci_low": auc - 0.03, "ci_high": auc + 0.03},
                       "val_pairwise_auc:text2img": {"mean": auc + 0.02},
                       "val_pairwise_auc:insight": {"mean": auc - 0.05},
                       # The test folds' figures rank the other way round: the ranking must not read them.
                       "auc": {"mean": 1.6 - auc, "std": 0.02, "ci_low": 1.57 - auc, "ci_high": 1.63 - auc},
                       "pairwise_auc:text2img": {"mean": 1.6 - auc}, "pairwise_auc:insight": {"mean": 1.6 - auc}}
            summary = {"experiment": name, "phase": phase, "fingerprint": name, "config": config, "metrics": metrics}
            path = project.path / f"data/demo/08_reporting/{phase}/{name}/metrics.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary))
            written[f"{phase}.{name}"] = summary
    return written


def test_phase4_ranks_models_and_trains_nested_whole_group_subsets(tiny_demo):
    tiny_demo.run("preprocessing")
    seed_phase_results(tiny_demo)
    seed_phase2_tests(tiny_demo, {"t2": (0.01, 0.5), "c": (0.08, 0.01), "d": (0.0, 1.0), "e": (-0.02, 0.4)})
    slots = [f"top{k}_{s}" for k in (1, 2, 3) for s in ("20pct", "50pct", "100pct", "full")]
    # Phase 4 ranks what each phase gathered from its experiments' seeded metrics.
    gathered = [f"phase{k}.gather_metrics" for k in (1, 2, 3)]
    tiny_demo.run("phase4", node_names=["phase2.choose_preprocessing", *gathered, "phase4.choose_final_models",
                                        *resolve_nodes(tiny_demo, "phase1", "phase2", "phase3")]
                  + [f"phase4.{slot}.resolve_final_model" for slot in slots])

    selection = json.loads((tiny_demo.path / "data/demo/08_reporting/phase4/selection.json").read_text())
    assert {c["name"] for c in selection["criteria"]} == {"val_auc", "worst_source_val_auc", "gflops"}
    candidates = {c["model"]: c for c in selection["candidates"]}
    # Every candidate carries the values and ranks that decided; hold-outs are not candidates.
    for candidate in candidates.values():
        for key in ("val_auc", "worst_source_val_auc", "gflops", "params_m", "score", "rank",
                    "rank_val_auc", "rank_worst_source_val_auc", "rank_gflops"):
            assert candidate[key] is not None
    assert "holdout" not in " ".join(c["experiment"] for c in candidates.values())
    # Ranked on the seeded validation figures (the test folds' run the other way round).
    assert candidates["resnet50"]["val_auc"] == 0.93 and candidates["resnet50"]["worst_source_val_auc"] == 0.88
    chosen = [s["model"] for s in selection["selected"]]
    assert len(chosen) == 3 and chosen == [c["model"] for c in sorted(candidates.values(), key=lambda c: c["rank"])][:3]

    fold_table = pd.read_parquet(tiny_demo.path / "data/demo/05_model_input/fold_table.parquet")
    for k, model in enumerate(chosen, start=1):
        resolved = {s: json.loads((tiny_demo.path / f"data/demo/05_model_input/phase4/top{k}_{s}/resolved_config.json")
                                  .read_text()) for s in ("20pct", "50pct", "100pct", "full")}
        assert resolved["20pct"]["experiment"] == f"p4a_{model}_20pct"
        assert resolved["full"]["experiment"] == f"p4b_{model}_full"
        # The full run is the 100% config: same fingerprint, trained once.
        assert resolved["full"]["fingerprint"] == resolved["100pct"]["fingerprint"]
        assert {(r["config"]["image_size"], r["config"]["face_crop"]) for r in resolved.values()} == {(32, True)}
        # The demo's phase4.training: every final model trains 4 epochs in batches of 32, whatever its source.
        assert {(r["config"]["epochs"], r["config"]["batch_size"], r["config"]["scheduler"]["T_max"])
                for r in resolved.values()} == {(4, 32, 4)}
        fractions = [resolved[s]["config"]["subsample"] for s in ("20pct", "50pct", "100pct")]
        assert fractions == [0.2, 0.5, 1.0]
        for fold in range(5):
            train = [set(fold_table.iloc[select_fold_rows(fold_table, fold, f).train]["path"]) for f in fractions]
            test = [set(fold_table.iloc[select_fold_rows(fold_table, fold, f).test]["path"]) for f in fractions]
            assert train[0] < train[1] < train[2], "subsets must be nested"
            # subsample is a fraction of the dataset (experiments.md): the test fold shrinks with it, nested too.
            assert test[0] <= test[1] <= test[2] and test[2] == set(fold_table[fold_table["fold"] == fold]["path"])
            groups = fold_table.set_index("path")["group"]
            for subset in train[:2]:
                chosen_groups = set(groups[list(subset)])
                in_train_full = fold_table[fold_table["path"].isin(train[2])]
                # Whole groups: a group is either entirely in the subset or entirely out of it.
                assert set(in_train_full[in_train_full["group"].isin(chosen_groups)]["path"]) == subset
