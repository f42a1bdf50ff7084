"""Phase 1 of the demo on a Dask LocalCluster gives what the SequentialRunner gives, bit for bit, on CPU;
the same `kedro run` tracks each experiment in MLflow.

One test, so the demo's phase 1 trains twice (not three times) in the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
import torch
from kedro.runner import SequentialRunner

from deepfake_kedro.run_store import FoldRunStore
from deepfake_kedro.runners import DaskRunner

pytest.importorskip("distributed")


def fold_results(runs: FoldRunStore) -> dict[str, tuple]:
    """Every fold's checkpoint, predictions and history (without the timing column), by run key."""
    results = {}
    for key in runs.keys():
        stored = runs.read(key)
        results[key] = (stored.load_state_dict(), stored.predictions, stored.val_predictions,
                        stored.history.drop(columns="images_per_s"), stored.meta)
    return results


def test_phase1_on_a_dask_local_cluster_matches_the_sequential_runner_and_is_tracked(tiny_demo, tmp_path):
    tiny_demo.edit_yaml("conf/demo/parameters.yml", {"defaults": {"epochs": 1, "scheduler": {"T_max": 1}}})
    data = tiny_demo.path / "data/demo"
    # CPU reductions depend on the thread count: both paths train each fold on one torch thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        tiny_demo.run("phase1", runner=SequentialRunner())
        sequential_seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    expected_comparison = pd.read_csv(data / "08_reporting/phase1/comparison.csv")
    shutil.move(data / "06_models/runs", tmp_path / "sequential_runs")
    expected = fold_results(FoldRunStore(tmp_path / "sequential_runs"))
    for folder in ("07_model_output", "08_reporting/phase1"):
        shutil.rmtree(data / folder)

    # The command line a user types, with MLflow tracking on (the tests turn it off elsewhere).
    started = time.perf_counter()
    command = [sys.executable, "-m", "kedro", "run", "--env", "demo", "--pipelines", "phase1",
               "--runner", f"{DaskRunner.__module__}.DaskRunner", "--runner-params", "n_workers=2,torch_threads=1"]
    finished = subprocess.run(command, cwd=tiny_demo.path, capture_output=True, text=True,
                              env={**os.environ, "DEEPFAKE_KEDRO_TRACKING": "on"})
    assert finished.returncode == 0, finished.stderr[-3000:] + finished.stdout[-3000:]
    print(f"phase 1: sequential {sequential_seconds:.0f} s, dask {time.perf_counter() - started:.0f} s")
    assert "Dask: 5 folds submitted" in finished.stdout + finished.stderr

    pd.testing.assert_frame_equal(pd.read_csv(data / "08_reporting/phase1/comparison.csv"), expected_comparison)
    actual = fold_results(FoldRunStore(data / "06_models/runs"))
    assert sorted(actual) == sorted(expected) and len(actual) == 10
    for key, (state, predictions, val_predictions, history, meta) in actual.items():
        want_state, want_predictions, want_val, want_history, want_meta = expected[key]
        assert meta["fingerprint"] == want_meta["fingerprint"] and meta["data_key"] == want_meta["data_key"]
        assert state.keys() == want_state.keys()
        assert all(torch.equal(state[name], want_state[name]) for name in state), f"{key}: weights differ"
        pd.testing.assert_frame_equal(predictions, want_predictions)
        pd.testing.assert_frame_equal(val_predictions, want_val)
        pd.testing.assert_frame_equal(history, want_history)

    # Two folds trained at the same time, on two different workers.
    spans = sorted((meta["started_at"], meta["finished_at"], meta["worker"]) for *_, meta in actual.values())
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if b[0] < a[1] and a[2] != b[2]]
    assert overlapping, f"no two folds ran at once: {json.dumps(spans)}"

    # MLflow: the `kedro run` is a run; each experiment a run nested under it, with its config and AUC.
    comparison = expected_comparison.set_index("experiment")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tiny_demo.path / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["deepfake_kedro"])
        parent = runs[runs["tags.mlflow.runName"] == "phase1"]
        assert len(parent) == 1
        nested = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]].set_index("tags.mlflow.runName")
        assert sorted(nested.index) == ["phase1.p1_resnet18_baseline", "phase1.p1_simplecnn_baseline"]
        for name, row in comparison.iterrows():
            run = nested.loc[f"phase1.{name}"]
            assert run["params.fingerprint"] == row["fingerprint"]
            assert run["params.backbone"] == row["backbone"] and run["params.epochs"] == "1"
            assert run["metrics.auc"] == row["auc_mean"] and run["metrics.auc_ci_low"] == row["auc_ci_low"]
            history = mlflow.MlflowClient().get_metric_history(run["run_id"], "fold_auc")
            assert [m.step for m in history] == [0, 1, 2, 3, 4]
            artefacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"])}
            assert {"learning_curves.png", "threshold_sweep.png", "metrics.json"} <= artefacts
    finally:
        mlflow.set_tracking_uri(previous)
