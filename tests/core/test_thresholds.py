import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_curve

from deepfake_kedro.experiment import evaluate_runs, plan_fold_runs, predict_validation
from deepfake_kedro.folds import build_fold_table
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.run_store import FoldResult, FoldRunStore, run_key
from deepfake_kedro.thresholds import (
    ThresholdRule,
    choose_threshold,
    metrics_at_threshold,
    threshold_rule,
    threshold_sweep,
)
from tests.core.test_folds import dff_like_images
from tests.core.test_training import tiny_config

SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}

# ROC by hand (predict fake when p >= t):
#   t    0.9  0.7  0.6  0.4  0.3  0.1
#   TPR  1/3  2/3  2/3  1    1    1
#   FPR  0    0    1/3  1/3  2/3  1
LABELS = np.array([0, 0, 0, 1, 1, 1])
PROBS = np.array([0.1, 0.3, 0.6, 0.4, 0.7, 0.9])


@pytest.mark.parametrize(("rule", "expected"), [
    (ThresholdRule("youden"), 0.7),  # J = 2/3 at 0.7 and 0.4: the higher threshold wins the tie
    (ThresholdRule("eer"), 0.6),  # FNR = FPR = 1/3
    (ThresholdRule("target_fpr", 0.05), 0.7),  # FPR 0 allows TPR 2/3 at most
    (ThresholdRule("target_fpr", 0.4), 0.4),  # FPR 1/3 allows TPR 1
])
def test_rules_pick_the_hand_computed_roc_point(rule, expected):
    assert choose_threshold(LABELS, PROBS, rule) == pytest.approx(expected)


def test_youden_matches_sklearn_roc_curve_on_random_scores():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(0.3 * labels + rng.normal(0.4, 0.2, 200), 0, 1)
    fpr, tpr, thresholds = roc_curve(labels, probs)
    assert choose_threshold(labels, probs, ThresholdRule()) == pytest.approx(thresholds[np.argmax(tpr - fpr)])
    chosen = choose_threshold(labels, probs, ThresholdRule("target_fpr", 0.1))
    at = metrics_at_threshold(labels, probs, chosen)
    assert at["fpr_at_threshold"] <= 0.1
    assert at["tpr_at_threshold"] == pytest.approx(tpr[fpr <= 0.1].max())


@pytest.mark.parametrize(("rule", "labels", "probs"), [
    (ThresholdRule("target_fpr", 0.05), [0, 1, 0, 1, 1], [1.0, 0.9, 0.2, 0.8, 1.0]),
    (ThresholdRule("youden"), [0, 0, 1, 1], [1.0, 1.0, 0.1, 0.2]),  # worse than chance: J is best at the start
])
def test_saturated_probabilities_do_not_break_the_rule(rule, labels, probs):
    # float32 sigmoid returns exactly 1.0 above a logit of ~17; the rule's "call nothing fake" point must hold.
    labels, probs = np.array(labels), np.array(probs)
    chosen = choose_threshold(labels, probs, rule)
    assert metrics_at_threshold(labels, probs, chosen)["fpr_at_threshold"] == 0.0
    assert chosen > 1.0 and chosen == float(str(chosen))  # survives a JSON round trip


def test_one_class_validation_keeps_half():
    assert choose_threshold([1, 1, 1], [0.2, 0.6, 0.9], ThresholdRule()) == 0.5


def test_metrics_at_threshold_match_sklearn():
    y, p = np.array([0, 1, 1, 0, 1, 0, 1]), np.array([0.2, 0.65, 0.5, 0.7, 0.9, 0.1, 0.3])
    at = metrics_at_threshold(y, p, 0.6)
    predicted = (p >= 0.6).astype(int)
    assert at["accuracy_at_threshold"] == pytest.approx(accuracy_score(y, predicted))
    assert at["f1_at_threshold"] == pytest.approx(f1_score(y, predicted))
    assert at["tpr_at_threshold"] == pytest.approx(2 / 4)
    assert at["fpr_at_threshold"] == pytest.approx(1 / 3)
    sweep = threshold_sweep(y, p, n_points=11)
    assert sweep.loc[6, "threshold"] == pytest.approx(0.6)
    assert sweep.loc[6, "accuracy"] == pytest.approx(at["accuracy_at_threshold"])
    assert sweep["tpr"].is_monotonic_decreasing


