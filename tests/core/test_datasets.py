"""Tests for deepfake_kedro.datasets: the project's own Kedro datasets."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError
from PIL import Image

from deepfake_kedro.commands import RUN_ENV_VARIABLE
from deepfake_kedro.datasets import (
    CurrentResolutions,
    FinishedExperiments,
    ImageFolderDataset,
    ResolvedExperimentDataset,
    SlideDeckDataset,
)
from deepfake_kedro.pipelines.experiment.pipeline import experiment_pipeline, final_model_pipeline
from deepfake_kedro.study import resolve

DATA = {"root": "data/01_raw/demo", "sources": {"wiki": "real", "insight": "fake"}}
PREPROCESSING = {"image_sizes": [128], "face_crop_sizes": [], "face_crop_margin": 0.6}
DEFAULTS = {"image_size": 128, "backbone": "simple_cnn", "pretrained": False}


def test_resolved_experiment_saves_as_the_json_readers_expect_and_loads_back(tmp_path):
    resolved = resolve("phase3", "p3_resnet34", {"p3_resnet34": {"backbone": "resnet34"}}, DEFAULTS, DATA,
                       PREPROCESSING, preprocessing_source="ranking")
    path = tmp_path / "phase3/p3_resnet34/resolved_config.json"
    dataset = ResolvedExperimentDataset(str(path))
    dataset.save(resolved)
    written = json.loads(path.read_text())
    assert written == resolved.to_json()
    assert (written["experiment"], written["phase"], written["config"]["backbone"]) == ("p3_resnet34", "phase3",
                                                                                         "resnet34")
    assert written["preprocessing_source"] == "ranking" and written["fingerprint"] == resolved.fingerprint
    assert dataset.load() == resolved
    assert not list(tmp_path.rglob("*.partial"))


def test_a_broken_resolved_config_file_is_named_with_the_missing_key(tmp_path):
    path = tmp_path / "resolved_config.json"
    path.write_text(json.dumps({"experiment": "p1", "phase": "phase1", "config": {}}))
    with pytest.raises(DatasetError, match=r"resolved_config\.json: missing key 'fingerprint'"):
        ResolvedExperimentDataset(str(path)).load()


def image(value: int) -> Image.Image:
    return Image.fromarray(np.full((4, 4, 3), value, np.uint8))


def test_overlay_folder_replaces_only_what_it_wrote(tmp_path):
    folder = tmp_path / "gradcam" / "phase1" / "p1_x"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("the user's file")
    (folder / "mine").mkdir()
    (folder / "mine" / "keep.png").write_bytes(b"not ours")
    dataset = ImageFolderDataset(str(folder))
    dataset.save({"TP/wiki/a": image(10), "FP/insight/b": image(20)})
    assert sorted(dataset.load()) == ["FP/insight/b", "TP/wiki/a"]
    assert np.asarray(dataset.load()["TP/wiki/a"]())[0, 0, 0] == 10
    # A rerun that explains other images: the old overlay goes, with its emptied folder; nothing else does.
    dataset.save({"TP/wiki/c": image(30)})
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".written_by_deepfake_kedro.json", "TP/wiki/c.png", "mine/keep.png", "notes.txt"]
    assert not (folder / "FP").exists()
    assert list(dataset.load()) == ["TP/wiki/c"]


def test_overlay_keys_cannot_leave_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"must be a relative path inside"):
        ImageFolderDataset(str(tmp_path / "out")).save({"../../escape": image(1)})
    assert not (tmp_path / "escape.png").exists()


def test_leftover_report_partial_is_cleaned_up(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = tmp_path / "report.pdf"
    deck = SlideDeckDataset(str(report))
    deck.save([plt.figure()])
    finished = report.read_bytes()
    leftover = tmp_path / "report.pdf.partial"
    leftover.write_bytes(b"%PDF-1.4 half written by a killed run")
    # The next run fails while writing (a slide that is no figure): no partial stays, the old deck is intact.
    with pytest.raises(DatasetError):  # Kedro wraps the AttributeError
        deck.save([plt.figure(), "not a figure"])
    assert not leftover.exists() and report.read_bytes() == finished
    deck.save([plt.figure(), plt.figure()])
    assert not leftover.exists() and report.read_bytes() != finished


def test_demo_tree_is_regenerated_when_the_generator_version_or_arguments_change(tmp_path, monkeypatch):
    from deepfake_kedro import demo_data
    from deepfake_kedro.datasets import DemoImageTreeDataset
    from deepfake_kedro.demo_data import GENERATOR_MARKER

    root = tmp_path / "demo"
    first = DemoImageTreeDataset(str(root), {"n_identities": 2, "seed": 0}).load()
    images = [f for f in first.files() if not f.startswith(".")]
    assert len(images) == 8
    stamp = json.loads((root / GENERATOR_MARKER).read_text())
    assert stamp == {"generator_version": demo_data.GENERATOR_VERSION, "generator_args": {"n_identities": 2, "seed": 0}}
    before = {f: (root / f).stat().st_mtime_ns for f in images}
    DemoImageTreeDataset(str(root), {"n_identities": 2, "seed": 0}).load()  # same arguments: kept as is
    assert {f: (root / f).stat().st_mtime_ns for f in images} == before

    (root / "wiki" / "stale.jpg").write_bytes(b"old")
    DemoImageTreeDataset(str(root), {"n_identities": 3, "seed": 0}).load()  # other arguments: regenerated
    assert not (root / "wiki" / "stale.jpg").exists()
    assert len([f for f in first.files() if not f.startswith(".")]) == 12

    monkeypatch.setattr(demo_data, "GENERATOR_VERSION", demo_data.GENERATOR_VERSION + 1)
    (root / "wiki" / "stale.jpg").write_bytes(b"old")
    DemoImageTreeDataset(str(root), {"n_identities": 3, "seed": 0}).load()  # a newer generator: regenerated
    assert not (root / "wiki" / "stale.jpg").exists()
    assert not root.with_name("demo.partial").exists()


def test_images_without_the_generators_record_are_used_as_they_are_never_overwritten(tmp_path, caplog):
    from deepfake_kedro.datasets import DemoImageTreeDataset
    from deepfake_kedro.demo_data import GENERATOR_MARKER

    root = tmp_path / "mine"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.jpg").write_bytes(b"my photo")
    tree = DemoImageTreeDataset(str(root), {"n_identities": 2, "seed": 0}).load()
    assert tree.files() == ["real/a.jpg"] and (root / "real" / "a.jpg").read_bytes() == b"my photo"
    assert not (root / GENERATOR_MARKER).exists()
    assert "no .generator.json" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(DemoImageTreeDataset(str(empty), {"n_identities": 2, "seed": 0}).load().files()) == 9  # + the record


def finished_layout(tmp_path, data_keys: list[str]):
    """A finished experiment as the catalog lays it out: resolved config, fold runs' meta, metrics."""
    resolved = resolve("phase1", "p1_x", {"p1_x": {}}, DEFAULTS, DATA, PREPROCESSING)
    ResolvedExperimentDataset(str(tmp_path / "05_model_input/phase1/p1_x/resolved_config.json")).save(resolved)
    for fold, key in enumerate(data_keys):
        meta = tmp_path / "06_models/runs" / resolved.fingerprint / f"fold_{fold}" / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"data_key": key}))
    reporting = tmp_path / "08_reporting/phase1/p1_x"
    reporting.mkdir(parents=True)
    (reporting / "fold_metrics.csv").write_text("fold,auc\n0,0.8\n1,0.9\n")
    return resolved, reporting / "metrics.json"


