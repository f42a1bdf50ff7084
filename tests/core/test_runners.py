"""The Dask runner on small pipelines, and the fold fan-out of ``TrainedFoldsDataset`` on a Dask worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro_datasets.pandas import CSVDataset

from deepfake_kedro.datasets import TrainedFoldsDataset
from deepfake_kedro.image_cache import read_image_stack
from deepfake_kedro.run_store import FoldData, FoldPlan, FoldRunStore
from deepfake_kedro.runners import DaskRunner, on_dask_worker
from tests.core.test_run_store import result

distributed = pytest.importorskip("distributed")


def double(numbers: pd.DataFrame) -> pd.DataFrame:
    return numbers.assign(value=numbers["value"] * 2)


def add_pid(numbers: pd.DataFrame) -> pd.DataFrame:
    return numbers.assign(value=numbers["value"] + 1, pid=os.getpid())


def total(numbers: pd.DataFrame, more: pd.DataFrame) -> int:
    return int(numbers["value"].sum() + more["value"].sum())


def test_in_memory_datasets_reach_the_nodes_that_read_them_on_worker_processes(tmp_path):
    # A MemoryDataset pickled to a worker arrives empty; the runner hands each node's outputs to its children.
    catalog = DataCatalog({
        "numbers": MemoryDataset(pd.DataFrame({"value": [1, 2, 3]})),
        "on_disk": CSVDataset(filepath=str(tmp_path / "on_disk.csv")),
    })
    pipeline = Pipeline([
        Node(double, "numbers", "doubled", name="double"),
        Node(add_pid, "doubled", "on_disk", name="add_pid"),
        Node(add_pid, "doubled", "shifted", name="add_pid_again"),
        Node(total, ["on_disk", "shifted"], "total", name="total"),
    ])
    outputs = DaskRunner(n_workers=2, processes=True).run(pipeline, catalog)
    assert outputs["total"].load() == (2 + 4 + 6 + 3) * 2
    on_disk = pd.read_csv(tmp_path / "on_disk.csv")
    assert on_disk["value"].tolist() == [3, 5, 7]
    assert (on_disk["pid"] != os.getpid()).all(), "nodes run on the workers, not in the driver"


def test_a_node_error_reaches_the_driver_with_its_message(tmp_path):
    def fail(numbers):
        raise ValueError("bad key 'value' in numbers")

    catalog = DataCatalog({"numbers": MemoryDataset(pd.DataFrame({"value": [1]}))})
    pipeline = Pipeline([Node(fail, "numbers", "never", name="fail")])
    with pytest.raises(ValueError, match="bad key 'value'"):
        DaskRunner(n_workers=1, processes=False).run(pipeline, catalog)


def _is_daemon() -> bool:
    import multiprocessing

    return multiprocessing.current_process().daemon


def test_the_runner_s_local_cluster_workers_may_start_data_loader_processes():
    # Dask starts worker processes as daemons by default, and a daemon may not start any process.
    client, cluster = DaskRunner(n_workers=1, processes=True)._client()
    try:
        assert list(client.run(_is_daemon).values()) == [False]
    finally:
        client.close()
        cluster.close()


def test_a_cluster_class_that_cannot_be_imported_names_the_runner_param_and_the_fix():
    pipeline = Pipeline([Node(double, "numbers", "doubled", name="double")])
    catalog = DataCatalog({"numbers": MemoryDataset(pd.DataFrame({"value": [1]}))})
    with pytest.raises(ValueError, match=r"cluster=no_such_package.Cluster: cannot import it .*pip install dask-cuda"):
        DaskRunner(cluster="no_such_package.Cluster").run(pipeline, catalog)


def plans(tmp_path: Path, folds: range, refuse: set[int]) -> dict[str, FoldPlan]:
    """Fold plans that leave a marker when they train (and fail for the folds in ``refuse``)."""
    def train(fold: int):
        if fold in refuse:
            raise AssertionError(f"fold {fold} is finished with this data and must not retrain")
        (tmp_path / f"trained_{fold}").touch()
        return result(fold)

    rows = pd.DataFrame({"path": ["a.png"], "group": ["g"], "label": [0], "role": ["train"], "signature": ["s"]})
    return {f"abc/fold_{k}": FoldPlan(FoldData.from_rows(rows), lambda k=k: train(k), "phase1.x") for k in folds}


def test_on_a_worker_the_folds_still_missing_train_as_tasks_and_finished_ones_are_skipped(tmp_path):
    store = FoldRunStore(tmp_path / "runs")
    done = plans(tmp_path, range(1), refuse=set())
    store.save_all(done)  # fold 0 finished before, in the sequential path
    (tmp_path / "trained_0").unlink()

    def save():
        assert on_dask_worker()
        TrainedFoldsDataset(str(tmp_path / "runs")).save(plans(tmp_path, range(3), refuse={0}))

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.submit(save, pure=False).result()
    assert store.keys() == ["abc/fold_0", "abc/fold_1", "abc/fold_2"]
    assert sorted(p.name for p in tmp_path.glob("trained_*")) == ["trained_1", "trained_2"]
    for fold in (1, 2):
        meta = store.read(f"abc/fold_{fold}").meta
        assert meta["fold"] == fold and meta["worker"].startswith("inproc://")
        assert meta["started_at"] <= meta["finished_at"]
    assert "worker" not in store.read("abc/fold_0").meta
    assert not on_dask_worker()


def test_a_memory_mapped_image_stack_pickles_as_its_file_not_its_pixels(tmp_path):
    import json
    import pickle

    folder = tmp_path / "square_8"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (50, 8, 8, 3), dtype=np.uint8)
    np.save(folder / "images.npy", pixels)
    (folder / "manifest.json").write_text(json.dumps({"keys": [f"{i}.png" for i in range(50)],
                                                      "signatures": ["s"] * 50}))
    stack = read_image_stack(folder)
    blob = pickle.dumps(stack)
    assert len(blob) < pixels.nbytes / 2
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.array, pixels)
    assert again.rows(["3.png"]).tolist() == [3]


@pytest.fixture(scope="module")
def process_cluster():
    """Two worker processes, one thread each, shared by the tests below (each cluster takes seconds to start)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster


def wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_failing_fold_lets_the_folds_training_finish_and_starts_no_other(tmp_path, process_cluster):
    rows = pd.DataFrame({"path": ["a.png"], "group": ["g"], "label": [0], "role": ["train"], "signature": ["s"]})
    data = FoldData.from_rows(rows)

    def long_fold():
        (tmp_path / "started_0").touch()
        wait_for(tmp_path / "started_1")  # both folds train at once
        time.sleep(2)
        return result(0)

    def failing_fold():
        (tmp_path / "started_1").touch()
        wait_for(tmp_path / "started_0")
        raise RuntimeError("fold 1: CUDA out of memory")

    def later_fold():
        (tmp_path / "trained_2").touch()
        return result(2)

    runs = {"abc/fold_0": FoldPlan(data, long_fold, "x"), "abc/fold_1": FoldPlan(data, failing_fold, "x"),
            "abc/fold_2": FoldPlan(data, later_fold, "x")}
    store = FoldRunStore(tmp_path / "runs")
    with distributed.Client(process_cluster) as client:
        future = client.submit(TrainedFoldsDataset(str(tmp_path / "runs")).save, runs, pure=False)
        with pytest.raises(DatasetError, match="fold 1: CUDA out of memory"):
            future.result()
    # The error comes only once the running fold is written (a run then closes its cluster, killing the workers).
    assert store.keys() == ["abc/fold_0"]
    assert not (tmp_path / "trained_2").exists()


