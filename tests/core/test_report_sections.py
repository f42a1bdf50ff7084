import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from deepfake_kedro.commands import RUN_ENV_VARIABLE
from deepfake_kedro.datasets import CurrentResolutions, ReportSectionDataset, ReportSectionsDataset
from deepfake_kedro.report_sections import ReportSection, ordered, section_slides
from deepfake_kedro.study import resolve
from tests.core.test_datasets import DATA, DEFAULTS, PREPROCESSING, resolve_node


def _figure():
    figure, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    return figure


def test_section_round_trips_through_its_folder_and_replaces_the_previous_one(tmp_path):
    dataset = ReportSectionDataset(str(tmp_path / "sections" / "robustness"))
    table = pd.DataFrame({"corruption": ["jpeg", "blur"], "auc": [0.91, 0.84]})
    dataset.save(ReportSection.with_figure("robustness", "Robustness", "AUC per corruption.", _figure(), table,
                                           {"phase4.top1_full": "0123abcd"}))
    loaded = dataset.load()
    assert (loaded.name, loaded.title, loaded.caption) == ("robustness", "Robustness", "AUC per corruption.")
    assert loaded.experiments == {"phase4.top1_full": "0123abcd"}
    pd.testing.assert_frame_equal(loaded.table, table)
    assert loaded.image.ndim == 3 and loaded.image.shape[2] == 3
    dataset.save(ReportSection("robustness", "Robustness v2", "No figure this time."))
    again = dataset.load()
    assert again.title == "Robustness v2" and again.image is None and again.table is None
    assert not list((tmp_path / "sections").glob("*.partial")) and not list((tmp_path / "sections").glob("*.old"))


def test_sections_are_read_in_deck_order_and_a_missing_folder_is_no_section(tmp_path):
    root = tmp_path / "08_reporting" / "sections"
    assert ReportSectionsDataset(str(tmp_path)).load() == []
    for name in ("zeta_extra", "attribution", "external"):
        ReportSectionDataset(str(root / name)).save(ReportSection(name, name.title(), "caption"))
    assert [s.name for s in ReportSectionsDataset(str(tmp_path)).load()] == ["external", "attribution", "zeta_extra"]
    with pytest.raises(DatasetError, match="read-only"):
        ReportSectionsDataset(str(tmp_path)).save(["not a section"])


def test_missing_section_names_its_file(tmp_path):
    with pytest.raises(DatasetError, match="section.json"):
        ReportSectionDataset(str(tmp_path / "external")).load()


def test_section_slides_hold_its_table_then_its_figure():
    table = pd.DataFrame({"a": [1.0]})
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    assert len(section_slides(ReportSection("x", "X", "c", table, image))) == 2
    assert len(section_slides(ReportSection("x", "X", "c", None, image))) == 1
    assert section_slides(ReportSection("x", "X", "c", table.iloc[:0], None)) == []
    assert [s.name for s in ordered([ReportSection("b", "", ""), ReportSection("demo_check", "", "")])] == \
        ["demo_check", "b"]
    plt.close("all")


def test_a_section_showing_an_experiment_that_changed_since_is_left_out_with_the_way_back(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)
    made = resolve("phase1", "p1_x", {"p1_x": {}}, DEFAULTS, DATA, PREPROCESSING)
    root = tmp_path / "08_reporting" / "sections"
    table = pd.DataFrame({"corruption": ["jpeg"], "auc": [0.91]})
    ReportSectionDataset(str(root / "robustness")).save(ReportSection.with_figure(
        "robustness", "Robustness", "AUC per corruption.", _figure(), table, {"phase1.p1_x": made.fingerprint}))
    ReportSectionDataset(str(root / "attribution")).save(ReportSection("attribution", "Attribution", "c", table))

    # The fold run the section was made from keeps its config.
    meta = tmp_path / "06_models" / "runs" / made.fingerprint / "fold_0" / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"config": made.config.model_dump(mode="json")}))

    def sections(experiments):
        inputs = {"params:defaults": DEFAULTS, "params:phase1.experiments": experiments, "params:data": DATA,
                  "params:preprocessing": PREPROCESSING}
        current = CurrentResolutions({"phase1.p1_x": resolve_node("phase1", "p1_x")}, inputs)
        return ReportSectionsDataset(str(tmp_path), current=current).load()

    robustness, attribution = sections({"p1_x": {"num_workers": 4}})  # trains alike: the section stands
    assert robustness.title == "Robustness" and robustness.image is not None and attribution.title == "Attribution"

    robustness, attribution = sections({"p1_x": {"epochs": 3, "batch_size": 8}})
    now = resolve("phase1", "p1_x", {"p1_x": {"epochs": 3, "batch_size": 8}}, DEFAULTS, DATA, PREPROCESSING)
    assert robustness.title == "Robustness: left out, out of date" and robustness.image is None
    assert robustness.table.to_dict("records") == [{
        "experiment": "phase1.p1_x",
        "changed since the section was made": f"batch_size: {made.config.batch_size} -> 8; "
                                              f"epochs: {made.config.epochs} -> 3",
        "config (then -> now)": f"{made.fingerprint} -> {now.fingerprint}"}]
    assert "Run kedro run --pipelines robustness, then the report again" in robustness.caption
    assert len(section_slides(robustness)) == 1 and attribution.title == "Attribution"
    # Its fold runs pruned, the old config is unknown; the section is left out all the same.
    meta.unlink()
    pruned = sections({"p1_x": {"epochs": 3}})[0]
    assert pruned.table["changed since the section was made"].tolist() == ["?"]
    # Gone from the parameters: the section shows what there is.
    assert ReportSectionsDataset(str(tmp_path), current=CurrentResolutions({}, {})).load()[0].title == "Robustness"
    plt.close("all")