def final_model_layout(tmp_path):
    """phase4.top1_full, finished, retraining phase1.p1_x as phase 4's stored ranking chose it.

    Returns:
        The final model's resolved config, its resolve node and p1_x's, and the inputs they read.
    """
    source, metrics = finished_layout(tmp_path, ["k0", "k1"])
    metrics.write_text(json.dumps({"fingerprint": source.fingerprint, "data_keys": ["k0", "k1"]}))
    choice = {"settings": {"image_size": 128}, "source": "phase-2 results"}
    selection = {"selected": [{"slot": "top1", "model": "simple_cnn_small", "experiment": "phase1.p1_x", "rank": 1,
                               "config": source.config.model_dump(mode="json")}]}
    (tmp_path / "08_reporting/phase4").mkdir(parents=True)
    (tmp_path / "08_reporting/phase4/selection.json").write_text(json.dumps(selection))
    final_node = next(n for n in final_model_pipeline("top1_full", 1.0).nodes
                      if "phase4.top1_full.resolved_config" in n.outputs)
    final = final_node.func(DEFAULTS, DATA, PREPROCESSING, choice, selection, {})
    ResolvedExperimentDataset(str(tmp_path / "05_model_input/phase4/top1_full/resolved_config.json")).save(final)
    for fold in range(2):
        meta = tmp_path / "06_models/runs" / final.fingerprint / f"fold_{fold}" / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"data_key": f"k{fold}"}))
    (tmp_path / "08_reporting/phase4/top1_full").mkdir()
    (tmp_path / "08_reporting/phase4/top1_full/metrics.json").write_text(
        json.dumps({"fingerprint": final.fingerprint, "data_keys": ["k0", "k1"]}))
    (tmp_path / "08_reporting/phase4/top1_full/fold_metrics.csv").write_text("fold,auc\n0,0.8\n1,0.9\n")
    nodes = {"phase1.p1_x": resolve_node("phase1", "p1_x"), "phase4.top1_full": final_node}
    inputs = {"params:defaults": DEFAULTS, "params:data": DATA, "params:preprocessing": PREPROCESSING,
              "phase2.preprocessing_choice": choice, "phase4.model_selection": selection,
              "params:phase4.training": {}}
    return final, nodes, inputs


