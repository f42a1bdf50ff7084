"""Long computations saved part by part, so an interrupted run resumes where it stopped.

A plan is a list of ``Part``: a name, a signature of everything its rows depend on, and how to compute them.
``write_parts`` keeps every finished part beside the output (``<file>.parts/<name>.parquet``), computes only
the parts whose signature it has not stored, and writes the whole table once every part is done. Re-scoring
120k images under fourteen corruptions takes hours: a killed run loses one part, not the night.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deepfake_kedro.image_cache import write_parquet_atomically
from deepfake_kedro.progress import progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """One piece of a long table: reused while its ``signature`` is unchanged, else computed."""

    name: str
    """A relative path naming the part, e.g. ``phase4.top1_full/fold_0/chunk_00003``."""
    signature: str
    """Everything the rows depend on (inputs, settings, model), hashed: another one recomputes the part."""
    compute: Callable[[], pd.DataFrame]


def parts_folder(path: Path) -> Path:
    """Where the finished parts of the table at ``path`` are kept."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def _save_text(text: str, path: Path) -> None:
    staging = path.with_name(path.name + ".partial")
    staging.write_text(text)
    os.replace(staging, path)


def write_parts(parts: Sequence[Part], path: Path, description: str = "parts") -> int:
    """Writes the table of every part's rows, in order, to ``path`` (parquet, atomically).

    A part whose stored signature matches is read back; the others are computed and stored at once, so an
    interrupted run keeps every part it finished. Parts of another plan left in the folder are not read.

    Args:
        parts: The plan; names must be unique.
        path: The table's parquet file.
        description: For the progress bar and the log.

    Returns:
        How many parts were computed (0: everything was reused).

    Raises:
        ValueError: No parts, or two parts with the same name.
    """
    if not parts:
        raise ValueError(f"{description}: nothing to compute (the plan holds no part)")
    repeated = sorted(name for name, count in Counter(part.name for part in parts).items() if count > 1)
    if repeated:
        raise ValueError(f"{description}: the plan names these parts twice: {repeated[:3]}")
    path, folder = Path(path), parts_folder(path)
    frames, computed, logged = [], 0, time.perf_counter()
    for done, part in enumerate(progress(parts, description, total=len(parts), unit="part"), start=1):
        if time.perf_counter() - logged > 30:  # a line in the log at most every 30 s: runs off a terminal show it
            logger.info("%s: %d / %d parts done (%d computed), now %s", description, done - 1, len(parts),
                        computed, part.name)
            logged = time.perf_counter()
        table, signature = folder / f"{part.name}.parquet", folder / f"{part.name}.signature"
        if table.exists() and signature.exists() and signature.read_text() == part.signature:
            frames.append(pd.read_parquet(table))
            continue
        # The stored part no longer matches: its signature goes first, so a run killed mid-write never reuses it.
        signature.unlink(missing_ok=True)
        frame = part.compute()
        table.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomically(frame, table)
        _save_text(part.signature, signature)
        frames.append(frame)
        computed += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomically(pd.concat(frames, ignore_index=True), path)
    logger.info("%s: %d computed, %d reused from an earlier or interrupted run (%s)", description, computed,
                len(parts) - computed, folder)
    return computed
