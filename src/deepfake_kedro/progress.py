"""Progress bars for the long loops (indexing, hashing, caches, face detection, training, downloads).

One helper so every loop shows the same bar and every loop is quiet in the same cases: a bar is drawn only
when its stream is a terminal and ``CI`` is not set, so CI logs and files hold only the log lines.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bars_enabled(stream: IO[str] | None = None) -> bool:
    """Whether progress bars should be drawn on ``stream`` (default ``sys.stderr``).

    Off when the stream is not a terminal (a pipe, a file, a CI log) or when ``CI`` is set to a true value.
    """
    stream = sys.stderr if stream is None else stream
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress(
    iterable: Iterable[T] | None = None,
    description: str = "",
    total: int | None = None,
    unit: str = "img",
    stream: IO[str] | None = None,
) -> tqdm:
    """A progress bar over ``iterable`` (or a manual one, advanced with ``.update(n)``), quiet off a terminal.

    Iterating yields every item of ``iterable`` whether or not a bar is drawn. The bar shows done / total,
    the rate in ``unit``/s and the ETA, and is cleared when it finishes: the log keeps its one line per step.

    Args:
        iterable: What to iterate; ``None`` for a bar advanced by hand.
        description: The bar's label, e.g. ``"square_224 cache"``.
        total: Number of items (taken from ``len(iterable)`` when it has one).
        unit: What one item is (``img``, ``batch``, ``B``).
        stream: Where to draw (default ``sys.stderr``).

    Returns:
        A ``tqdm`` bar: iterable, a context manager, with ``update`` and ``set_postfix``.
    """
    stream = sys.stderr if stream is None else stream
    return tqdm(
        iterable, desc=description, total=total, unit=unit, file=stream, leave=False, dynamic_ncols=True,
        disable=not bars_enabled(stream), mininterval=0.5, unit_scale=unit == "B",
    )