def resolve_node(phase: str, experiment: str):
    """An experiment's own resolve node, as the hook finds it in the registered pipelines."""
    return next(n for n in experiment_pipeline(phase, experiment).nodes
                if f"{phase}.{experiment}.resolved_config" in n.outputs)


def test_finished_results_are_refused_when_their_metrics_belong_to_another_config_or_older_folds(tmp_path):
    resolved, metrics = finished_layout(tmp_path, ["k0", "k1"])
    finished = FinishedExperiments(tmp_path)

    metrics.write_text(json.dumps({"fingerprint": resolved.fingerprint, "data_keys": ["k0", "k1"]}))
    assert finished.load("phase1.p1_x")[0] == resolved

    # The config changed and trained, but its evaluation has not run: the threshold would be the old model's.
    metrics.write_text(json.dumps({"fingerprint": "0123abcd", "data_keys": ["k0", "k1"]}))
    with pytest.raises(DatasetError, match=r"metrics\.json was computed for config '0123abcd'.*--pipelines phase1"):
        finished.load("phase1.p1_x")

    # Fold 1 was retrained on changed data after metrics.json was written.
    metrics.write_text(json.dumps({"fingerprint": resolved.fingerprint, "data_keys": ["k0", "old"]}))
    with pytest.raises(DatasetError, match=r"fold 1 was retrained on other data .*fold_1"):
        finished.load("phase1.p1_x")


def test_a_misspelt_experiment_label_is_named_with_the_phases_experiments(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)  # outside a Kedro run (a run in this process may set it)
    finished_layout(tmp_path, ["k0", "k1"])
    finished = FinishedExperiments(tmp_path)
    with pytest.raises(DatasetError, match=r"phase1's experiments here: \['p1_x'\]; did you mean phase1.p1_x\?\); "
                                           r"if the name is right, run its phase first \(kedro run --pipelines "
                                           r"phase1\)"):
        finished.load("phase1.p1_xx")
    with pytest.raises(DatasetError, match=r"phase3's experiments here: none yet\); if the name is right"):
        finished.load("phase3.p1_x")


def test_an_experiment_whose_parameters_changed_since_its_phase_ran_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)
    resolved, metrics = finished_layout(tmp_path, ["k0", "k1"])
    metrics.write_text(json.dumps({"fingerprint": resolved.fingerprint, "data_keys": ["k0", "k1"]}))
    # The experiment's own resolve node, as the hook finds it in the registered pipelines.
    node = next(n for n in experiment_pipeline("phase1", "p1_x").nodes if "phase1.p1_x.resolved_config" in n.outputs)

    def finished(experiments):
        inputs = {"params:defaults": DEFAULTS, "params:phase1.experiments": experiments, "params:data": DATA,
                  "params:preprocessing": PREPROCESSING}
        # It travels to Dask workers inside the catalog.
        current = pickle.loads(pickle.dumps(CurrentResolutions({"phase1.p1_x": node}, inputs)))
        return FinishedExperiments(tmp_path, current)

    assert finished({"p1_x": {}}).load("phase1.p1_x")[0] == resolved
    assert finished({"p1_x": {"num_workers": 4}}).load("phase1.p1_x")[0] == resolved  # runs alike
    with pytest.raises(DatasetError, match=r"phase1\.p1_x was trained under other parameters than the current ones "
                                           r"\(batch_size: \d+ -> 8; epochs: \d+ -> 3\).*kedro run --pipelines phase1"):
        finished({"p1_x": {"epochs": 3, "batch_size": 8}}).load("phase1.p1_x")
    # Parameters that no longer validate cannot say what the experiment would be: a warning, not a refusal.
    assert finished({"p1_x": {"image_size": 64}}).load("phase1.p1_x")[0] == resolved
    # Gone from the parameters: what is stored is all there is, so it is used.
    assert FinishedExperiments(tmp_path, CurrentResolutions({}, {})).load("phase1.p1_x")[0] == resolved


