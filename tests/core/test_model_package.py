import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepfake_kedro.calibration import calibrate
from deepfake_kedro.experiment import evaluate_runs, plan_fold_runs
from deepfake_kedro.folds import build_fold_table
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.model_package import (
    build_package,
    load_package,
    package_preprocessing,
    package_threshold,
    save_package,
)
from deepfake_kedro.run_store import FoldRunStore, run_key
from deepfake_kedro.study import ResolvedExperiment
from deepfake_kedro.thresholds import ThresholdRule, choose_threshold
from tests.core.test_folds import dff_like_images
from tests.core.test_training import tiny_config

SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}
FOLDS = 2  # two trained folds keep the test fast; the package takes whatever folds it is given


def finished_experiment(runs: Path) -> tuple[ResolvedExperiment, FoldRunStore, ImageStack, pd.DataFrame, dict]:
    """Two trained folds of a tiny real_norm experiment under ``runs``, evaluated: resolved, store, cache, metrics."""
    table = build_fold_table(dff_like_images(60), 5, 0.1, seed=1)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 200, (len(table), 16, 16, 3), dtype=np.uint8)
    pixels[table["label"].to_numpy() == 1, 4:12, 4:12, 0] = 255
    cache = ImageStack(table["path"].tolist(), ["s"] * len(table), pixels)
    config = tiny_config(epochs=1, normalization="real_norm", subsample=1.0)
    store = FoldRunStore(runs)
    plans = plan_fold_runs(config, "fp", table, cache, SOURCES, "tiny", device=torch.device("cpu"))
    for fold in range(FOLDS):
        store.write(run_key("fp", fold), plans[run_key("fp", fold)](), plans[run_key("fp", fold)].data)
    _, fold_metrics, summary, _ = evaluate_runs(store, "fp", FOLDS, SOURCES, n_bootstrap=20)
    return ResolvedExperiment("phase1", "tiny", config, "fp"), store, cache, fold_metrics, summary


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    resolved, store, cache, fold_metrics, summary = finished_experiment(tmp_path_factory.mktemp("runs"))
    audit = {"auc": 0.91, "auc_ci_low": 0.85, "auc_ci_high": 0.97, "features": ["jpeg_quality"], "warning": True}
    return store, cache, fold_metrics, build_package(resolved, store, FOLDS, summary, fold_metrics, audit)


