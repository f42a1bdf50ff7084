"""Phase 1 through Kedro's real session, runner and catalog, on a tiny demo and on real faces."""

from __future__ import annotations

import json
import logging
import shutil

import pandas as pd
import pytest
from kedro.io import DatasetError

from deepfake_kedro.config import ConfigError
from deepfake_kedro.data_index import DataLayoutError
from tests.conftest import faces140k_root, full_blocks

EXPERIMENTS = ("p1_simplecnn_baseline", "p1_resnet18_baseline")


def checkpoints(project) -> dict[str, float]:
    return {p.relative_to(project.path).as_posix(): p.stat().st_mtime_ns
            for p in (project.path / "data/demo/06_models/runs").glob("*/fold_*/model.pt")}


def test_phase1_demo_end_to_end_then_skip_then_resume(tiny_demo):
    tiny_demo.run("phase1")
    reporting = tiny_demo.path / "data/demo/08_reporting/phase1"
    comparison = pd.read_csv(reporting / "comparison.csv")
    assert set(comparison["experiment"]) == set(EXPERIMENTS)
    for metric in ("auc", "accuracy", "f1", "average_precision", "eer", "brier", "log_loss"):
        row = comparison.iloc[0]
        assert row[f"{metric}_ci_low"] <= row[f"{metric}_mean"] <= row[f"{metric}_ci_high"]
    # Each fold's threshold is chosen on its validation rows; metrics at it sit beside those at 0.5.
    assert (comparison["threshold_rule"] == "youden").all()
    assert comparison[["threshold_mean", "accuracy_at_threshold_mean", "f1_at_threshold_mean",
                       "tpr_at_threshold_mean", "fpr_at_threshold_mean"]].notna().all().all()
    tests = pd.read_csv(reporting / "paired_tests.csv")
    # The headline metrics, then each fake source's AUC against the reals (which sources a change helps).
    assert set(tests["metric"]) == {"auc", "accuracy", "f1", "accuracy_at_threshold", "f1_at_threshold", "val_auc",
                                    "pairwise_auc:text2img", "pairwise_auc:inpainting", "pairwise_auc:insight"}
    assert tests[["p_paired_t", "p_nadeau_bengio", "p_holm"]].notna().all().all()
    assert (reporting / "comparison.md").read_text().startswith("# Phase 1")
    assert (reporting / "comparison.png").stat().st_size > 10_000
    for name in EXPERIMENTS:
        metrics = json.loads((reporting / name / "metrics.json").read_text())
        assert len(metrics["folds"]) == 5 and metrics["metrics"]["auc"]["n"] == 5
        assert (reporting / name / "learning_curves.png").exists()
        assert (reporting / name / "threshold_sweep.png").stat().st_size > 10_000
        oof = pd.read_parquet(tiny_demo.path / f"data/demo/07_model_output/phase1/{name}/oof_predictions.parquet")
        fold_table = pd.read_parquet(tiny_demo.path / "data/demo/05_model_input/fold_table.parquet")
        # Out-of-fold: every usable image predicted exactly once, by the fold that held it out.
        assert sorted(oof["path"]) == sorted(fold_table["path"])
        assert (oof.merge(fold_table, on="path")["fold_x"] == oof.merge(fold_table, on="path")["fold_y"]).all()
        assert (oof.groupby("fold")["threshold"].nunique() == 1).all()

    first = checkpoints(tiny_demo)
    assert len(first) == 10
    tiny_demo.run("phase1")
    assert checkpoints(tiny_demo) == first, "a second run must not retrain finished folds"

    # A run killed during fold 3 of one experiment: its fold 3 and 4 are missing, a half-written one remains.
    killed = sorted(k for k in first if "fold_3" in k)[0].rsplit("/", 2)[0]
    (tiny_demo.path / killed / "fold_3").rename(tiny_demo.path / killed / "fold_3.partial")
    shutil.rmtree(tiny_demo.path / killed / "fold_4")
    tiny_demo.run("phase1")
    resumed = checkpoints(tiny_demo)
    changed = {k for k in resumed if resumed[k] != first.get(k)}
    assert changed == {f"{killed}/fold_3/model.pt", f"{killed}/fold_4/model.pt"}