@pytest.mark.parametrize(("params", "message"), [
    ({"rule": "best"}, "evaluation.threshold.rule is 'best'"),
    ({"rule": "target_fpr"}, "evaluation.threshold.target_fpr must be a number in (0, 1)"),
    ({"rule": "target_fpr", "target_fpr": 1.5}, "evaluation.threshold.target_fpr"),
    ({"rule": "youden", "target_fpr": 0.05}, "only used with rule target_fpr"),
    ({"rul": "eer"}, "evaluation.threshold: unknown keys ['rul']"),
])
def test_bad_threshold_parameters_name_the_key(params, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        threshold_rule(params)


def test_threshold_rule_defaults_to_youden_and_reads_target_fpr():
    assert threshold_rule(None) == ThresholdRule("youden")
    assert threshold_rule({"rule": "target_fpr", "target_fpr": 0.05}).describe() == "target_fpr (FPR <= 0.05)"


def _fold(fold: int, rng: np.random.Generator, n: int = 40) -> FoldResult:
    def predictions(role: str) -> pd.DataFrame:
        sources = rng.choice(list(SOURCES), n)
        labels = np.array([SOURCES[s] == "fake" for s in sources], dtype=int)
        probs = np.clip(0.35 * labels + rng.uniform(0.1, 0.65, n), 0, 1)
        return pd.DataFrame({"path": [f"{role}{fold}_{i}.jpg" for i in range(n)], "source": sources,
                             "label": labels, "group": [f"{role}{fold}_{i}" for i in range(n)], "fold": fold,
                             "prob": probs})

    meta = {"fold": fold, "n_train": 100, "n_val": n, "n_test": n, "best_epoch": 1, "train_auc_at_best": 1.0,
            "val_auc_at_best": 0.9, "train_val_gap": 0.1, "config": {"train_sources": "all"}}
    return FoldResult({}, pd.DataFrame({"epoch": [1]}), predictions("test"), meta, predictions("val"))


def test_threshold_is_chosen_on_validation_never_on_test(tmp_path):
    rng = np.random.default_rng(0)
    store = FoldRunStore(tmp_path)
    folds = [_fold(k, rng) for k in range(3)]
    for k, result in enumerate(folds):
        store.write(run_key("fp", k), result)
    _, before, summary, _ = evaluate_runs(store, "fp", 3, SOURCES, n_bootstrap=20, rule=ThresholdRule("eer"))
    expected = [choose_threshold(f.val_predictions["label"], f.val_predictions["prob"], ThresholdRule("eer"))
                for f in folds]
    np.testing.assert_allclose(before["threshold"], expected)
    assert summary["threshold_rule"] == "eer"
    first = folds[0].predictions
    at = metrics_at_threshold(first["label"], first["prob"], expected[0])
    assert before.loc[0, "accuracy_at_threshold"] == pytest.approx(at["accuracy_at_threshold"])

    # Shuffling the test folds' labels (with their sources) changes test metrics, never the thresholds.
    for k, result in enumerate(folds):
        order = rng.permutation(len(result.predictions))
        shuffled = result.predictions.copy()
        shuffled[["source", "label"]] = shuffled[["source", "label"]].to_numpy()[order]
        store.write(run_key("fp", k), FoldResult({}, result.history, shuffled, result.meta, result.val_predictions))
    _, after, _, _ = evaluate_runs(store, "fp", 3, SOURCES, n_bootstrap=20, rule=ThresholdRule("eer"))
    np.testing.assert_array_equal(after["threshold"], before["threshold"])
    assert not np.allclose(after["accuracy_at_threshold"], before["accuracy_at_threshold"])


def test_an_old_run_gets_its_validation_predictions_from_its_checkpoint(tmp_path):
    table = build_fold_table(dff_like_images(60), 5, 0.1, seed=1)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 200, (len(table), 16, 16, 3), dtype=np.uint8)
    pixels[table["label"].to_numpy() == 1, 4:12, 4:12, 0] = 255
    cache = ImageStack(table["path"].tolist(), ["s"] * len(table), pixels)
    config = tiny_config(epochs=1, subsample=1.0)
    cpu = torch.device("cpu")
    plans = plan_fold_runs(config, "fp", table, cache, SOURCES, "tiny", device=cpu)
    store = FoldRunStore(tmp_path)
    key = run_key("fp", 0)
    store.write(key, plans[key](), plans[key].data)
    stored = store.read(key)
    assert len(stored.val_predictions) == stored.meta["n_val"]

    (store.root / key / "val_predictions.parquet").unlink()  # as a fold trained before they were stored
    assert store.read(key).val_predictions is None
    again = predict_validation(store, "fp", 0, config, table, cache, SOURCES, device=cpu)
    pd.testing.assert_frame_equal(again.drop(columns="prob"), stored.val_predictions.drop(columns="prob"))
    np.testing.assert_allclose(again["prob"], stored.val_predictions["prob"], rtol=1e-5, atol=1e-6)
