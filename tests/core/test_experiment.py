"""Tests for deepfake_kedro.experiment: fold data keys, lazy fold runs and out-of-fold evaluation."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deepfake_kedro.calibration import calibrate
from deepfake_kedro.config import ExperimentConfig
from deepfake_kedro.experiment import evaluate_runs, fold_data, fold_metrics_row, plan_fold_runs
from deepfake_kedro.folds import build_fold_table
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.metrics import metric_range
from deepfake_kedro.run_store import FoldResult, FoldRunStore, StaleRunError
from tests.core.test_folds import dff_like_images

SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}
TINY = ExperimentConfig(backbone="simple_cnn", cnn_preset="micro", pretrained=False, image_size=16, epochs=1,
                        batch_size=64, subsample=1.0, num_workers=0, early_stopping_patience=1,
                        scheduler={"type": "none", "T_max": 1})


def stack_for(table: pd.DataFrame, signature: str = "v1") -> ImageStack:
    """A 16 px cache whose fakes are brighter, so a model can learn something in one epoch."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 120, size=(len(table), 16, 16, 3), dtype=np.uint8)
    pixels[table["label"].to_numpy() == 1] += 100
    return ImageStack(table["path"].tolist(), [signature] * len(table), pixels)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return build_fold_table(dff_like_images(40), cv_folds=5, val_ratio=0.25, seed=3)


def test_fold_metrics_row_matches_sklearn_and_splits_held_out_sources():
    predictions = pd.DataFrame({
        "label": [0, 0, 0, 1, 1, 1, 1],
        "source": ["wiki", "wiki", "wiki", "text2img", "text2img", "insight", "insight"],
        "prob": [0.1, 0.4, 0.35, 0.8, 0.3, 0.6, 0.2],
    })
    meta = {"fold": 2, "n_train": 10, "n_val": 2, "n_test": 7, "best_epoch": 1, "train_auc_at_best": 0.9,
            "val_auc_at_best": 0.8, "train_val_gap": 0.1,
            "config": {"train_sources": ["wiki", "text2img"]}}
    row = fold_metrics_row(predictions, meta, {"wiki": "real", "text2img": "fake", "insight": "fake"})
    assert row["auc"] == pytest.approx(roc_auc_score(predictions["label"], predictions["prob"]))
    seen = predictions[predictions["source"] != "insight"]
    held_out = predictions[predictions["source"] != "text2img"]
    assert row["in_source_auc"] == pytest.approx(roc_auc_score(seen["label"], seen["prob"]))
    assert row["heldout_auc"] == pytest.approx(roc_auc_score(held_out["label"], held_out["prob"]))
    assert row["heldout_delta"] == pytest.approx(row["in_source_auc"] - row["heldout_auc"])
    assert row["detection_rate:text2img"] == 0.5 and "detection_rate_at_threshold:text2img" not in row

    at_threshold = fold_metrics_row(predictions, meta, {"wiki": "real", "text2img": "fake", "insight": "fake"}, 0.25)
    # At the fold's threshold: p >= 0.25 is called fake, per source.
    assert at_threshold["detection_rate:text2img"] == 0.5  # the rate at 0.5 stays beside it
    assert at_threshold["detection_rate_at_threshold:text2img"] == 1.0
    assert at_threshold["detection_rate_at_threshold:insight"] == 0.5
    assert at_threshold["false_alarm_rate_at_threshold:wiki"] == pytest.approx(2 / 3)


def test_fold_data_key_follows_the_rows_and_the_pixels(table):
    before = fold_data(TINY, table, stack_for(table), SOURCES)
    assert fold_data(TINY, table, stack_for(table), SOURCES)[0].data_key == before[0].data_key
    # A replaced file (new cache signature) changes every fold's key.
    changed = fold_data(TINY, table, stack_for(table, "v2"), SOURCES)
    assert all(changed[fold].data_key != before[fold].data_key for fold in before)
    # A hold-out experiment trains on other rows than the reference: another key.
    holdout = TINY.model_copy(update={"train_sources": ["wiki", "text2img", "inpainting"]})
    assert fold_data(holdout, table, stack_for(table), SOURCES)[0].data_key != before[0].data_key


