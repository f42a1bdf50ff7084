"""The project's config loader: environments list only the parameters they change.

Parameters merge softly (an environment's ``defaults: {epochs: 1}`` changes only the epochs), except
the mappings below, which describe a set: an environment that names its own sources (or scaling
points, or ranking criteria) replaces base's whole mapping instead of adding to it.
"""

from __future__ import annotations

import copy
from typing import Any

from kedro.config import OmegaConfigLoader

REPLACED_WHOLE = ("data.sources", "data.families", "phase4.scaling", "phase4.ranking.weights")
"""Dotted parameter keys an environment (or ``--params``) replaces whole rather than merges into."""


def _lookup(config: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


class StudyConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose soft merge replaces the set-like mappings of ``REPLACED_WHOLE``."""

    @staticmethod
    def _soft_merge(config: dict[str, Any], env_config: dict[str, Any], env_path: str | None = None) -> Any:
        merged = OmegaConfigLoader._soft_merge(config, env_config, env_path)
        for dotted in REPLACED_WHOLE:
            found, value = _lookup(env_config, dotted)
            if found:
                *parents, last = dotted.split(".")
                target = merged
                for key in parents:
                    target = target[key]
                target[last] = copy.deepcopy(value)
        return merged
