"""Values made safe for JSON files that any reader can parse."""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """A copy of ``value`` with nan / inf as None and numpy scalars as Python numbers, so the JSON stays valid.

    Args:
        value: Nested dicts, lists, tuples and scalars.

    Returns:
        The same structure (tuples as lists) holding only JSON-valid values.
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return value