def test_planned_runs_cover_every_image_once_out_of_fold_and_stale_runs_are_refused(tmp_path, table):
    cache = stack_for(table)
    plans = plan_fold_runs(TINY, "fp", table, cache, SOURCES, "phase1.tiny")
    assert sorted(plans) == [f"fp/fold_{k}" for k in range(5)]
    store = FoldRunStore(tmp_path)
    store.save_all(plans)
    current = fold_data(TINY, table, cache, SOURCES)
    oof, fold_metrics, summary, histories = evaluate_runs(store, "fp", 5, SOURCES, n_bootstrap=20,
                                                          current=current, label="phase1.tiny")
    # Every image is predicted exactly once, by the model of the fold that held it out.
    assert sorted(oof["path"]) == sorted(table["path"])
    assert (oof.set_index("path")["fold"] == table.set_index("path")["fold"].loc[oof["path"]]).all()
    for fold, rows in oof.groupby("fold"):  # each fold model's p(fake) on its calibrated scale beside the raw one
        np.testing.assert_allclose(rows["prob_calibrated"], calibrate(rows["prob"], summary["calibration"][fold]))
    assert summary["pooled"]["auc"] == pytest.approx(roc_auc_score(oof["label"], oof["prob_calibrated"]))
    assert summary["bootstrap_resamples"] == 20
    assert summary["metrics"]["auc"]["mean"] == pytest.approx(fold_metrics["auc"].mean())
    for name, stats in summary["metrics"].items():  # no interval leaves the range its metric can take
        if metric_range(name) and stats["n"] > 1:
            assert 0.0 <= stats["ci_low"] <= stats["ci_high"] <= 1.0, name
    assert len(histories) == 5
    # What the choices between phases read: each fold's validation rows, never its test rows.
    for fold, row in fold_metrics.set_index("fold").iterrows():
        val = store.read(f"fp/fold_{fold}").val_predictions
        assert row["val_auc"] == pytest.approx(roc_auc_score(val["label"], val["prob"]))
        for source in ("text2img", "inpainting", "insight"):
            chosen = val[(val["source"] == "wiki") | (val["source"] == source)]
            assert row[f"val_pairwise_auc:{source}"] == pytest.approx(roc_auc_score(chosen["label"], chosen["prob"]))
    assert summary["metrics"]["val_pairwise_auc:insight"]["mean"] == pytest.approx(
        fold_metrics["val_pairwise_auc:insight"].mean())
    with pytest.raises(StaleRunError, match="phase1.tiny"):
        evaluate_runs(store, "fp", 5, SOURCES, n_bootstrap=20, current=fold_data(TINY, table, stack_for(table, "v2"),
                                                                                   SOURCES), label="phase1.tiny")


def scored_fold(fold: int, offset: float, rng: np.random.Generator, n: int = 40) -> pd.DataFrame:
    """``n`` reals and ``n`` fakes scored by a fold model that ranks well on its own scale (shifted by ``offset``)."""
    labels = np.repeat([0, 1], n)
    logits = rng.normal(np.where(labels == 1, 1.5, -1.5), 1.0) + offset
    return pd.DataFrame({"path": [f"f{fold}_{i}.png" for i in range(2 * n)], "source": np.where(labels, "insight",
                         "wiki"), "label": labels, "group": [f"g{fold}_{i}" for i in range(2 * n)], "fold": fold,
                         "prob": 1 / (1 + np.exp(-logits))})


def test_the_pooled_auc_pools_fold_models_put_on_one_scale_by_their_validation_rows(tmp_path):
    # Two fold models that rank alike, one far more confident about "fake" than the other: raw, the
    # confident fold's reals outrank the other's fakes, and pooling reads that as the models failing.
    rng, store = np.random.default_rng(0), FoldRunStore(tmp_path)
    meta = {"n_train": 100, "n_val": 80, "n_test": 80, "best_epoch": 1, "train_auc_at_best": 0.9,
            "val_auc_at_best": 0.9, "train_val_gap": 0.0, "config": {"train_sources": "all"}}
    for fold, offset in enumerate((-3.0, 3.0)):
        store.write(f"fp/fold_{fold}", FoldResult({}, pd.DataFrame({"epoch": [1]}), scored_fold(fold, offset, rng),
                                                  {**meta, "fold": fold}, scored_fold(fold, offset, rng)))
    oof, fold_metrics, summary, _ = evaluate_runs(store, "fp", 2, {"wiki": "real", "insight": "fake"},
                                                  n_bootstrap=50)
    raw = roc_auc_score(oof["label"], oof["prob"])
    assert fold_metrics["auc"].min() > 0.9 and raw < fold_metrics["auc"].min() - 0.1
    # Calibrated on its own validation rows, each fold's scale is undone: pooled matches the folds' own AUCs.
    assert abs(summary["pooled"]["auc"] - fold_metrics["auc"].mean()) < 0.03
    assert summary["pooled"]["auc_boot_ci_low"] <= summary["pooled"]["auc"] <= summary["pooled"]["auc_boot_ci_high"]
    assert [c["n_val"] for c in summary["calibration"]] == [80, 80]