def test_the_attribution_section_is_left_out_once_its_models_resolve_to_another_config(tmp_path, monkeypatch):
    from deepfake_kedro.pipelines.attribution.pipeline import approach_pipeline

    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)
    # Attribution's own resolve nodes, as the hook finds them in the registered pipelines.
    nodes = [next(n for n in approach_pipeline(approach).nodes if f"attribution.{approach}.models" in n.outputs)
             for approach in ("flat", "hierarchical")]

    data = {**DATA, "families": {"insight": "face_swap"}}

    def current(model):
        inputs = {"params:defaults": DEFAULTS, "params:data": data, "params:preprocessing": PREPROCESSING,
                  "params:attribution": {"model": model}}
        return CurrentResolutions({}, inputs, nodes)

    made = {approach: node.func(DEFAULTS, data, PREPROCESSING, {"model": {"epochs": 2}})
            for approach, node in zip(("flat", "hierarchical"), nodes, strict=True)}
    shown = {f"attribution.{m['name']}": m["fingerprint"] for models in made.values() for m in models}
    assert list(shown) == ["attribution.flat", "attribution.level1"]  # one fake source: no level 2 or 3
    section = ReportSection("attribution", "Source attribution: flat vs hierarchical", "c",
                            pd.DataFrame({"metric": ["balanced_accuracy"]}), experiments=shown)
    ReportSectionDataset(str(tmp_path / "08_reporting" / "sections" / "attribution")).save(section)
    # Attribution keeps its fold runs apart from the study's; their meta.json keeps the config trained.
    for models in made.values():
        meta = tmp_path / "06_models" / "attribution_runs" / models[0]["fingerprint"] / "fold_0" / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"config": models[0]["config"]}))

    kept = ReportSectionsDataset(str(tmp_path), current=current({"epochs": 2, "num_workers": 3})).load()
    assert [s.title for s in kept] == ["Source attribution: flat vs hierarchical"]
    (left_out,) = ReportSectionsDataset(str(tmp_path), current=current({"epochs": 5})).load()
    assert left_out.title == "Source attribution: flat vs hierarchical: left out, out of date"
    assert left_out.table["experiment"].tolist() == ["attribution.flat", "attribution.level1"]
    assert left_out.table["changed since the section was made"].tolist() == ["epochs: 2 -> 5"] * 2
    assert "Run kedro run --pipelines attribution, then the report again" in left_out.caption
    plt.close("all")


def test_a_section_taken_at_thresholds_of_another_rule_is_left_out_though_its_models_are_the_same(tmp_path,
                                                                                                 monkeypatch):
    monkeypatch.delenv(RUN_ENV_VARIABLE, raising=False)
    made = resolve("phase1", "p1_x", {"p1_x": {}}, DEFAULTS, DATA, PREPROCESSING)
    root = tmp_path / "08_reporting" / "sections"
    table = pd.DataFrame({"set": ["other"], "accuracy": [0.8]})
    ReportSectionDataset(str(root / "external")).save(ReportSection(
        "external", "External", "c", table, experiments={"phase1.p1_x": made.fingerprint}, threshold_rule="youden"))
    # Robustness scores AUC alone: no rule recorded, so a threshold change leaves it standing.
    ReportSectionDataset(str(root / "robustness")).save(ReportSection(
        "robustness", "Robustness", "c", table, experiments={"phase1.p1_x": made.fingerprint}))
    assert ReportSectionDataset(str(root / "external")).load().threshold_rule == "youden"

    def sections(threshold):
        inputs = {"params:defaults": DEFAULTS, "params:phase1.experiments": {"p1_x": {}}, "params:data": DATA,
                  "params:preprocessing": PREPROCESSING}
        current = CurrentResolutions({"phase1.p1_x": resolve_node("phase1", "p1_x")}, inputs,
                                     evaluation={"threshold": threshold})
        return ReportSectionsDataset(str(tmp_path), current=current).load()

    assert [s.title for s in sections({"rule": "youden"})] == ["External", "Robustness"]
    external, robustness = sections({"rule": "target_fpr", "target_fpr": 0.05})
    assert external.title == "External: left out, out of date" and external.left_out
    assert external.table.to_dict("records") == [{
        "experiment": "phase1.p1_x",
        "changed since the section was made": "evaluation.threshold: youden -> target_fpr (FPR <= 0.05)",
        "config (then -> now)": f"{made.fingerprint} -> {made.fingerprint}"}]
    assert "Run kedro run --pipelines external, then the report again" in external.caption
    assert robustness.title == "Robustness" and not robustness.left_out
    # An invalid rule is the phase's error to raise; here nothing is compared against it.
    assert [s.title for s in sections({"rule": "median"})] == ["External", "Robustness"]