def test_stale_data_retrains_changed_folds(tiny_demo, caplog):
    from deepfake_kedro.demo_data import generate_demo_dataset

    # Smaller still (40 identities, 1 epoch, val_ratio 0.25 so 40 groups suffice): each run is about a minute.
    tiny_demo.edit_yaml("conf/demo/catalog.yml", {"raw_images": {"generator_args": {"n_identities": 40}}})
    tiny_demo.edit_yaml("conf/demo/parameters.yml", {"defaults": {
        "epochs": 1, "val_ratio": 0.25, "scheduler": {"type": "cosine_annealing", "T_max": 1}}})
    tiny_demo.run("phase1")
    raw = tiny_demo.path / "data/01_raw/demo"
    before = {p.relative_to(raw).as_posix() for p in raw.rglob("*.jpg")}
    # Ten more identities (the first 40 are the same images): 10 real and 30 fake files join the tree.
    added = {path: data for path, data in generate_demo_dataset(n_identities=50, seed=0).items() if path not in before}
    assert len(added) == 40
    for path, data in added.items():
        (raw / path).parent.mkdir(parents=True, exist_ok=True)
        (raw / path).write_bytes(data)
    # Until a phase indexes them, a run that reads phase 1's results without indexing is refused, writing nothing.
    packaged = {"predict": {"model": "phase1.p1_resnet18_baseline"}}
    with pytest.raises(DataLayoutError, match=r"This run \(--pipelines package\) reads results made from the images "
                                              r"under .* 40 added, 0 removed, 0 replaced \(e\.g\. .*Run the study "
                                              r"again \(kedro run --env demo: it indexes the images again"):
        tiny_demo.run("package", params=packaged)
    package = tiny_demo.path / "data/demo/06_models/package"
    assert not package.exists()
    # Kedro's logging setup replaces the root logger's handlers, so caplog listens on the run store's logger.
    store_logger = logging.getLogger("deepfake_kedro.run_store")
    store_logger.addHandler(caplog.handler)
    try:
        tiny_demo.run("phase1")
    finally:
        store_logger.removeHandler(caplog.handler)
    fold_table = pd.read_parquet(tiny_demo.path / "data/demo/05_model_input/fold_table.parquet")
    assert len(fold_table) == 200 and set(added) <= set(fold_table["path"])
    for name in EXPERIMENTS:
        oof = pd.read_parquet(tiny_demo.path / f"data/demo/07_model_output/phase1/{name}/oof_predictions.parquet")
        # Every image of the new fold table predicted exactly once, by the fold that now holds it out.
        assert sorted(oof["path"]) == sorted(fold_table["path"])
        merged = oof.merge(fold_table, on="path")
        assert (merged["fold_x"] == merged["fold_y"]).all()
        assert f"phase1.{name} fold 0 retrains: data changed: " in caplog.text
    # A record can reach caplog twice (its handler on the logger and pytest's on the root): count distinct lines.
    retrained = {line for line in caplog.text.splitlines() if "retrains: data changed:" in line}
    assert len(retrained) == 10 and all("images added" in line for line in retrained), retrained
    # Indexed and retrained: the package is made.
    tiny_demo.run("package", params=packaged)
    assert "phase1.p1_resnet18_baseline" in (package / "model_card.md").read_text()


def test_bad_experiment_config_fails_before_any_training(tiny_demo):
    tiny_demo.edit_yaml("conf/demo/parameters_phase1.yml",
                        {"phase1": {"experiments": {"p1_resnet18_baseline": {"optimizer": {"lr": "fast"}}}}})
    with pytest.raises(ConfigError, match=r"phase1\.p1_resnet18_baseline.*'optimizer\.lr'"):
        tiny_demo.run("phase1")
    assert not (tiny_demo.path / "data/demo/06_models/runs").exists()


def test_comparison_naming_a_missing_experiment_fails_before_any_training(tiny_demo):
    tiny_demo.edit_yaml("conf/demo/parameters_phase1.yml", {"phase1": {"comparisons": [
        {"question": "typo", "baseline": "p1_simplecnn_baseline", "treatment": "p1_resnet18_baselin"}]}})
    with pytest.raises(ConfigError, match=r"phase1.comparisons\[0\]: key 'treatment' names 'p1_resnet18_baselin'"):
        tiny_demo.run("phase1")
    assert not (tiny_demo.path / "data/demo/06_models/runs").exists()


def test_corrupt_image_is_reported_and_skipped(tiny_demo):
    tiny_demo.run("preprocessing")
    folder = sorted((tiny_demo.path / "data/01_raw/demo/insight").iterdir())[0]
    (folder / "broken_1999_2001.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    broken = f"insight/{folder.name}/broken_1999_2001.jpg"
    tiny_demo.run("preprocessing")
    report = pd.read_csv(tiny_demo.path / "data/demo/08_reporting/data_quality/integrity_report.csv")
    assert report.set_index("path").loc[broken, "status"] in {"truncated", "unreadable"}
    fold_table = pd.read_parquet(tiny_demo.path / "data/demo/05_model_input/fold_table.parquet")
    assert broken not in set(fold_table["path"]) and len(fold_table) == 240


def test_missing_data_root_names_the_folder(kedro_project, tmp_path):
    with pytest.raises((DatasetError, Exception), match="data.root"):
        kedro_project.run("preprocessing", env="base", params={"data": {"root": str(tmp_path / "nowhere")}})


@pytest.mark.skipif(faces140k_root() is None, reason="faces140k sample not found (set DEEPFAKE_KEDRO_FACES140K)")
def test_phase1_on_real_faces140k_subset(kedro_project):
    root = faces140k_root()
    small = {"image_size": 32, "pretrained": False}
    params = full_blocks({
        "preprocessing": {"image_sizes": [32], "face_crop_sizes": []},
        "defaults": {"subsample": 0.15, "epochs": 2, "num_workers": 0, "batch_size": 32,
                     "scheduler": {"T_max": 2}, "optimizer": {"lr": 1.0e-3}},
        "evaluation": {"n_bootstrap": 50},
        "phase1": {"experiments": {name: small for name in EXPERIMENTS}},
    })
    params["data"] = {"root": str(root), "sources": {"real": "real", "fake": "fake"}}
    kedro_project.run("phase1", env="faces140k", params=params)
    index = pd.read_parquet(kedro_project.path / "data/faces140k/02_intermediate/image_index.parquet")
    assert set(index["source"]) == {"real", "fake"} and len(index) == 1600
    comparison = pd.read_csv(kedro_project.path / "data/faces140k/08_reporting/phase1/comparison.csv")
    assert set(comparison["experiment"]) == set(EXPERIMENTS)
    assert comparison["auc_mean"].between(0, 1).all()
