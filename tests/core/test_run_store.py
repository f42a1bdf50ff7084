import multiprocessing
import os
import threading
import time

import pandas as pd
import pytest
import torch

from deepfake_kedro.run_store import FoldData, FoldPlan, FoldResult, FoldRunStore, StaleRunError


def result(fold: int) -> FoldResult:
    return FoldResult(
        state_dict={"weight": torch.full((2, 2), float(fold))},
        history=pd.DataFrame({"epoch": [1], "val_auc": [0.5 + fold / 10]}),
        predictions=pd.DataFrame({"path": [f"x{fold}.jpg"], "prob": [0.3]}),
        meta={"fold": fold},
    )


def test_finished_folds_are_skipped_and_a_killed_run_resumes_at_the_next_fold(tmp_path):
    store = FoldRunStore(tmp_path)
    trained: list[int] = []

    def lazy(fold: int, crash: bool = False):
        def run() -> FoldResult:
            if crash:
                raise KeyboardInterrupt  # the user kills the run during this fold
            trained.append(fold)
            return result(fold)

        return run

    with pytest.raises(KeyboardInterrupt):
        store.save_all({"abc/fold_0": lazy(0), "abc/fold_1": lazy(1), "abc/fold_2": lazy(2, crash=True)})
    assert store.keys() == ["abc/fold_0", "abc/fold_1"]
    store.save_all({f"abc/fold_{k}": lazy(k) for k in range(3)})
    assert trained == [0, 1, 2]
    store.save_all({f"abc/fold_{k}": lazy(k) for k in range(3)})
    assert trained == [0, 1, 2]


def test_checkpoint_reloads_with_weights_only(tmp_path):
    store = FoldRunStore(tmp_path)
    store.write("f/fold_3", result(3))
    fold = store.read("f/fold_3")
    assert torch.equal(fold.load_state_dict()["weight"], torch.full((2, 2), 3.0))
    assert fold.history["val_auc"].iloc[0] == pytest.approx(0.8)


def test_a_half_written_fold_does_not_count_as_done(tmp_path):
    store = FoldRunStore(tmp_path)
    (tmp_path / "f" / "fold_0.partial").mkdir(parents=True)
    (tmp_path / "f" / "fold_0.partial" / "model.pt").write_bytes(b"half")
    assert not store.is_complete("f/fold_0")
    with pytest.raises(FileNotFoundError, match="not complete"):
        store.read("f/fold_0")


def test_a_run_killed_while_replacing_a_fold_leaves_the_new_fold_whole(tmp_path, monkeypatch):
    store = FoldRunStore(tmp_path)
    store.write("f/fold_0", result(0))
    real_unlink = os.unlink

    def killed(*args, **kwargs):  # the first file deleted is where the user's Ctrl-C lands
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write("f/fold_0", result(1))
    monkeypatch.setattr(os, "unlink", real_unlink)
    # The old fold was moved aside whole before the new one took its place: what reads as complete is the new one.
    assert store.is_complete("f/fold_0")
    assert store.read("f/fold_0").predictions["path"].tolist() == ["x1.jpg"]
    store.write("f/fold_0", result(2))
    assert sorted(p.name for p in (tmp_path / "f").iterdir() if p.name != "fold_0.lock") == ["fold_0"]


def rows(paths: list[str], roles: list[str], signature: str = "10-1") -> pd.DataFrame:
    return pd.DataFrame({"path": paths, "group": [p.split(".")[0] for p in paths], "label": [0] * len(paths),
                         "role": roles, "signature": [signature] * len(paths)})


def test_stale_data_retrains_changed_folds_and_says_why(tmp_path, caplog):
    store = FoldRunStore(tmp_path)
    trained: list[int] = []

    def plan(fold: int, data: FoldData) -> FoldPlan:
        return FoldPlan(data, lambda: trained.append(fold) or result(fold), label="phase1.p1_x")

    old = FoldData.from_rows(rows(["a.jpg", "b.jpg", "c.jpg"], ["train", "val", "test"]))
    store.save_all({"abc/fold_0": plan(0, old), "abc/fold_1": plan(1, old)})
    assert trained == [0, 1]
    # Same rows in another order: same key, nothing retrains.
    same = FoldData.from_rows(rows(["c.jpg", "b.jpg", "a.jpg"], ["test", "val", "train"]))
    assert same.data_key == old.data_key
    # Fold 1 gains two images, loses one, and b moves from val to train.
    grown = FoldData.from_rows(rows(["a.jpg", "b.jpg", "d.jpg", "e.jpg"], ["train", "train", "train", "test"]))
    with caplog.at_level("INFO", logger="deepfake_kedro.run_store"):
        store.save_all({"abc/fold_0": plan(0, same), "abc/fold_1": plan(1, grown)})
    assert trained == [0, 1, 1]
    assert "phase1.p1_x fold 1 retrains: data changed: 2 images added, 1 removed, 1 changed role" in caplog.text
    assert store.read("abc/fold_1").meta["data_key"] == grown.data_key
    assert sorted(store.stored_rows("abc/fold_1")["path"]) == ["a.jpg", "b.jpg", "d.jpg", "e.jpg"]
    # A replaced file (new signature) also changes the key.
    replaced = FoldData.from_rows(rows(["a.jpg", "b.jpg", "c.jpg"], ["train", "val", "test"], signature="11-2"))
    assert store.stale_reason("abc/fold_0", replaced) == (
        "data changed: 0 images added, 0 removed, 0 changed role, 3 changed file")


def test_a_fold_trained_on_other_data_is_never_read_as_current(tmp_path):
    store = FoldRunStore(tmp_path)
    old = FoldData.from_rows(rows(["a.jpg", "b.jpg", "c.jpg"], ["train", "val", "test"]))
    store.write("abc/fold_2", result(2), old)
    store.check_current("abc/fold_2", old, "phase1.p1_x")
    new = FoldData.from_rows(rows(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], ["train", "val", "test", "test"]))
    with pytest.raises(StaleRunError, match=r"phase1\.p1_x fold 2: .*1 images added.*re-run its training"):
        store.check_current("abc/fold_2", new, "phase1.p1_x")
    # A fold written before runs carried a data key retrains too.
    store.write("abc/fold_3", result(3))
    assert store.stale_reason("abc/fold_3", old) == "it was trained before runs were keyed by their data"


def _write_repeatedly(root: str, times: int) -> None:
    store = FoldRunStore(root)
    for _ in range(times):
        store.write("abc/fold_0", result(0))


def test_two_processes_writing_one_fold_never_collide(tmp_path):
    # Two experiments with one fingerprint, run at once by the DaskRunner, write the same fold.
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_repeatedly, args=(str(tmp_path), 15)) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    store = FoldRunStore(tmp_path)
    assert store.keys() == ["abc/fold_0"] and store.read("abc/fold_0").meta == {"fold": 0}
    assert not list((tmp_path / "abc").glob("*.partial"))


def test_a_fold_wanted_twice_at_once_trains_once(tmp_path):
    store, trained, started = FoldRunStore(tmp_path), [], threading.Event()

    def slow() -> FoldResult:
        started.set()
        trained.append(threading.current_thread().name)
        time.sleep(0.5)  # the second caller arrives while this one trains
        return result(0)

    first = threading.Thread(target=store.train_and_write, args=("abc/fold_0", slow), name="first")
    first.start()
    started.wait(10)
    second = store.train_and_write("abc/fold_0", slow)
    first.join()
    assert trained == ["first"] and second is None
    assert store.read("abc/fold_0").meta == {"fold": 0}
