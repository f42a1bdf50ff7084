"""Per-fold training results on disk, keyed by config fingerprint, written atomically.

A fold directory is complete once it exists: it is assembled under a staging
name and renamed at the end, so a killed run never leaves a fold that looks
finished. Runs of identical configs share a key, so they train once.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

logger = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """What training one fold produces."""

    state_dict: dict[str, torch.Tensor]
    history: pd.DataFrame
    predictions: pd.DataFrame
    meta: dict[str, Any]


@dataclass(frozen=True)
class StoredFold:
    """A finished fold on disk; the checkpoint is read only when asked for."""

    directory: Path
    history: pd.DataFrame
    predictions: pd.DataFrame
    meta: dict[str, Any]

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        return torch.load(self.directory / "model.pt", map_location="cpu", weights_only=True)


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

    def write(self, key: str, result: FoldResult) -> None:
        target = self.root / key
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        torch.save(result.state_dict, staging / "model.pt")
        result.history.to_csv(staging / "history.csv", index=False)
        result.predictions.to_parquet(staging / "predictions.parquet", index=False)
        # meta.json is written last: its presence marks the fold as complete.
        (staging / "meta.json").write_text(json.dumps(result.meta, indent=2, default=str))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)

    def read(self, key: str) -> StoredFold:
        directory = self.root / key
        if not self.is_complete(key):
            raise FileNotFoundError(f"fold run {key!r} is not complete under {self.root}; run training first")
        return StoredFold(
            directory=directory,
            history=pd.read_csv(directory / "history.csv"),
            predictions=pd.read_parquet(directory / "predictions.parquet"),
            meta=json.loads((directory / "meta.json").read_text()),
        )

    def save_all(self, runs: Mapping[str, FoldResult | Callable[[], FoldResult]]) -> None:
        """Writes each run in order, computing lazy ones only when their fold is not done yet."""
        for key, run in runs.items():
            if self.is_complete(key):
                logger.info("Skipping %s: already trained with this config", key)
                continue
            self.write(key, run() if callable(run) else run)
