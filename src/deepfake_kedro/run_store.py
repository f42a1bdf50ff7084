"""Per-fold training results on disk, keyed by config fingerprint and by the data they came from.

A fold directory is complete once it exists: it is assembled under a staging
name and renamed at the end, so a killed run never leaves a fold that looks
finished. Runs of identical configs share a directory, so they train once: a
lock per fold (``fcntl.flock``) makes a second process that wants the same fold
(two experiments with one fingerprint, run at once by the DaskRunner) wait for
the first and then find it done. The empty ``fold_<k>.lock`` files stay: deleting
one while another process waits on it would let a third lock a new file beside it.
flock needs a file system that honours it across the processes sharing the store
(local disks do; some network file systems only within one machine).
Each fold also records its ``data_key`` (a hash of the rows it trained, validated
and tested on, with their roles and file signatures) and those rows: a fold whose
data changed retrains, saying what changed, and is never read as current.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from deepfake_kedro.image_cache import swap_folder_in

logger = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """What training one fold produces."""

    state_dict: dict[str, torch.Tensor]
    history: pd.DataFrame
    predictions: pd.DataFrame
    meta: dict[str, Any]
    val_predictions: pd.DataFrame | None = None
    """The best epoch's inner-validation predictions (thresholds are chosen on them)."""


@dataclass(frozen=True)
class StoredFold:
    """A finished fold on disk; the checkpoint is read only when asked for."""

    directory: Path
    history: pd.DataFrame
    predictions: pd.DataFrame
    meta: dict[str, Any]
    val_predictions: pd.DataFrame | None = None
    """None for a fold trained before validation predictions were stored."""

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        return torch.load(self.directory / "model.pt", map_location="cpu", weights_only=True)


ROW_COLUMNS = ["path", "group", "label", "role", "signature"]
"""What a fold's rows table holds: every image it used, its role (train / val / test) and file signature."""


class StaleRunError(RuntimeError):
    """A finished fold was trained on other data than the current fold table and caches hold."""


@dataclass(frozen=True)
class FoldData:
    """The data one fold uses: its rows (``ROW_COLUMNS``) and their hash."""

    rows: pd.DataFrame
    data_key: str

    @classmethod
    def from_rows(cls, rows: pd.DataFrame) -> FoldData:
        """Hashes the rows in path order, so the key does not depend on the fold table's row order."""
        rows = rows[ROW_COLUMNS].sort_values("path", kind="stable").reset_index(drop=True)
        blob = json.dumps(rows.astype(str).to_numpy().tolist(), separators=(",", ":")).encode()
        return cls(rows, hashlib.sha256(blob).hexdigest()[:16])


@dataclass(frozen=True)
class FoldPlan:
    """A fold to train when it is missing or its data changed; calling it trains it."""

    data: FoldData
    train: Callable[[], FoldResult]
    label: str = ""

    def __call__(self) -> FoldResult:
        return self.train()


def describe_data_change(old: pd.DataFrame | None, new: pd.DataFrame) -> str:
    """What differs between a stored fold's rows and the current ones, e.g. '60 images added, 0 removed, ...'."""
    if old is None:
        return "it was trained before runs were keyed by their data"
    old_rows, new_rows = old.set_index("path"), new.set_index("path")
    shared = old_rows.index.intersection(new_rows.index)
    before, after = old_rows.loc[shared], new_rows.loc[shared]
    parts = [
        f"{len(new_rows.index.difference(old_rows.index))} images added",
        f"{len(old_rows.index.difference(new_rows.index))} removed",
        f"{int((before['role'] != after['role']).sum())} changed role",
    ]
    for column, what in (("signature", "changed file"), ("group", "changed group"), ("label", "changed label")):
        changed = int((before[column].astype(str) != after[column].astype(str)).sum())
        if changed:
            parts.append(f"{changed} {what}")
    return "data changed: " + ", ".join(parts)


def run_key(fingerprint: str, fold: int) -> str:
    return f"{fingerprint}/fold_{fold}"


