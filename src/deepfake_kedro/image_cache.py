"""Preprocessed image caches: lossless uint8 stacks on disk, memory-mapped for training.

Decoding, cropping and resizing happen once; every experiment then reads rows
of the same ``(N, size, size, 3)`` array. Rebuilding reuses the rows of images
whose file has not changed, so a second run decodes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfake_kedro.progress import progress

logger = logging.getLogger(__name__)


@dataclass
class ImageStackPlan:
    """What a cache should hold; rendered only where the old cache cannot be reused."""

    keys: list[str]
    signatures: list[str]
    size: int
    render: Callable[[str], np.ndarray]
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    description: str = "images"


class ImageStack:
    """A cached stack of images addressed by key (the image's relative path)."""

    def __init__(self, keys: Sequence[str], signatures: Sequence[str], array: np.ndarray):
        self.keys = list(keys)
        self.signatures = list(signatures)
        self.array = array
        self._row_of = {key: row for row, key in enumerate(self.keys)}

    def __reduce__(self):
        # A memory-mapped stack travels to another process (a Dask worker) as its file name, not its pixels.
        filename = getattr(self.array, "filename", None)
        if filename is None:
            return ImageStack, (self.keys, self.signatures, self.array)
        return _reopen_stack, (self.keys, self.signatures, str(filename))

    @property
    def size(self) -> int:
        return int(self.array.shape[1])

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Positions of ``keys`` in the stack; a missing key is an error naming it."""
        try:
            return np.fromiter((self._row_of[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError as error:
            raise KeyError(
                f"image {error.args[0]!r} is not in the {self.size}px cache; re-run the preprocessing pipeline"
            ) from None


def _reopen_stack(keys: list[str], signatures: list[str], filename: str) -> ImageStack:
    return ImageStack(keys, signatures, np.load(filename, mmap_mode="r"))


def read_image_stack(directory: Path) -> ImageStack:
    """Opens a stack written by ``write_image_stack`` (memory-mapped, read-only)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    array = np.load(directory / "images.npy", mmap_mode="r")
    return ImageStack(manifest["keys"], manifest["signatures"], array)


def write_image_stack(plan: ImageStackPlan, directory: Path) -> int:
    """Writes the stack atomically, reusing unchanged rows of an existing one.

    Args:
        plan: Keys, signatures and how to render a missing image.
        directory: Where the stack lives (replaced only once complete).

    Returns:
        How many images were rendered (0 when everything was reused).
    """
    directory = Path(directory)
    previous = read_image_stack(directory) if (directory / "manifest.json").exists() else None
    if previous is not None and previous.keys == plan.keys and previous.signatures == plan.signatures:
        if previous.size == plan.size:
            logger.info("%s: %d cached images up to date", plan.description, len(plan.keys))
            return 0
    reusable = {}
    if previous is not None and previous.size == plan.size:
        old = dict(zip(previous.keys, previous.signatures))
        reusable = {k: previous._row_of[k] for k, s in zip(plan.keys, plan.signatures) if old.get(k) == s}
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shape = (len(plan.keys), plan.size, plan.size, 3)
    missing = [row for row, key in enumerate(plan.keys) if key not in reusable]
    started = time.perf_counter()
    # Rows stream to the file in order rather than through a memory map, whose written pages would count in the
    # process's resident memory: the whole cache at 120k images.
    with open(staging / "images.npy", "wb") as out, ThreadPoolExecutor(max_workers=plan.workers) as pool:
        np.lib.format.write_array_header_1_0(out, {"descr": "|u1", "fortran_order": False, "shape": shape})
        rendered = iter(progress(pool.map(lambda r: plan.render(plan.keys[r]), missing), plan.description,
                                 len(missing)))
        done = 0
        for key in plan.keys:
            if key in reusable:
                out.write(np.ascontiguousarray(previous.array[reusable[key]]).tobytes())
                continue
            image = np.asarray(next(rendered), dtype=np.uint8)
            if image.shape != shape[1:]:
                raise ValueError(f"{plan.description}: {key!r} was rendered as {image.shape}, expected {shape[1:]}")
            out.write(np.ascontiguousarray(image).tobytes())
            done += 1
            if done % 2000 == 0 or done == len(missing):
                rate = done / max(time.perf_counter() - started, 1e-9)
                logger.info("%s: rendered %d / %d (%.0f img/s)", plan.description, done, len(missing), rate)
    (staging / "manifest.json").write_text(
        json.dumps({"keys": plan.keys, "signatures": plan.signatures, "size": plan.size})
    )
    if previous is not None:
        del previous
    swap_folder_in(staging, directory, directory.with_name(directory.name + ".old"))
    logger.info("%s: %d rendered, %d reused", plan.description, len(missing), len(plan.keys) - len(missing))
    return len(missing)


@dataclass
class TablePlan:
    """A per-image table (e.g. face boxes) computed in batches, only for new or changed images."""

    keys: list[str]
    signatures: list[str]
    compute: Callable[[list[str]], list[dict]]
    batch_size: int = 32
    description: str = "rows"


def swap_folder_in(staging: Path, target: Path, retired: Path) -> None:
    """Puts the complete folder ``staging`` at ``target``; an old one is moved to ``retired`` whole, then deleted.

    Never deleted in place: a delete that stops half-way (a kill, a file that will not go) would leave half a
    folder at ``target`` that may read as complete.
    """
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def write_parquet_atomically(table, path: Path) -> None:
    """Writes a DataFrame to ``path`` through ``<name>.partial``: a reader never sees half a table."""
    staging = path.with_name(path.name + ".partial")
    table.to_parquet(staging, index=False)
    os.replace(staging, path)


def write_table(plan: TablePlan, path: Path, checkpoint_seconds: float = 60.0) -> int:
    """Writes ``key, signature`` plus the computed columns to parquet atomically, reusing unchanged rows.

    Rows computed so far are also saved every ``checkpoint_seconds`` beside the table (``<name>.progress``),
    never in it, so a killed run resumes where it stopped (MTCNN over 120k images is hours on a CPU) while
    the table itself is only ever complete.

    Returns:
        How many rows were computed.
    """
    import pandas as pd

    path = Path(path)
    progress_path = path.with_name(path.name + ".progress")
    previous = pd.read_parquet(path) if path.exists() else None
    wanted = dict(zip(plan.keys, plan.signatures))

    def still_valid(table) -> dict[str, dict]:
        rows = table.to_dict(orient="records") if table is not None else []
        return {row["key"]: row for row in rows if wanted.get(row["key"]) == row["signature"]}

    reused = still_valid(previous)
    resumed = still_valid(pd.read_parquet(progress_path) if progress_path.exists() else None)
    if set(resumed) - set(reused):
        logger.info("%s: resuming, %d rows kept from an interrupted run", plan.description,
                    len(set(resumed) - set(reused)))
    reused.update(resumed)
    missing = [k for k in plan.keys if k not in reused]
    if previous is not None and not missing and previous["key"].tolist() == list(plan.keys):
        # Same images, same files: the table on disk is already the answer; leave it untouched.
        logger.info("%s: 0 computed, %d up to date", plan.description, len(plan.keys))
        progress_path.unlink(missing_ok=True)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    computed: dict[str, dict] = {}
    signature_of = dict(zip(plan.keys, plan.signatures))

    def rows_of(keys: list[str]) -> list[dict]:
        return [{"key": k, "signature": signature_of[k], **computed[k]} for k in keys]

    started, saved = time.perf_counter(), time.perf_counter()
    bar = progress(description=plan.description, total=len(missing))
    for start in range(0, len(missing), plan.batch_size):
        chunk = missing[start:start + plan.batch_size]
        computed.update(zip(chunk, plan.compute(chunk)))
        bar.update(len(chunk))
        done = start + len(chunk)
        if done % (plan.batch_size * 20) < plan.batch_size or done == len(missing):
            rate = done / max(time.perf_counter() - started, 1e-9)
            logger.info("%s: computed %d / %d (%.1f img/s)", plan.description, done, len(missing), rate)
        if time.perf_counter() - saved >= checkpoint_seconds and done < len(missing):
            kept = [row for row in reused.values() if row["key"] not in computed]
            write_parquet_atomically(pd.DataFrame(kept + rows_of(list(computed))), progress_path)
            saved = time.perf_counter()
    bar.close()
    rows = [reused[k] if k in reused else rows_of([k])[0] for k in plan.keys]
    empty = {"key": pd.Series(dtype=str), "signature": pd.Series(dtype=str)}
    write_parquet_atomically(pd.DataFrame(rows) if rows else pd.DataFrame(empty), path)
    progress_path.unlink(missing_ok=True)
    logger.info("%s: %d computed, %d reused", plan.description, len(missing), len(plan.keys) - len(missing))
    return len(missing)
