import numpy as np
import pytest

from deepfake_kedro.image_cache import ImageStackPlan, read_image_stack, write_image_stack


def make_plan(keys, signatures, calls):
    def render(key: str) -> np.ndarray:
        calls.append(key)
        return np.full((4, 4, 3), len(key) + int(signatures[keys.index(key)]), np.uint8)

    return ImageStackPlan(list(keys), list(signatures), 4, render, workers=1)


def test_second_write_renders_nothing_and_changed_files_are_rerendered(tmp_path):
    calls: list[str] = []
    keys = ["a.jpg", "bb.jpg", "ccc.jpg"]
    assert write_image_stack(make_plan(keys, ["1", "1", "1"], calls), tmp_path / "square_4") == 3
    assert write_image_stack(make_plan(keys, ["1", "1", "1"], calls), tmp_path / "square_4") == 0
    calls.clear()
    assert write_image_stack(make_plan(keys + ["dddd.jpg"], ["1", "2", "1", "1"], calls), tmp_path / "square_4") == 2
    assert sorted(calls) == ["bb.jpg", "dddd.jpg"]
    stack = read_image_stack(tmp_path / "square_4")
    assert isinstance(stack.array, np.memmap)
    assert stack.array[stack.rows(["bb.jpg"])[0], 0, 0, 0] == 6 + 2
    assert not (tmp_path / "square_4.partial").exists()


def test_a_failed_render_leaves_the_old_cache_intact(tmp_path):
    keys = ["a.jpg", "b.jpg"]
    write_image_stack(make_plan(keys, ["1", "1"], []), tmp_path / "c")

    def broken(key):
        raise OSError("disk on fire")

    try:
        write_image_stack(ImageStackPlan(keys, ["2", "2"], 4, broken, workers=1), tmp_path / "c")
    except OSError:
        pass
    assert read_image_stack(tmp_path / "c").signatures == ["1", "1"]


def test_an_unchanged_table_is_not_rewritten_and_a_removed_image_drops_its_row(tmp_path):
    import pandas as pd

    from deepfake_kedro.image_cache import TablePlan, write_table

    computed: list[str] = []

    def detect(keys):
        computed.extend(keys)
        return [{"score": float(len(k))} for k in keys]

    path = tmp_path / "faces.parquet"
    assert write_table(TablePlan(["a.jpg", "bb.jpg"], ["1", "1"], detect, batch_size=2), path) == 2
    written = path.stat().st_mtime_ns
    assert write_table(TablePlan(["a.jpg", "bb.jpg"], ["1", "1"], detect, batch_size=2), path) == 0
    assert path.stat().st_mtime_ns == written and computed == ["a.jpg", "bb.jpg"]
    # Nothing to compute, but the image list changed: the table follows it.
    assert write_table(TablePlan(["bb.jpg"], ["1"], detect, batch_size=2), path) == 0
    assert pd.read_parquet(path)["key"].tolist() == ["bb.jpg"] and computed == ["a.jpg", "bb.jpg"]


def test_a_killed_table_run_resumes_from_its_progress_and_the_table_is_only_ever_complete(tmp_path):
    import pandas as pd

    from deepfake_kedro.image_cache import TablePlan, write_table

    keys, computed = [f"{i}.jpg" for i in range(10)], []

    def detect(batch, fail_at=None):
        if fail_at in batch:
            raise KeyboardInterrupt  # the user stops MTCNN half-way
        computed.extend(batch)
        return [{"score": float(k.split(".")[0])} for k in batch]

    path = tmp_path / "faces.parquet"
    dying = TablePlan(keys, ["s"] * 10, lambda batch: detect(batch, fail_at="6.jpg"), batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        write_table(dying, path, checkpoint_seconds=0)
    assert not path.exists()  # no table that looks complete
    assert computed == keys[:6]

    computed.clear()
    assert write_table(TablePlan(keys, ["s"] * 10, detect, batch_size=2), path, checkpoint_seconds=0) == 4
    assert computed == keys[6:]  # the first six were kept
    table = pd.read_parquet(path)
    assert table["key"].tolist() == keys and table["score"].tolist() == [float(i) for i in range(10)]
    assert not path.with_name("faces.parquet.progress").exists()