class FoldRunStore:
    """A folder of ``<fingerprint>/fold_<k>/`` results."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def is_complete(self, key: str) -> bool:
        return (self.root / key / "meta.json").exists()

    def keys(self) -> list[str]:
        return sorted(p.parent.relative_to(self.root).as_posix() for p in self.root.glob("*/fold_*/meta.json"))

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Holds the fold's lock: no other process or thread trains or writes ``key`` meanwhile."""
        lock = self.root / f"{key}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, key: str, result: FoldResult, data: FoldData | None = None) -> None:
        """Writes one fold run, under its lock."""
        with self.locked(key):
            self._write_locked(key, result, data)

    def _write_locked(self, key: str, result: FoldResult, data: FoldData | None) -> None:
        target = self.root / key
        # Where a run it replaces goes whole before being deleted (swap_folder_in): hidden, no fold_* name.
        replaced = target.with_name(f".{target.name}.replaced")
        # Staging folders of killed runs: only the lock holder writes this fold, so none is in use.
        for leftover in [*target.parent.glob(f"{target.name}.*.partial"), target.with_name(f"{target.name}.partial"),
                         replaced]:
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".partial", dir=target.parent))
        torch.save(result.state_dict, staging / "model.pt")
        result.history.to_csv(staging / "history.csv", index=False)
        result.predictions.to_parquet(staging / "predictions.parquet", index=False)
        if result.val_predictions is not None:
            result.val_predictions.to_parquet(staging / "val_predictions.parquet", index=False)
        meta = dict(result.meta)
        if data is not None:
            data.rows.to_parquet(staging / "rows.parquet", index=False)
            meta["data_key"] = data.data_key
        # meta.json is written last: its presence marks the fold as complete.
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        swap_folder_in(staging, target, replaced)

    def train_and_write(self, key: str, run: FoldResult | Callable[[], FoldResult]) -> FoldResult | None:
        """Under the fold's lock, computes and writes ``run`` unless the fold is done by then (returns None).

        A process that waited for the lock while another trained the same fold finds it complete and
        current, and skips it.
        """
        data = run.data if isinstance(run, FoldPlan) else None
        with self.locked(key):
            if self.is_complete(key) and (data is None or self.stale_reason(key, data) is None):
                logger.info("Skipping %s: written meanwhile by another run with this config and data", key)
                return None
            result = run() if callable(run) else run
            self._write_locked(key, result, data)
            return result

    def read(self, key: str) -> StoredFold:
        directory = self.root / key
        if not self.is_complete(key):
            raise FileNotFoundError(f"fold run {key!r} is not complete under {self.root}; run training first")
        return StoredFold(
            directory=directory,
            history=pd.read_csv(directory / "history.csv"),
            predictions=pd.read_parquet(directory / "predictions.parquet"),
            meta=json.loads((directory / "meta.json").read_text()),
            val_predictions=(pd.read_parquet(directory / "val_predictions.parquet")
                             if (directory / "val_predictions.parquet").exists() else None),
        )

    def trained_config(self, fingerprint: str) -> dict[str, Any] | None:
        """The config the fold runs of ``fingerprint`` trained (a stored fold's meta.json), or None when none is."""
        metas = sorted(self.root.glob(f"{fingerprint}/fold_*/meta.json"))
        return json.loads(metas[0].read_text())["config"] if metas else None

    def stored_rows(self, key: str) -> pd.DataFrame | None:
        """The rows a finished fold used (None for a fold written without them)."""
        path = self.root / key / "rows.parquet"
        return pd.read_parquet(path) if path.exists() else None

    def data_key(self, key: str) -> str | None:
        """The data key a finished fold recorded (None for a fold written without one)."""
        return json.loads((self.root / key / "meta.json").read_text()).get("data_key")

    def stale_reason(self, key: str, data: FoldData) -> str | None:
        """Why a finished fold does not match ``data`` (None when it does)."""
        if self.data_key(key) == data.data_key:
            return None
        return describe_data_change(self.stored_rows(key), data.rows)

    def check_current(self, key: str, data: FoldData, label: str) -> None:
        """Raises ``StaleRunError`` unless the fold is finished and was trained on ``data``."""
        if not self.is_complete(key):
            raise FileNotFoundError(f"{label}: fold run {key!r} is not complete under {self.root}; "
                                    f"run the experiment's training first (e.g. kedro run --pipelines <its phase>)")
        reason = self.stale_reason(key, data)
        if reason is not None:
            raise StaleRunError(
                f"{label} fold {key.rsplit('_', 1)[-1]}: the stored run {self.root / key} was trained on other data "
                f"({reason}); re-run its training (e.g. kedro run --pipelines <its phase>) before evaluating it"
            )

    def pending(
        self, runs: Mapping[str, FoldResult | Callable[[], FoldResult]]
    ) -> list[tuple[str, FoldResult | Callable[[], FoldResult]]]:
        """The runs still to compute and write: folds not complete, and ``FoldPlan``s whose data key changed.

        Logs each finished fold it skips and each stale fold with what changed.
        """
        todo = []
        for key, run in runs.items():
            data = run.data if isinstance(run, FoldPlan) else None
            if self.is_complete(key):
                reason = self.stale_reason(key, data) if data is not None else None
                if reason is None:
                    logger.info("Skipping %s: already trained with this config and data", key)
                    continue
                label = run.label or key  # type: ignore[union-attr]
                logger.warning("%s fold %s retrains: %s", label, key.rsplit("_", 1)[-1], reason)
            todo.append((key, run))
        return todo

    def save_all(self, runs: Mapping[str, FoldResult | Callable[[], FoldResult]]) -> None:
        """Writes each run in order, computing lazy ones only when their fold is not done yet.

        A ``FoldPlan`` also retrains a finished fold whose stored data key differs from its own,
        logging what changed.
        """
        for key, run in self.pending(runs):
            self.train_and_write(key, run)
