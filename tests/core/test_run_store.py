import pandas as pd
import pytest
import torch

from deepfake_kedro.run_store import FoldResult, FoldRunStore


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
