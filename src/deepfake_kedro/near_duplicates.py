"""Near-duplicate-aware groups: perceptual hashes joined within a small Hamming distance.

In DFF a face swap saved under one basename carries another identity's photo, so grouping by
basename alone can put near-identical content on both sides of a split. Images whose perceptual
hashes (imagehash's pHash, 64 bits) differ in at most ``max_distance`` bits are joined, and whole
basename groups merge through them (connected components).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from deepfake_kedro.data_index import ImageTree, decode_square, perceptual_hash
from deepfake_kedro.progress import progress

logger = logging.getLogger(__name__)

HASH_BITS = 64


def hash_squares(tree: ImageTree, paths: Sequence[str], size: int, workers: int | None = None) -> np.ndarray:
    """pHash of every listed image's square crop at ``size``, decoded straight from the tree.

    The pixels are ``decode_square``'s, the same the ``square_<size>`` cache holds, so the hashes equal those
    computed from the cache without rendering it.

    Args:
        tree: The raw images.
        paths: Relative paths of the images to hash.
        size: Side of the square crop that is hashed.
        workers: Decoding threads (default: CPU count).

    Returns:
        One uint64 hash per path, in order.
    """
    started = time.perf_counter()
    hashes = np.zeros(len(paths), dtype=np.uint64)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        computed = pool.map(lambda path: perceptual_hash(decode_square(tree, path, size)), paths)
        for done, value in enumerate(progress(computed, "hashing", total=len(paths), unit="img"), start=1):
            hashes[done - 1] = value
            if done % 5000 == 0:
                logger.info("Hashed %d / %d images (%.0f img/s)", done, len(paths),
                            done / (time.perf_counter() - started))
    return hashes


def candidate_pairs(hashes: np.ndarray, max_distance: int, max_bucket: int = 2000) -> pd.DataFrame:
    """All pairs within ``max_distance`` bits, found via the pigeonhole principle.

    Split into ``max_distance + 1`` bands, two hashes within the distance agree exactly on at least
    one band, so only images sharing a band value are compared.

    Returns:
        ``i, j, distance`` with i < j.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    bands = max_distance + 1
    edges = np.linspace(0, HASH_BITS, bands + 1).astype(int)
    found = []
    for low, high in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << (high - low)) - 1)
        keys = (hashes >> np.uint64(low)) & mask
        order = np.argsort(keys, kind="stable")
        boundaries = np.flatnonzero(np.diff(keys[order])) + 1
        for bucket in np.split(order, boundaries):
            if len(bucket) < 2:
                continue
            if len(bucket) > max_bucket:
                logger.warning("Skipping a hash bucket of %d images (e.g. blank images) in one band", len(bucket))
                continue
            i, j = np.triu_indices(len(bucket), k=1)
            distance = np.bitwise_count(hashes[bucket[i]] ^ hashes[bucket[j]])
            close = distance <= max_distance
            found.append(np.column_stack([bucket[i][close], bucket[j][close], distance[close]]))
    if not found:
        return pd.DataFrame({"i": [], "j": [], "distance": []}, dtype=np.int64)
    pairs = np.unique(np.sort(np.vstack(found)[:, :2], axis=1), axis=0)
    distance = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]])
    return pd.DataFrame({"i": pairs[:, 0], "j": pairs[:, 1], "distance": distance.astype(np.int64)})


def merge_groups(images: pd.DataFrame, hashes: np.ndarray, max_distance: int) -> tuple[pd.Series, pd.DataFrame]:
    """Joins basename groups that hold near-duplicate images.

    Args:
        images: Rows with ``path`` and ``group`` (basename), aligned with ``hashes``.
        hashes: 64-bit perceptual hashes.
        max_distance: Largest Hamming distance that counts as a near duplicate.

    Returns:
        The merged group of every image (named after its smallest member group), and the
        near-duplicate pairs that cross basename groups (``path_a, path_b, distance``).
    """
    pairs = candidate_pairs(hashes, max_distance)
    group_codes, group_names = pd.factorize(images["group"], sort=True)
    n = len(group_names)
    crossing = pairs[group_codes[pairs["i"]] != group_codes[pairs["j"]]]
    graph = coo_matrix((np.ones(len(crossing)), (group_codes[crossing["i"]], group_codes[crossing["j"]])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # Name each merged group after its alphabetically first basename group: stable across runs.
    first_name = pd.Series(group_names).groupby(component).transform("min").to_numpy()
    merged = pd.Series(first_name[group_codes], index=images.index, name="group")
    examples = pd.DataFrame({
        "path_a": images["path"].to_numpy()[crossing["i"]],
        "path_b": images["path"].to_numpy()[crossing["j"]],
        "distance": crossing["distance"].to_numpy(),
    })
    logger.info("Near duplicates: %d cross-group pairs merged %d basename groups into %d groups",
                len(crossing), n, merged.nunique())
    return merged, examples


def merge_summary(groups: pd.DataFrame, pairs: pd.DataFrame, max_distance: int) -> dict[str, Any]:
    """How many basename groups were merged, into how many groups, with the closest pairs as examples.

    Args:
        groups: ``path, basename_group, group`` per image (``group`` after merging).
        pairs: Cross-group near-duplicate pairs (``distance`` in bits).
        max_distance: The pHash distance used.

    Returns:
        A JSON-ready summary; logs a warning when any groups were merged.
    """
    sizes = groups.groupby("group")["basename_group"].nunique()
    summary = {
        "max_distance": max_distance,
        "basename_groups": int(groups["basename_group"].nunique()),
        "merged_groups": int(groups["group"].nunique()),
        "basename_groups_merged": int(sizes[sizes > 1].sum()),
        "largest_merged_group": int(sizes.max()) if len(sizes) else 0,
        "cross_group_pairs": int(len(pairs)),
        "example_pairs": pairs.sort_values("distance").head(10).to_dict(orient="records"),
    }
    if summary["basename_groups_merged"]:
        logger.warning("%d basename groups hold near duplicates of each other and were merged into %d groups",
                       summary["basename_groups_merged"], int((sizes > 1).sum()))
    return summary