def test_fold_k_of_the_package_reproduces_its_out_of_fold_probabilities_then_calibrates_them(finished):
    store, cache, _, package = finished
    for fold in range(FOLDS):
        stored = store.read(run_key("fp", fold)).predictions
        pixels = np.asarray(cache.array[cache.rows(stored["path"].tolist())])
        raw = package.predict_folds(pixels, "cpu", calibrated=False)[fold]
        np.testing.assert_allclose(raw, stored["prob"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(package.predict_folds(pixels, "cpu")[fold],
                                   calibrate(stored["prob"], package.calibration[fold]), rtol=1e-5, atol=1e-6)


def test_each_fold_threshold_on_the_calibrated_scale_is_the_one_its_rule_picks_there(finished):
    store, _, fold_metrics, package = finished
    calibrated = []
    for fold in range(FOLDS):
        val = store.read(run_key("fp", fold)).val_predictions
        on_scale = calibrate(val["prob"], package.calibration[fold])
        # The fit is a strictly increasing map: the ROC curve, and so the rule's choice, move with it.
        assert package.calibration[fold]["slope"] > 0 and package.calibration[fold]["n_val"] == len(val)
        picked = choose_threshold(val["label"], on_scale, ThresholdRule("youden"))
        assert calibrate(np.array([fold_metrics["threshold"].iloc[fold]]), package.calibration[fold])[0] == \
            pytest.approx(picked, rel=1e-9)
        calibrated.append(picked)
    assert package.threshold["calibrated_fold_thresholds"] == pytest.approx(calibrated, rel=1e-9)
    assert package.threshold["value"] == pytest.approx(np.mean(calibrated), rel=1e-9)
    assert package.threshold["fold_thresholds"] == pytest.approx(fold_metrics["threshold"].tolist())


def test_package_round_trips_and_carries_threshold_preprocessing_and_card(finished, tmp_path):
    store, cache, fold_metrics, package = finished
    save_package(package, tmp_path / "package")
    assert not (tmp_path / "package.partial").exists()
    loaded = load_package(tmp_path / "package")
    pixels = np.asarray(cache.array[:25])
    before, after = package.predict(pixels, "cpu"), loaded.predict(pixels, "cpu")
    np.testing.assert_array_equal(after.to_numpy(), before.to_numpy())
    per_fold = package.predict_folds(pixels, "cpu")
    np.testing.assert_allclose(after["spread"], per_fold.std(axis=0))

    assert loaded.fingerprint == "fp" and loaded.resolved.config == package.resolved.config
    assert loaded.threshold == package.threshold and loaded.calibration == package.calibration
    assert loaded.threshold["rule"] == "youden"
    # real_norm: each fold's own statistics of its real training images, as training stored them.
    for fold in range(FOLDS):
        assert loaded.normalizer(fold).mean == pytest.approx(store.read(run_key("fp", fold)).meta["normalization_mean"])
    assert loaded.preprocessing["crop"] == "square" and loaded.preprocessing["image_size"] == 16
    card = (tmp_path / "package" / "model_card.md").read_text()
    assert "youden" in card and "WARNING: file metadata alone separates" in card and "ROC AUC" in card
    assert "grouped bootstrap 95% CI, 20 resamples" in card  # the evaluation's n_bootstrap, as metrics.json records it
    for source, kind in SOURCES.items():  # each source's rate at the threshold the package applies
        what = "detection rate" if kind == "fake" else "false-alarm rate"
        assert f"| {what} of {source} at the fold threshold | " in card
    # Saved again (another threshold): the new package replaces the old whole, nothing is left beside it.
    save_package(dataclasses.replace(package, threshold={**package.threshold, "value": 0.25}), tmp_path / "package")
    assert load_package(tmp_path / "package").threshold["value"] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["package"]
    assert "applies it to the ensemble's p(fake)" in card  # the fold models' rates are not the ensemble's
    for fold, fit in enumerate(package.calibration):
        assert f"  - fold {fold}: slope {fit['slope']:.3f}, intercept {fit['intercept']:+.3f}" in card


def test_a_package_built_before_calibration_is_refused_with_the_command_that_rebuilds_it(finished, tmp_path):
    *_, package = finished
    save_package(package, tmp_path / "package")
    manifest = json.loads((tmp_path / "package" / "package.json").read_text())
    del manifest["calibration"]
    (tmp_path / "package" / "package.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"packaged before fold models were calibrated.*kedro run --pipelines package"):
        load_package(tmp_path / "package")


def test_a_summary_evaluated_before_calibrations_were_recorded_is_refused_with_what_to_run(finished):
    _, _, fold_metrics, package = finished
    with pytest.raises(ValueError, match=r"phase1.tiny: metrics.json has no 'calibration'.*run its phase again"):
        package_threshold(package.resolved, {"threshold_rule": "youden"}, fold_metrics)


def test_loading_a_missing_package_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="package.json does not exist"):
        load_package(tmp_path / "nothing")


def test_wrong_image_size_is_an_error_naming_the_expected_shape(finished):
    *_, package = finished
    with pytest.raises(ValueError, match=r"expects \(16, 16, 3\) uint8 images \(square crops\)"):
        package.predict(np.zeros((2, 32, 32, 3), dtype=np.uint8), "cpu")


def test_a_face_crop_package_records_the_detector_threshold_its_training_crops_used():
    config = tiny_config(face_crop=True, face_crop_margin=0.3)
    meta = [{"normalization_mean": [0.5] * 3, "normalization_std": [0.25] * 3}]
    recorded = package_preprocessing(ResolvedExperiment("phase2", "crop", config, "fp"), meta,
                                     {"min_confidence": 0.95, "batch_size": None})
    assert (recorded["crop"], recorded["face_crop_margin"], recorded["face_min_confidence"]) == ("face", 0.3, 0.95)
    square = package_preprocessing(ResolvedExperiment("phase1", "sq", tiny_config(), "fp"), meta,
                                   {"min_confidence": 0.95})
    assert "face_min_confidence" not in square