def slow(numbers: pd.DataFrame, markers: list[str]) -> pd.DataFrame:
    Path(markers[0]).touch()
    wait_for(Path(markers[1]))  # both nodes run at once, whatever each worker's start-up costs
    time.sleep(1.5)
    return numbers


def fail_after(numbers: pd.DataFrame, markers: list[str]) -> None:
    Path(markers[1]).touch()
    wait_for(Path(markers[0]))
    raise ValueError("node failed")


def test_a_failing_node_lets_running_nodes_finish_and_starts_no_other(tmp_path, process_cluster):
    catalog = DataCatalog({
        "numbers": MemoryDataset(pd.DataFrame({"value": [1]})),
        "params:markers": MemoryDataset([str(tmp_path / "slow_started"), str(tmp_path / "fail_started")]),
        "slow_output": CSVDataset(filepath=str(tmp_path / "slow.csv")),
        "after_output": CSVDataset(filepath=str(tmp_path / "after.csv")),
    })
    pipeline = Pipeline([
        Node(slow, ["numbers", "params:markers"], "slow_output", name="a_slow"),
        Node(fail_after, ["numbers", "params:markers"], "never", name="b_fail"),
        Node(double, "slow_output", "after_output", name="c_after_slow"),
    ])
    with pytest.raises(ValueError, match="node failed"):
        DaskRunner(address=process_cluster.scheduler_address).run(pipeline, catalog)
    # Checked as the error arrives: a run that starts its own cluster closes it then, killing the workers.
    assert (tmp_path / "slow.csv").exists(), "the node running when the other failed finished and saved"
    assert not (tmp_path / "after.csv").exists(), "no node starts after the failure"


def fail_once_a_fold_trains(numbers: pd.DataFrame, markers: list[str]) -> None:
    wait_for(Path(markers[0]))
    raise ValueError("node failed")


def folds_outlasting_a_failure(numbers: pd.DataFrame, markers: list[str]) -> dict[str, FoldPlan]:
    """Three folds; the first to train lets the other node fail, then finishes."""
    def train(fold: int):
        (Path(markers[1]) / f"trained_{fold}").touch()
        Path(markers[0]).touch()
        time.sleep(2)  # the other node fails meanwhile
        return result(fold)

    rows = pd.DataFrame({"path": ["a.png"], "group": ["g"], "label": [0], "role": ["train"], "signature": ["s"]})
    return {f"abc/fold_{k}": FoldPlan(FoldData.from_rows(rows), lambda k=k: train(k), "x") for k in range(3)}


def test_a_failing_node_stops_the_folds_another_node_submitted_but_not_started(tmp_path, caplog):
    catalog = DataCatalog({
        "numbers": MemoryDataset(pd.DataFrame({"value": [1]})),
        "params:markers": MemoryDataset([str(tmp_path / "fold_started"), str(tmp_path)]),
        "runs": TrainedFoldsDataset(str(tmp_path / "runs")),
    })
    pipeline = Pipeline([
        Node(fail_once_a_fold_trains, ["numbers", "params:markers"], "never", name="a_fail"),
        Node(folds_outlasting_a_failure, ["numbers", "params:markers"], "runs", name="b_train"),
    ])
    # One fold trains at a time (one process), so the other two are still queued when node a fails.
    with pytest.raises(ValueError, match="node failed"):
        DaskRunner(n_workers=1, threads_per_worker=2, processes=False).run(pipeline, catalog)
    assert len(list(tmp_path.glob("trained_*"))) == 1, "no fold starts after the other node failed"
    assert len(FoldRunStore(tmp_path / "runs").keys()) == 1, "the fold training then finished and was written"
    # Its experiment is unfinished, so the resume hint reruns its node, which trains the two folds left.
    assert "b_train" in caplog.text.split("--from-nodes")[-1]


