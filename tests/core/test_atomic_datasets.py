"""The catalog's CSV, Parquet, JSON, text and figure datasets write atomically: a save that fails half-way leaves
the previous file whole (kedro-datasets' own classes empty the target first, then stream into it)."""

import errno
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from fsspec.implementations.local import LocalFileOpener  # noqa: E402
from kedro.io import DatasetError  # noqa: E402
from kedro_datasets.json import JSONDataset  # noqa: E402
from kedro_datasets.matplotlib import MatplotlibDataset  # noqa: E402
from kedro_datasets.pandas import CSVDataset, ParquetDataset  # noqa: E402
from kedro_datasets.text import TextDataset  # noqa: E402

from deepfake_kedro.datasets import (  # noqa: E402
    AtomicCSVDataset,
    AtomicFigureDataset,
    AtomicJSONDataset,
    AtomicParquetDataset,
    AtomicTextDataset,
)
from tests.conftest import PROJECT_ROOT  # noqa: E402


def figure(value: float):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.bar(["auc"], [value])
    return fig


def table(rows: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"experiment": [f"p{i + offset}" for i in range(rows)], "auc": [0.5 + i / (2 * rows)
                                                                                      for i in range(rows)]})


# (atomic class, kedro-datasets class, file name, save_args, first result, second result)
CASES = [
    (AtomicCSVDataset, CSVDataset, "comparison.csv", {"index": False}, lambda: table(2000), lambda: table(3000, 7)),
    (AtomicParquetDataset, ParquetDataset, "oof.parquet", {}, lambda: table(2000), lambda: table(3000, 7)),
    (AtomicJSONDataset, JSONDataset, "metrics.json", {"indent": 2},
     lambda: {"auc": 0.91, "folds": list(range(500))}, lambda: {"auc": 0.95, "folds": list(range(900))}),
    (AtomicTextDataset, TextDataset, "comparison.md", {}, lambda: "| a |\n" * 2000, lambda: "| b |\n" * 3000),
    (AtomicFigureDataset, MatplotlibDataset, "comparison.png", {"dpi": 60}, lambda: figure(0.7), lambda: figure(0.9)),
]
IDS = [case[0].__name__ for case in CASES]


def make(cls, path: Path, save_args: dict):
    return cls(filepath=str(path), save_args=save_args) if save_args else cls(filepath=str(path))


@pytest.mark.parametrize(("atomic", "parent", "name", "save_args", "first", "second"), CASES, ids=IDS)
def test_an_atomic_dataset_writes_the_same_bytes_as_its_kedro_datasets_parent(
        tmp_path, atomic, parent, name, save_args, first, second):
    make(atomic, tmp_path / "atomic" / name, save_args).save(first())
    make(parent, tmp_path / "parent" / name, save_args).save(first())
    written = (tmp_path / "atomic" / name).read_bytes()
    if name.endswith(".png"):  # matplotlib stamps nothing variable into a PNG, but compare the pixels to be sure
        assert (plt.imread(tmp_path / "atomic" / name) == plt.imread(tmp_path / "parent" / name)).all()
    else:
        assert written == (tmp_path / "parent" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "atomic").iterdir()) == [name]


@pytest.mark.parametrize(("atomic", "parent", "name", "save_args", "first", "second"), CASES, ids=IDS)
def test_a_disk_that_fills_mid_save_leaves_the_previous_file_whole(
        tmp_path, monkeypatch, atomic, parent, name, save_args, first, second):
    path = tmp_path / name
    dataset = make(atomic, path, save_args)
    dataset.save(first())
    before = path.read_bytes()

    real_write = LocalFileOpener.write

    def write_half_then_fail(self, data, *args, **kwargs):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalFileOpener, "write", write_half_then_fail)  # the disk, at the edge of the system
    with pytest.raises(DatasetError, match=name):
        dataset.save(second())
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no .partial left behind
    dataset.save(second())  # and the next save goes through
    assert path.read_bytes() != before


def test_a_value_json_cannot_encode_keeps_the_previous_metrics(tmp_path):
    path = tmp_path / "metrics.json"
    dataset = AtomicJSONDataset(filepath=str(path), save_args={"indent": 2})
    dataset.save({"auc": 0.91, "n": 3})
    with pytest.raises(DatasetError, match="not JSON serializable"):
        dataset.save({"auc": 0.93, "model": object()})
    assert dataset.load() == {"auc": 0.91, "n": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_partial_file_left_by_a_killed_run_is_replaced_by_the_next_save(tmp_path):
    path = tmp_path / "comparison.csv"
    (tmp_path / "comparison.csv.partial").write_text("experiment,au")  # SIGKILL between open and rename
    dataset = AtomicCSVDataset(filepath=str(path), save_args={"index": False})
    dataset.save(table(3))
    pd.testing.assert_frame_equal(dataset.load(), table(3))
    assert [p.name for p in tmp_path.iterdir()] == ["comparison.csv"]


PLAIN_FILE_TYPES = {"pandas.CSVDataset", "pandas.ParquetDataset", "json.JSONDataset", "text.TextDataset",
                    "matplotlib.MatplotlibDataset"}


def test_every_catalog_file_dataset_is_written_atomically():
    def types(entry):
        if isinstance(entry, dict):
            if isinstance(entry.get("type"), str):
                yield entry["type"]
            for value in entry.values():
                yield from types(value)

    found = {}
    for catalog in sorted((PROJECT_ROOT / "conf").glob("*/catalog*.yml")):
        for name, entry in (yaml.safe_load(catalog.read_text()) or {}).items():
            for dataset_type in types(entry):
                found.setdefault(dataset_type, []).append(f"{catalog.relative_to(PROJECT_ROOT)}: {name}")
    plain = {t: where for t, where in found.items() if t.removeprefix("kedro_datasets.") in PLAIN_FILE_TYPES}
    assert not plain, f"use the Atomic* datasets of deepfake_kedro.datasets instead: {plain}"
    assert {"deepfake_kedro.datasets.AtomicCSVDataset", "deepfake_kedro.datasets.AtomicFigureDataset"} <= set(found)
