"""The whole demo study through Kedro (tiny): phase-2 tables, phase 4, the reporting outputs and the report."""

from __future__ import annotations

import json

import pandas as pd
import pypdf
import pytest
import timm
import yaml
from kedro.io import DatasetError

from tests.conftest import PROJECT_ROOT

PHASE2 = list(yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_phase2.yml").read_text())["phase2"]["experiments"])


def reporting(study, relative: str):
    return study.path / "data/demo/08_reporting" / relative


def test_phase2_tables_hold_every_experiment_pair_and_holdout(tiny_study):
    comparison = pd.read_csv(reporting(tiny_study, "phase2/comparison.csv"))
    assert len(PHASE2) == 13 and list(comparison["experiment"]) == PHASE2
    # p2a_t1_original and p2b_resnet18_224 have one config: trained once, reported under both names.
    fingerprints = comparison.set_index("experiment")["fingerprint"]
    assert fingerprints["p2a_t1_original"] == fingerprints["p2b_resnet18_224"]
    tests = pd.read_csv(reporting(tiny_study, "phase2/paired_tests.csv"))
    pairs = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_phase2.yml").read_text())["phase2"]["comparisons"]
    for pair in pairs:
        rows = tests[(tests["baseline"] == pair["baseline"]) & (tests["treatment"] == pair["treatment"])]
        assert set(rows["metric"]) == {"auc", "accuracy", "f1", "accuracy_at_threshold", "f1_at_threshold", "val_auc",
                                       "pairwise_auc:text2img", "pairwise_auc:inpainting", "pairwise_auc:insight"}
    for _metric, rows in tests.groupby("metric"):
        # Holm over the phase's pairs for that metric: never below the raw p, monotone in it.
        ordered = rows.sort_values("p_nadeau_bengio")
        assert (ordered["p_holm"] >= ordered["p_nadeau_bengio"] - 1e-12).all()
        assert ordered["p_holm"].is_monotonic_increasing
    holdouts = comparison.dropna(subset=["delta_vs_reference"]).set_index("experiment")
    assert set(holdouts.index) == {"p2a_t3_holdout_text2img", "p2a_t3_holdout_inpainting", "p2a_t3_holdout_insight"}
    for name, row in holdouts.iterrows():
        assert row["heldout_source"] == name.removeprefix("p2a_t3_holdout_")
        assert row["delta_vs_reference"] == row["reference_in_source_auc"] - row["heldout_auc"] or abs(
            row["delta_vs_reference"] - (row["reference_in_source_auc"] - row["heldout_auc"])) < 1e-9
        assert str(row["delta_vs_reference_flag"]) == str(row["delta_vs_reference"] > 0.05)
    choice = json.loads(reporting(tiny_study, "phase2/preprocessing_choice.json").read_text())
    assert choice["source"] == "phase-2 results" and choice["settings"]["image_size"] == 32


def test_phase4_selection_scaling_and_full_runs(tiny_study):
    selection = json.loads(reporting(tiny_study, "phase4/selection.json").read_text())
    chosen = [s["model"] for s in selection["selected"]]
    assert len(chosen) == 3
    assert {c["name"] for c in selection["criteria"]} == {"val_auc", "worst_source_val_auc", "gflops"}
    scaling = pd.read_csv(reporting(tiny_study, "phase4/scaling.csv"))
    for model in chosen:
        rows = scaling[scaling["model"] == model].sort_values("subsample")
        assert list(rows["subsample"]) == [0.2, 0.5, 1.0]
        assert rows["n_train_mean"].is_monotonic_increasing
        assert rows["n_test_mean"].nunique() == 1  # every fraction is tested on the whole test fold
    for k in (1, 2, 3):
        slot = reporting(tiny_study, f"phase4/top{k}_full")
        assert len(pd.read_csv(slot / "hard_examples.csv")) > 0
        for figure in ("hard_examples.png", "confidence_histograms.png", "reliability.png", "gradcam_gallery.png"):
            assert (slot / figure).stat().st_size > 5_000


def test_a_final_model_whose_training_changed_since_phase4_ran_is_refused_before_anything_is_packaged(tiny_study):
    package = tiny_study.path / "data/demo/06_models/package"
    before = sorted(package.rglob("*")) if package.exists() else []
    changed = {"predict": {"model": "phase4.top1_full"},
               "phase4": {"training": {"epochs": 3, "scheduler": {"T_max": 3}}}}
    with pytest.raises(DatasetError, match=r"phase4\.top1_full was trained under other parameters than the current "
                                           r"ones \(epochs: 1 -> 3; scheduler\.T_max: 1 -> 3\).*"
                                           r"kedro run --env demo --pipelines phase4"):
        tiny_study.run("package", params=changed)
    assert (sorted(package.rglob("*")) if package.exists() else []) == before


def test_a_report_over_results_that_the_parameters_no_longer_describe_is_refused_before_any_node(tiny_study):
    deck = reporting(tiny_study, "report.pdf")
    written = deck.stat().st_mtime_ns
    changed = {"phase1": {"experiments": {"p1_resnet18_baseline": {"epochs": 2, "scheduler": {"T_max": 2}}}}}
    with pytest.raises(DatasetError) as refused:
        tiny_study.run("reporting", params=changed)
    message = str(refused.value)
    assert message.startswith("This run (--pipelines reporting) reads results that do not match the "
                              "current parameters:")
    assert "\n  - phase1.p1_resnet18_baseline: epochs: 6 -> 2; scheduler.T_max: 6 -> 2" in message
    # Only what changed is named; phase 4 ranked phase 1, so the command reruns the study up to phase 4.
    assert "phase1.p1_simplecnn_baseline" not in message and "phase2." not in message
    assert "Run phase4 (kedro run --env demo --pipelines phase4; folds still current are skipped)" in message
    assert deck.stat().st_mtime_ns == written


def load_in_session(study, params, load):
    """``load(catalog)`` in a Kedro session of ``study``'s demo environment, as a notebook's catalog or a run's."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(study.path)
    with KedroSession.create(project_path=study.path, env="demo", runtime_params=params) as session:
        return load(session.load_context().catalog)


def test_thresholds_chosen_by_another_rule_than_the_current_one_are_refused_by_the_report_and_the_package(
        tiny_study):
    deck = reporting(tiny_study, "report.pdf")
    package = tiny_study.path / "data/demo/06_models/package"
    written, packaged = deck.stat().st_mtime_ns, sorted(package.rglob("*")) if package.exists() else []
    changed = {"evaluation": {"threshold": {"rule": "eer"}}}
    with pytest.raises(DatasetError) as refused:
        tiny_study.run("reporting", params=changed)
    # Every experiment was evaluated by youden: one line names them all, and the command re-evaluates them.
    (line,) = [line for line in str(refused.value).splitlines() if line.startswith("  - ")]
    assert line.endswith(": evaluation.threshold: youden -> eer")
    assert "phase1.p1_resnet18_baseline" in line and "phase4.top1_full" in line
    assert "Run phase4 (kedro run --env demo --pipelines phase4; folds still current are skipped)" in str(
        refused.value)
    with pytest.raises(DatasetError, match=r"phase4\.top1_full was evaluated under other settings than the current "
                                           r"ones \(evaluation\.threshold: youden -> eer\)"):
        tiny_study.run("package", params={**changed, "predict": {"model": "phase4.top1_full"}})
    assert deck.stat().st_mtime_ns == written
    assert (sorted(package.rglob("*")) if package.exists() else []) == packaged
    # A notebook showing phase 1 says so at its top, as the refused report did.
    from deepfake_kedro.notebook_checks import out_of_date_note

    note = load_in_session(tiny_study, changed, lambda catalog: out_of_date_note(catalog, phases=["phase1"]))
    (line,) = [line for line in note.splitlines() if line.startswith("- ")]
    assert line.endswith(": evaluation.threshold: youden -> eer") and "phase1.p1_resnet18_baseline" in line


def test_the_deck_leaves_out_a_section_whose_experiments_changed_since_it_was_made(tiny_study):
    def sections(params):
        return load_in_session(tiny_study, params, lambda catalog: {s.name: s for s in catalog.load("report_sections")})

    made = sections({})
    title = "Generalisation: train on one fake source, test on each"
    assert made["generalisation"].title == title and made["generalisation"].image is not None
    shown = made["generalisation"].experiments
    assert {"generalisation.gen_insight", "phase2.p2a_t1_original", "phase2.p2a_t3_holdout_insight"} <= set(shown)
    # generalisation.gen_insight retrained on other settings than the slide shows: a default run would otherwise
    # put the old matrix beside the new study.
    changed = sections({"generalisation": {"experiments": {"gen_insight": {"batch_size": 8}}}})
    left_out = changed["generalisation"]
    assert left_out.title == f"{title}: left out, out of date" and left_out.image is None
    assert left_out.table["experiment"].tolist() == ["generalisation.gen_insight"]
    assert left_out.table["changed since the section was made"].tolist() == ["batch_size: 32 -> 8"]
    assert left_out.table["config (then -> now)"].str.startswith(shown["generalisation.gen_insight"]).all()
    assert "Run kedro run --env demo --pipelines generalisation, then the report again" in left_out.caption
    assert changed["attribution"].title == made["attribution"].title
    # Attribution's models, resolved by its own nodes: a change to attribution.model leaves its section out alone.
    shown = made["attribution"].experiments
    assert {"attribution.flat", "attribution.level1", "attribution.level2"} <= set(shown)
    retrained = sections({"attribution": {"model": {"batch_size": 8}}})
    assert retrained["attribution"].title == f"{made['attribution'].title}: left out, out of date"
    assert retrained["attribution"].table["experiment"].tolist() == list(shown)
    assert set(retrained["attribution"].table["changed since the section was made"]) == {"batch_size: 32 -> 8"}
    assert retrained["generalisation"].title == title


def test_a_notebook_says_which_of_the_results_it_shows_no_longer_match_the_parameters(tiny_study):
    from deepfake_kedro.notebook_checks import out_of_date_note

    def note(params):
        return load_in_session(tiny_study, params, lambda catalog: out_of_date_note(
            catalog, phases=["phase1"], sections=["attribution", "generalisation"]))

    assert note({}) is None  # as the study left it: nothing to say
    shown = note({"phase1": {"experiments": {"p1_resnet18_baseline": {"epochs": 2}}},
                  "attribution": {"model": {"batch_size": 8}}})
    # The phase's experiments as a kedro run reading them is told, then the sections whose models changed.
    assert "This notebook reads results that do not match the current parameters:" in shown
    assert "- phase1.p1_resnet18_baseline: epochs: 6 -> 2\n" in shown
    assert "p1_simplecnn_baseline" not in shown
    assert "Run phase1 (kedro run --env demo --pipelines phase1;" in shown
    assert "The attribution results were made under other parameters than the current ones:" in shown
    assert "- attribution.flat: batch_size: 32 -> 8" in shown
    assert "Run kedro run --env demo --pipelines attribution to make them again." in shown
    assert "generalisation" not in shown  # its experiments did not change


def test_a_report_or_notebook_over_images_changed_since_the_indexing_names_them(tiny_study):
    from deepfake_kedro.data_index import DataLayoutError
    from deepfake_kedro.notebook_checks import out_of_date_note

    raw = tiny_study.path / "data/01_raw/demo"
    deck = reporting(tiny_study, "report.pdf")
    written = deck.stat().st_mtime_ns
    example = sorted(raw.glob("wiki/**/*.jpg"))[0]
    data = example.read_bytes()
    example.unlink()
    example.write_bytes(data)  # written again unchanged: its times moved, its content did not
    assert load_in_session(tiny_study, {}, lambda catalog: out_of_date_note(catalog)) is None
    added = example.with_name("added_since.jpg")
    added.write_bytes(data)
    try:
        with pytest.raises(DataLayoutError) as refused:
            tiny_study.run("reporting")
        assert str(refused.value).startswith(
            f"This run (--pipelines reporting) reads results made from the images under {raw} as the preprocessing "
            f"last indexed them, and they changed since: 1 added, 0 removed, 0 replaced "
            f"(e.g. {added.relative_to(raw).as_posix()}). Run the study again (kedro run --env demo: ")
        assert deck.stat().st_mtime_ns == written
        note = load_in_session(tiny_study, {}, lambda catalog: out_of_date_note(catalog, phases=["phase1"]))
        assert note.startswith("This notebook reads results made from the images under") and "1 added" in note
    finally:
        added.unlink()
    assert load_in_session(tiny_study, {}, lambda catalog: out_of_date_note(catalog, phases=["phase1"])) is None
    # A source folder gone: the comparison itself names it.
    (raw / "insight").rename(raw / "insight_moved")
    try:
        with pytest.raises(DataLayoutError, match=r"compared with their last indexing, which fails here: data\.sources "
                                                  r"names 'insight', but .* does not exist"):
            tiny_study.run("reporting")
    finally:
        (raw / "insight_moved").rename(raw / "insight")


def test_results_read_by_a_run_are_its_inputs_experiments_or_their_whole_phase():
    from deepfake_kedro.hooks import CurrentParametersHook

    labels = ["phase1.p1_a", "phase1.p1_b", "phase4.top1_full", "phase4.top1_50pct", "generalisation.gen_x"]
    inputs = {"phase4.top1_full.gradcam_overlays", "phase1.comparison", "eda.shortcut_audit", "params:phase4",
              "fold_table"}
    assert CurrentParametersHook.results_read(inputs, labels) == ["phase1.p1_a", "phase1.p1_b", "phase4.top1_full"]
    assert CurrentParametersHook.results_read({"params:phase1.experiments", "raw_images"}, labels) == []


def test_gradcam_overlays_are_organised_by_prediction_type_and_source(tiny_study):
    folder = reporting(tiny_study, "gradcam/phase3/p3_convnext_tiny")
    overlays = sorted(folder.glob("*/*/*.png"))
    assert 10 <= len(overlays) <= 20
    assert {p.parent.parent.name for p in overlays} <= {"TP", "TN", "FP", "FN"}
    assert {p.parent.name for p in overlays} <= {"wiki", "text2img", "inpainting", "insight"}


def test_reporting_outputs_and_report_numbers_match_model_comparison(tiny_study):
    table = pd.read_csv(reporting(tiny_study, "model_comparison.csv"))
    assert set(table["phase"]) == {"phase1", "phase2", "phase3", "phase4"}
    assert {"auc_mean", "auc_std", "auc_ci_low", "auc_ci_high"} <= set(table.columns)
    detailed = json.loads(reporting(tiny_study, "detailed_results.json").read_text())
    resnet = detailed["phase1"]["p1_resnet18_baseline"]
    assert len(resnet["folds"]) == 5 and resnet["config"]["backbone"] == "resnet18" and resnet["fingerprint"]
    assert any(key.startswith("pairwise_auc:") for key in resnet["folds"][0])

    benchmark = pd.read_csv(reporting(tiny_study, "model_benchmark.csv")).set_index("backbone")
    assert len(benchmark) == 7
    for name, row in benchmark.iterrows():
        if name != "simple_cnn":
            model = timm.create_model(row["timm_name"], pretrained=False, num_classes=1)
            assert row["params"] == sum(p.numel() for p in model.parameters())
        assert row["gflops"] > 0 and row["images_per_s"] > 0 and row["precision"] in {"fp32", "bf16"}

    pages = [page.extract_text() for page in pypdf.PdfReader(reporting(tiny_study, "report.pdf")).pages]
    text = "\n".join(pages)
    for phase in ("Phase 1", "Phase 2", "Phase 3", "Phase 4"):
        assert f"{phase}: results" in text and f"{phase}: AUC / accuracy / F1" in text
    for row in table.itertuples():
        # Every experiment's AUC with its interval, exactly as in model_comparison.csv.
        assert f"{row.auc_mean:.3f} [{row.auc_ci_low:.3f}, {row.auc_ci_high:.3f}]" in text, row.experiment


def test_the_reduced_simulation_learns_the_planted_sources_and_checks_every_planted_effect(tiny_study):
    # The demo data plants its effects by construction (docs/demo.md); even the reduced study (60 identities,
    # six epochs in phase 1) must learn the sources. The hold-out direction (insight's Δ above inpainting's)
    # needs the demo's 160 identities: at 60 it is noise, even with six epochs for the hold-outs (docs/demo.md);
    # test_demo_data.py checks that direction in the data itself.
    phase1 = pd.read_csv(reporting(tiny_study, "phase1/comparison.csv")).set_index("experiment")
    assert (phase1["auc_mean"] >= 0.8).all(), phase1["auc_mean"]
    check = pd.read_csv(reporting(tiny_study, "demo_check.csv"))
    planted = yaml.safe_load((PROJECT_ROOT / "conf/demo/parameters.yml").read_text())["demo"]["planted_effects"]
    assert list(check["effect"]) == [entry["effect"] for entry in planted]