def test_thresholds_chosen_by_another_rule_than_the_current_one_are_refused_where_they_are_applied(
        tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)
    resolved, metrics = finished_layout(tmp_path, ["k0", "k1"])
    metrics.write_text(json.dumps({"fingerprint": resolved.fingerprint, "data_keys": ["k0", "k1"],
                                   "threshold_rule": "youden"}))
    inputs = {"params:defaults": DEFAULTS, "params:phase1.experiments": {"p1_x": {}}, "params:data": DATA,
              "params:preprocessing": PREPROCESSING}

    def finished(evaluation):
        current = CurrentResolutions({"phase1.p1_x": resolve_node("phase1", "p1_x")}, inputs, evaluation=evaluation)
        return FinishedExperiments(tmp_path, pickle.loads(pickle.dumps(current)))

    assert finished({"threshold": {"rule": "youden"}, "n_bootstrap": 10}).load("phase1.p1_x")[0] == resolved
    assert finished(None).load("phase1.p1_x")[0] == resolved  # no evaluation block known: nothing to compare
    # The fingerprint holds no threshold rule: the package would carry youden's thresholds under an eer study.
    with pytest.raises(DatasetError, match=r"phase1\.p1_x was evaluated under other settings than the current ones "
                                           r"\(evaluation\.threshold: youden -> eer\).*kedro run --pipelines "
                                           r"phase1; finished folds are skipped, the evaluation reruns"):
        finished({"threshold": {"rule": "eer"}}).load("phase1.p1_x")
    # A reader of AUC alone (robustness) is unaffected.
    assert finished({"threshold": {"rule": "eer"}}).load("phase1.p1_x", thresholds=False)[0] == resolved
    # A run or notebook reading the phase's tables is told, as for a changed config.
    message = finished({"threshold": {"rule": "target_fpr", "target_fpr": 0.05}}).stale_message(
        ["phase1.p1_x"], "This run")
    assert "\n  - phase1.p1_x: evaluation.threshold: youden -> target_fpr (FPR <= 0.05)\n" in message
    # generalisation's hold-out row reads the phase's AUCs alone: the table is given to it, and refused otherwise.
    pd.DataFrame({"experiment": ["p1_x"], "auc_mean": [0.9]}).to_csv(
        tmp_path / "08_reporting" / "phase1" / "comparison.csv", index=False)
    assert finished({"threshold": {"rule": "eer"}}).comparison("phase1", thresholds=False)["auc_mean"].tolist() == [0.9]
    with pytest.raises(DatasetError, match=r"phase1\.p1_x: evaluation\.threshold: youden -> eer"):
        finished({"threshold": {"rule": "eer"}}).comparison("phase1")
    # A rule that does not validate cannot say what would change: the phase's own run rejects it.
    assert finished({"threshold": {"rule": "median"}}).stale_message(["phase1.p1_x"], "This run") is None


def test_a_final_model_is_refused_when_the_experiment_it_retrains_changed_since_phase_4_ranked_it(tmp_path):
    final, nodes, inputs = final_model_layout(tmp_path)

    def finished(experiments):
        return FinishedExperiments(tmp_path, CurrentResolutions(nodes, {**inputs,
                                                                        "params:phase1.experiments": experiments}))

    assert finished({"p1_x": {}}).load("phase4.top1_full")[0] == final
    # Phase 4 retrains the stored ranking's copy of p1_x's config, so its own resolution has not moved: the
    # ranked experiment has, and the ranking with it.
    with pytest.raises(DatasetError, match=r"phase4\.top1_full retrains phase1\.p1_x, ranked by phase 4, whose "
                                           r"parameters changed since it ran \(epochs: \d+ -> 3\).*--pipelines phase4"):
        finished({"p1_x": {"epochs": 3}}).load("phase4.top1_full")


