"""Tests for deepfake_kedro.selection: phase 2 -> preprocessing, phases 1-3 -> final models."""

import pandas as pd
import pytest

from deepfake_kedro.config import resolve_experiment
from deepfake_kedro.selection import (
    SelectionError,
    candidate_table,
    check_ranking,
    final_model_overrides,
    rank_models,
    select_preprocessing,
)

AUG = {"hflip_p": 0.5}
START = {"image_size": 224, "face_crop": False, "augment": False, "normalization": "imagenet"}
STEPS = [
    {"set": {"normalization": "real_norm"}, "baseline": "t1", "treatment": "t2"},
    {"set": {"face_crop": True}, "baseline": "b", "treatment": "c"},
    {"set": {"augment": AUG}, "baseline": "b", "treatment": "d", "when": {"face_crop": False}},
    {"set": {"augment": AUG}, "baseline": "c", "treatment": "e", "when": {"face_crop": True}},
]


def paired_table(gains: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Paired tests with (validation-AUC gain, Holm p) per treatment. The test folds' metrics (auc, accuracy)
    say the opposite, significantly: a rule that read them would choose otherwise."""
    baselines = {"t2": "t1", "c": "b", "d": "b", "e": "c"}
    rows = []
    for treatment, (gain, p) in gains.items():
        for metric in ("val_auc", "auc", "accuracy"):
            rows.append({"baseline": baselines[treatment], "treatment": treatment, "metric": metric,
                         "diff_mean": gain if metric == "val_auc" else -gain, "diff_ci_low": gain - 0.01,
                         "diff_ci_high": gain + 0.01, "p_nadeau_bengio": p / 2,
                         "p_holm": p if metric == "val_auc" else 0.001})
    return pd.DataFrame(rows)


def test_only_significant_gains_are_adopted():
    table = paired_table({"t2": (0.02, 0.20), "c": (0.05, 0.01), "d": (0.03, 0.01), "e": (-0.01, 0.01)})
    choice = select_preprocessing(table, START, STEPS, alpha=0.05)
    # Face crop significant -> adopted; augmentation then judged on crops (c -> e), which lost.
    assert choice["settings"] == {**START, "face_crop": True}
    reasons = {(d["baseline"], d["treatment"]): d for d in choice["decisions"]}
    assert reasons[("t1", "t2")]["reason"].startswith("gain not significant")
    assert reasons[("b", "d")]["applies"] is False
    assert reasons[("c", "e")]["reason"] == "no gain"
    assert choice["source"] == "phase-2 results"


def test_an_untestable_step_is_not_adopted_and_says_why_not():
    table = paired_table({"t2": (0.02, 0.01), "c": (0.05, 0.01), "d": (0.03, 0.01), "e": (0.04, 0.01)})
    table["n_folds"] = 5
    untested = (table["treatment"] == "c") & (table["metric"] == "val_auc")
    table.loc[untested, ["p_holm", "n_folds"]] = float("nan"), 1
    choice = select_preprocessing(table, START, STEPS, alpha=0.05)
    step = next(d for d in choice["decisions"] if d["treatment"] == "c")
    assert step["adopted"] is False and step["reason"] == "not testable (1 fold(s) with val_auc on both sides)"
    assert choice["settings"]["face_crop"] is False


def test_the_choice_reads_validation_auc_and_refuses_a_test_fold_metric():
    table = paired_table({"t2": (-0.02, 0.01), "c": (0.05, 0.01), "d": (0.03, 0.01), "e": (-0.01, 0.01)})
    choice = select_preprocessing(table, START, STEPS)
    # The test folds' AUC (here the opposite of every validation gain, each significant) moves nothing.
    assert choice["settings"] == {**START, "face_crop": True} and choice["metric"] == "val_auc"
    step = next(d for d in choice["decisions"] if d["treatment"] == "c")
    assert step["val_auc_diff"] == 0.05 and "inner validation" in choice["rule"]
    with pytest.raises(SelectionError, match=r"phase2.selection.metric is 'auc', which the test folds measure"):
        select_preprocessing(table, START, STEPS, metric="auc")


def test_different_results_give_a_different_choice_and_override_wins():
    table = paired_table({"t2": (0.02, 0.01), "c": (0.05, 0.30), "d": (0.03, 0.04), "e": (0.0, 1.0)})
    choice = select_preprocessing(table, START, STEPS, alpha=0.05)
    assert choice["settings"] == {**START, "normalization": "real_norm", "augment": AUG}

    forced = select_preprocessing(table, START, STEPS, override={"face_crop": True, "augment": False})
    assert forced["settings"] == {**START, "normalization": "real_norm", "face_crop": True}
    assert forced["source"].startswith("override")
    assert len(forced["decisions"]) == len(STEPS)  # the evidence stays on record


def test_missing_pair_and_bad_keys_are_named():
    table = paired_table({"t2": (0.02, 0.01)})
    with pytest.raises(SelectionError, match=r"steps\[1\].*b -> c"):
        select_preprocessing(table, START, STEPS)
    with pytest.raises(SelectionError, match=r"override.*'backbone'"):
        select_preprocessing(table, START, STEPS[:1], override={"backbone": "resnet50"})
    with pytest.raises(SelectionError, match=r"start.*'image_sise'"):
        select_preprocessing(table, {**START, "image_sise": 1}, [])


def summary(backbone: str, auc: float, pairwise: dict[str, float], image_size: int = 224,
            train_sources="all", preset: str = "medium", **config) -> dict:
    """An experiment's summary with validation AUC ``auc`` and per-source validation AUCs ``pairwise``; its test
    figures are ordered the other way round, so a ranking that read them would choose otherwise."""
    metrics = {"val_auc": {"mean": auc, "std": 0.01, "ci_low": auc - 0.02, "ci_high": auc + 0.02},
               "auc": {"mean": 1.5 - auc, "std": 0.01, "ci_low": 1.48 - auc, "ci_high": 1.52 - auc}}
    metrics.update({f"val_pairwise_auc:{s}": {"mean": v} for s, v in pairwise.items()})
    metrics.update({f"pairwise_auc:{s}": {"mean": 1.5 - v} for s, v in pairwise.items()})
    config = {"backbone": backbone, "cnn_preset": preset, "image_size": image_size, "train_sources": train_sources,
              "eval_sources": "all", "subsample": 1.0, **config}
    return {"config": config, "metrics": metrics}


def test_a_model_is_ranked_on_its_best_experiment_on_the_chosen_preprocessing_when_it_has_one():
    aug = {"hflip_p": 0.5, "brightness": 0.2}
    summaries = {
        "phase1.p1_resnet18_baseline": summary("resnet18", 0.80, {"a": 0.7}, 128),
        "phase2.p2b_resnet18_224": summary("resnet18", 0.82, {"a": 0.75}),
        "phase2.p2c_resnet18_facecrop": summary("resnet18", 0.85, {"a": 0.8}, face_crop=True),
        "phase2.p2d_resnet18_aug": summary("resnet18", 0.84, {"a": 0.8}, augment=aug),
        "phase3.p3_resnet50": summary("resnet50", 0.83, {"a": 0.82}),
        "phase1.p1_simplecnn_baseline": summary("simple_cnn", 0.70, {"a": 0.65}, 128, pretrained=False),
    }
    costs = {name: {"gflops": 1.0, "params_m": 1.0} for name in summaries}
    chosen = {"image_size": 224, "face_crop": False, "augment": False, "normalization": "imagenet"}
    table = candidate_table(summaries, costs, chosen).set_index("model")
    # ResNet-18's face-crop and augmented runs scored higher, but phase 4 retrains it on the 224 px frame.
    assert table.loc["resnet18", "experiment"] == "phase2.p2b_resnet18_224"
    assert table.loc["resnet18", "val_auc"] == 0.82 and bool(table.loc["resnet18", "on_chosen_preprocessing"])
    # A model with no run on the chosen preprocessing keeps its best, flagged.
    assert table.loc["simple_cnn_medium", "experiment"] == "phase1.p1_simplecnn_baseline"
    assert not table.loc["simple_cnn_medium", "on_chosen_preprocessing"]
    # Augmentation given as the same settings in another order (or with defaults spelled out) still matches.
    with_aug = candidate_table(summaries, costs, {**chosen, "augment": {"brightness": 0.2, "hflip_p": 0.5,
                                                                       "erase_p": 0.0}}).set_index("model")
    assert with_aug.loc["resnet18", "experiment"] == "phase2.p2d_resnet18_aug"
    assert candidate_table(summaries, costs).set_index("model").loc["resnet18", "experiment"] == \
        "phase2.p2c_resnet18_facecrop"


def test_candidates_one_per_model_best_experiment_no_holdouts():
    summaries = {
        "phase1.p1_resnet18_baseline": summary("resnet18", 0.80, {"a": 0.7, "b": 0.9}, 128),
        "phase2.p2c_resnet18_facecrop": summary("resnet18", 0.85, {"a": 0.8, "b": 0.9}),
        "phase2.p2a_t3_holdout_a": summary("resnet18", 0.99, {"a": 0.6, "b": 0.99}, train_sources=["r", "b"]),
        "phase3.p3_resnet50": summary("resnet50", 0.83, {"a": 0.82, "b": 0.84}),
        "phase1.p1_simplecnn_baseline": summary("simple_cnn", 0.70, {"a": 0.65, "b": 0.75}, 128),
    }
    costs = {name: {"gflops": 1.0, "params_m": 1.0} for name in summaries}
    table = candidate_table(summaries, costs).set_index("model")
    assert sorted(table.index) == ["resnet18", "resnet50", "simple_cnn_medium"]
    assert table.loc["resnet18", "experiment"] == "phase2.p2c_resnet18_facecrop"
    assert table.loc["resnet18", "worst_source_val_auc"] == 0.8
    assert table.loc["resnet18", "worst_source"] == "a"
    assert "auc_mean" not in table.columns  # no test-fold figure ranks


def test_ranking_weighted_mean_rank_by_hand_and_override():
    candidates = pd.DataFrame({
        "model": ["big", "mid", "small", "tiny"], "experiment": ["e1", "e2", "e3", "e4"],
        "val_auc": [0.95, 0.90, 0.85, 0.60], "worst_source_val_auc": [0.80, 0.88, 0.84, 0.55],
        "gflops": [10.0, 2.0, 0.5, 0.1], "params_m": [50, 10, 3, 1],
    })
    weights = {"val_auc": 0.5, "worst_source_val_auc": 0.3, "gflops": 0.2}
    result = rank_models(candidates, weights, top_k=3)
    # By hand: ranks (auc, worst, gflops): big (1,3,4) -> 0.5+0.9+0.8 = 2.2; mid (2,1,3) -> 1+0.3+0.6 = 1.9;
    # small (3,2,2) -> 1.5+0.6+0.4 = 2.5; tiny (4,4,1) -> 2+1.2+0.2 = 3.4.
    scores = {c["model"]: c["score"] for c in result["candidates"]}
    assert scores == pytest.approx({"big": 2.2, "mid": 1.9, "small": 2.5, "tiny": 3.4})
    assert [s["model"] for s in result["selected"]] == ["mid", "big", "small"]
    assert {c["name"] for c in result["criteria"]} == set(weights)
    assert result["source"] == "ranking"

    forced = rank_models(candidates, weights, top_k=3, override=["tiny", "big", "mid"])
    assert [s["model"] for s in forced["selected"]] == ["tiny", "big", "mid"]
    with pytest.raises(SelectionError, match="'nope'"):
        rank_models(candidates, weights, override=["nope"])
    with pytest.raises(SelectionError, match="unknown criteria.*'speed'"):
        rank_models(candidates, {"speed": 1.0})


def test_final_model_overrides_resolve_with_chosen_preprocessing():
    defaults = {"seed": 1, "cv_folds": 5, "val_ratio": 0.1, "subsample": 0.2, "pretrained": False, "epochs": 2}
    best = resolve_experiment("x", {"x": {"backbone": "resnet50", "image_size": 128, "dropout": 0.2}}, defaults)
    choice = {"settings": {"image_size": 224, "face_crop": True, "augment": False, "normalization": "real_norm"}}
    overrides = final_model_overrides(best.model_dump(mode="json"), choice, 0.5)
    config = resolve_experiment("p4a", {"p4a": overrides}, defaults)
    assert (config.backbone, config.dropout, config.image_size, config.face_crop, config.normalization,
            config.subsample) == ("resnet50", 0.2, 224, True, "real_norm", 0.5)
    # A scaling fraction thins training alone: it is tested on the whole test fold, as 1.0 is.
    assert best.subsample_test and not config.subsample_test
    full = resolve_experiment("p4b", {"p4b": final_model_overrides(best.model_dump(mode="json"), choice, 1.0)},
                              defaults)
    assert full.subsample_test and "subsample_test" not in final_model_overrides(best.model_dump(mode="json"),
                                                                                 choice, 1.0)


def test_phase4_training_retrains_a_short_budget_model_on_the_final_budget():
    defaults = {"seed": 1, "cv_folds": 5, "val_ratio": 0.1, "subsample": 0.2, "pretrained": False, "epochs": 4,
                "optimizer": {"lr": 2e-3, "weight_decay": 0.01}}
    quick = resolve_experiment("p3", {"p3": {"backbone": "resnet34", "epochs": 1, "batch_size": 64,
                                             "scheduler": {"T_max": 1}, "optimizer": {"lr": 5e-3}}}, defaults)
    choice = {"settings": {"image_size": 224, "face_crop": True}}
    training = {"epochs": 4, "batch_size": 32, "scheduler": {"T_max": 4}}
    overrides = final_model_overrides(quick.model_dump(mode="json"), choice, 1.0, training)
    config = resolve_experiment("p4b", {"p4b": overrides}, defaults)
    assert (config.epochs, config.batch_size, config.scheduler.T_max) == (4, 32, 4)
    # Nested keys merge: the model's own learning rate and the scheduler's type stay.
    assert (config.optimizer.lr, config.scheduler.type, config.backbone) == (5e-3, "cosine_annealing", "resnet34")
    assert (config.image_size, config.face_crop, config.subsample) == (224, True, 1.0)
    same = final_model_overrides(quick.model_dump(mode="json"), choice, 1.0, {})
    assert resolve_experiment("p4b", {"p4b": same}, defaults).epochs == 1


@pytest.mark.parametrize("training, named", [
    ({"image_size": 64}, "'image_size'"), ({"face_crop_margin": 0.5, "epochs": 3}, "'face_crop_margin'"),
    ({"subsample": 0.5}, "'subsample'"), ({"subsample_test": True}, "'subsample_test'"), ({"seed": 3}, "'seed'"),
])
def test_phase4_training_may_not_set_what_phase4_decides(training, named):
    choice = {"settings": {"image_size": 224, "face_crop": True, "face_crop_margin": 0.3}}
    with pytest.raises(SelectionError, match=rf"phase4.training sets \[{named}\]"):
        final_model_overrides({"backbone": "resnet18"}, choice, 1.0, training)


def test_the_run_hook_rejects_a_bad_phase4_training_before_any_training():
    from deepfake_kedro.config import ConfigError
    from deepfake_kedro.hooks import ValidateExperimentsHook

    def parameters(training):
        return {"defaults": {"seed": 1, "cv_folds": 5, "val_ratio": 0.1, "subsample": 0.2, "pretrained": False},
                "phase2": {"selection": {"start": {"image_size": 224, "face_crop": False},
                                         "steps": [{"set": {"face_crop_margin": 0.4}}]}},
                "phase1": {"experiments": {"a": {"backbone": "resnet18"}, "b": {"backbone": "simple_cnn"}}},
                "phase4": {"ranking": {"weights": {"val_auc": 1.0}, "top_k": 2}, "training": training}}

    ValidateExperimentsHook._check_choices(parameters({"epochs": 4, "scheduler": {"T_max": 4}}), {"phase4"})
    with pytest.raises(ConfigError, match=r"phase4.training.*epoch"):
        ValidateExperimentsHook._check_choices(parameters({"epoch": 4}), {"phase4"})
    with pytest.raises(SelectionError, match=r"\['face_crop_margin'\]"):
        ValidateExperimentsHook._check_choices(parameters({"face_crop_margin": 0.2}), {"phase4"})


def test_unknown_ranking_criteria_are_named_by_the_ranking_and_by_the_run_hook():
    from deepfake_kedro.hooks import ValidateExperimentsHook
    from deepfake_kedro.selection import check_ranking_weights

    check_ranking_weights({"val_auc": 1.0, "gflops": 0.5})
    with pytest.raises(SelectionError, match=r"phase4.ranking.weights: unknown criteria \['speed'\]; use \["):
        check_ranking_weights({"val_auc": 1.0, "speed": 1.0})
    # The former test-fold criteria are named with their successors.
    with pytest.raises(SelectionError, match=r"auc_mean -> val_auc, worst_source_auc -> worst_source_val_auc"):
        check_ranking_weights({"auc_mean": 0.5, "worst_source_auc": 0.5})
    parameters = {"phase4": {"ranking": {"weights": {"speed": 1.0}}}}
    with pytest.raises(SelectionError, match=r"unknown criteria \['speed'\]"):
        ValidateExperimentsHook._check_choices(parameters, {"phase4"})
    ValidateExperimentsHook._check_choices(parameters, {"phase1"})  # phase 4 not in this run: not checked


def test_phase4_ranking_keys_are_checked_against_the_models_before_training():
    models = ["simple_cnn_small", "resnet18", "resnet18"]
    check_ranking({"weights": {"val_auc": 1}, "top_k": 2}, models)
    cases = [
        ({"weights": {"speed": 1}, "top_k": 1}, r"weights: unknown criteria \['speed'\]"),
        ({"weights": {}, "top_k": 3}, r"top_k is 3 but phases 1-3 train only 2 models"),
        ({"weights": {}, "top_k": 1, "override": ["resnet50"]}, r"override names \['resnet50'\]"),
        ({"weights": {}, "top_k": 2, "override": ["resnet18"]}, r"override names 1 models but top_k is 2"),
        ({"weights": {}, "top_k": 0}, r"top_k must be a whole number of 1 or more"),
    ]
    for ranking, message in cases:
        with pytest.raises(SelectionError, match=message):
            check_ranking(ranking, models)