TINY_CNN = dict(backbone="simple_cnn", pretrained=False, cnn_preset="micro", image_size=32, epochs=1, batch_size=16,
                num_workers=0, dropout=0.5, scheduler={"type": "none", "T_max": 1},
                augment={"hflip_p": 0.5, "brightness": 0.2})


def train_tiny_fold(fold: int):
    import torch

    from deepfake_kedro.config import ExperimentConfig
    from deepfake_kedro.run_store import FoldResult
    from deepfake_kedro.training import train_fold

    images = np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    order = np.random.default_rng(fold).permutation(64)
    state, history, test, _, _ = train_fold(ExperimentConfig(**TINY_CNN), images, {
        "train": order[:40], "val": order[40:52], "test": order[52:]}, np.tile([0, 1], 32), fold, torch.device("cpu"))
    return FoldResult(state, history, pd.DataFrame({"prob": test}), {"fold": fold})


def tiny_fold_plans(_) -> dict[str, FoldPlan]:
    rows = pd.DataFrame({"path": ["a.png"], "group": ["g"], "label": [0], "role": ["train"], "signature": ["s"]})
    return {f"abc/fold_{k}": FoldPlan(FoldData.from_rows(rows), lambda k=k: train_tiny_fold(k), "x") for k in (0, 1)}


def test_folds_on_threads_of_one_worker_train_the_weights_the_sequential_runner_trains(tmp_path, caplog):
    import torch
    from kedro.runner import SequentialRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU reductions depend on the thread count; Dask's tasks use one
    stores = {}
    try:
        for name, runner in (("sequential", SequentialRunner()), ("threads", DaskRunner(
                n_workers=1, threads_per_worker=2, processes=False, torch_threads=1))):
            catalog = DataCatalog({"x": MemoryDataset(1), "runs": TrainedFoldsDataset(str(tmp_path / name))})
            runner.run(Pipeline([Node(tiny_fold_plans, "x", "runs", name="plan")]), catalog)
            stores[name] = FoldRunStore(tmp_path / name)
    finally:
        torch.set_num_threads(threads)
    assert stores["threads"].keys() == ["abc/fold_0", "abc/fold_1"]
    for key in stores["sequential"].keys():
        sequential, threaded = (stores[name].read(key).load_state_dict() for name in ("sequential", "threads"))
        assert all(torch.equal(sequential[name], threaded[name]) for name in sequential), key
    assert "2 worker threads share a process" in caplog.text


def test_is_async_does_not_stop_the_folds_training_as_dask_tasks(tmp_path):
    catalog = DataCatalog({"x": MemoryDataset(1), "runs": TrainedFoldsDataset(str(tmp_path / "runs"))})
    pipeline = Pipeline([Node(lambda _: plans(tmp_path, range(2), refuse=set()), "x", "runs", name="plan")])
    DaskRunner(n_workers=2, processes=False, is_async=True).run(pipeline, catalog)
    store = FoldRunStore(tmp_path / "runs")
    assert store.keys() == ["abc/fold_0", "abc/fold_1"]
    # A fold trained by its own task records its worker; one trained inside the node's task would not.
    assert all(store.read(key).meta["worker"].startswith("inproc://") for key in store.keys())


def add_one(value: int) -> int:
    return value + 1


def refuse(value: int) -> int:
    raise ValueError("node failed")


def test_a_failed_run_says_which_nodes_to_resume_from(tmp_path, caplog):
    from kedro_datasets.pickle import PickleDataset

    catalog = DataCatalog({"x": MemoryDataset(1), "y": PickleDataset(filepath=str(tmp_path / "y.pkl"))})
    pipeline = Pipeline([Node(add_one, "x", "y", name="persist"), Node(refuse, "y", "z", name="fail")])
    with pytest.raises(ValueError, match="node failed"):
        DaskRunner(n_workers=1, processes=False).run(pipeline, catalog)
    # As the SequentialRunner: "persist" saved y, so the run resumes at "fail".
    assert '--from-nodes "fail"' in caplog.text