def test_a_final_model_is_refused_when_an_experiment_its_ranking_passed_over_changed_since(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)
    final, nodes, inputs = final_model_layout(tmp_path)
    stored = {"p1_x": {}, "p1_y": {"backbone": "resnet18"},
              "p1_holdout": {"backbone": "resnet18", "train_sources": ["wiki", "insight"]}}
    for name in ("p1_y", "p1_holdout"):
        resolved = resolve("phase1", name, stored, DEFAULTS, DATA, PREPROCESSING)
        ResolvedExperimentDataset(str(tmp_path / f"05_model_input/phase1/{name}/resolved_config.json")).save(resolved)
    nodes.update({"phase1.p1_y": resolve_node("phase1", "p1_y"),
                  "phase1.p1_holdout": resolve_node("phase1", "p1_holdout")})

    def finished(experiments):
        return FinishedExperiments(tmp_path, CurrentResolutions(nodes, {**inputs, "params:phase1.experiments":
                                                                        {**stored, **experiments}}))

    assert finished({}).load("phase4.top1_full")[0] == final
    # A hold-out is not ranked: its change leaves the ranking as it was.
    assert finished({"p1_holdout": {"backbone": "resnet18", "train_sources": ["wiki", "insight"], "epochs": 3}}
                    ).load("phase4.top1_full")[0] == final
    # p1_y lost the ranking to p1_x; trained otherwise, it might win it.
    with pytest.raises(DatasetError, match=r"phase4\.top1_full was chosen by phase 4's ranking of the experiments of "
                                           r"phases 1-3, some of which changed since it ran \(phase1\.p1_y: epochs: "
                                           r"\d+ -> 3\): the ranking may no longer choose phase1\.p1_x.*--pipelines "
                                           r"phase4"):
        finished({"p1_y": {"backbone": "resnet18", "epochs": 3}}).load("phase4.top1_full")
    # An experiment added since the ranking was never a candidate.
    nodes["phase1.p1_new"] = resolve_node("phase1", "p1_new")
    with pytest.raises(DatasetError, match=r"phase1\.p1_new: not run yet"):
        finished({"p1_new": {}}).load("phase4.top1_full")


def test_stale_results_are_refused_with_every_stale_experiment_named_in_one_message(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)
    final, nodes, inputs = final_model_layout(tmp_path)
    (tmp_path / "08_reporting/phase1/comparison.csv").write_text("experiment,auc_mean\np1_x,0.8\n")

    def finished(experiments):
        return FinishedExperiments(tmp_path, CurrentResolutions(nodes, {**inputs,
                                                                        "params:phase1.experiments": experiments}))

    finished({"p1_x": {}}).refuse_stale(["phase1.p1_x", "phase4.top1_full"], "This run (--pipelines reporting)")
    assert list(finished({"p1_x": {}}).comparison("phase1")["experiment"]) == ["p1_x"]

    # p1_x changed: it is stale, and so is the final model retraining it; the command reruns up to phase 4.
    with pytest.raises(DatasetError) as refused:
        finished({"p1_x": {"epochs": 3}}).refuse_stale(["phase1.p1_x", "phase4.top1_full"],
                                                      "This run (--pipelines reporting)")
    message = str(refused.value)
    assert message.startswith("This run (--pipelines reporting) reads results that do not match the "
                              "current parameters:")
    assert "\n  - phase1.p1_x: epochs: " in message and " -> 3" in message
    assert "\n  - phase4.top1_full: retrains phase1.p1_x, ranked by phase 4, whose parameters changed" in message
    assert "Run phase4 (kedro run --pipelines phase4; folds still current are skipped)" in message

    # Experiments changed alike share a line.
    nodes["phase1.p1_y"] = resolve_node("phase1", "p1_y")
    resolved = resolve("phase1", "p1_y", {"p1_y": {}}, DEFAULTS, DATA, PREPROCESSING)
    ResolvedExperimentDataset(str(tmp_path / "05_model_input/phase1/p1_y/resolved_config.json")).save(resolved)
    with pytest.raises(DatasetError, match=r":\n  - phase1\.p1_x, phase1\.p1_y: epochs: \d+ -> 3\n  - phase4"):
        finished({"p1_x": {"epochs": 3}, "p1_y": {"epochs": 3}}).refuse_stale(
            ["phase1.p1_x", "phase1.p1_y", "phase4.top1_full"], "This run")
    del nodes["phase1.p1_y"]

    # A phase that never ran is one line, not one per experiment.
    with pytest.raises(DatasetError, match=r":\n  - phase2: not run yet \(none of its 2 experiments\)\nRun phase2 "):
        finished({"p1_x": {}}).refuse_stale(["phase2.p2_a", "phase2.p2_b"], "This run")

    # A phase's comparison read on its own (generalisation's hold-outs) names its reader and the way out.
    nodes["phase1.p1_new"] = resolve_node("phase1", "p1_new")
    with pytest.raises(DatasetError, match=r"hold-outs \(from phase1\) reads results .*\n  - phase1\.p1_new: not run "
                                           r"yet\nRun phase1 \(kedro run "
                                           r"--pipelines phase1; .*or set holdouts_from: null"):
        finished({"p1_x": {}, "p1_new": {}}).comparison("phase1", "hold-outs (from phase1)",
                                                         "set holdouts_from: null")
