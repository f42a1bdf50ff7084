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


def _band_masks(free_mask: int, bands: int) -> list[np.uint64]:
    """The set bits of ``free_mask`` split into ``bands`` masks of (nearly) equal size."""
    bits = [bit for bit in range(HASH_BITS) if free_mask >> bit & 1]
    return [np.uint64(sum(1 << int(bit) for bit in chunk)) for chunk in np.array_split(bits, bands) if len(chunk)]


def _close_pairs(hashes: np.ndarray, members: np.ndarray, free_mask: int, max_distance: int,
                 small: int) -> list[np.ndarray]:
    """Pairs of ``members`` (distinct hashes agreeing outside ``free_mask``) within ``max_distance`` bits.

    Pigeonhole: with the free bits split into ``max_distance + 1`` bands, two hashes within the distance agree
    exactly on at least one band. Buckets of at most ``small`` hashes are compared pair by pair; a larger
    bucket is split again on its remaining varying bits (every band holds a bit that varies, so each bucket is
    smaller than ``members``), so crowded regions (similar faces) stay exact without a quadratic comparison.
    """
    values = hashes[members]
    # Bits every member shares add nothing to a distance: only the bits that vary are banded.
    free_mask &= int(np.bitwise_or.reduce(values) ^ np.bitwise_and.reduce(values)) if len(members) else 0
    if len(members) <= small or bin(free_mask).count("1") <= max_distance:
        # Distinct hashes that agree on all but <= max_distance bits number at most 2**max_distance.
        first, second = np.triu_indices(len(members), k=1)
        a, b = members[first], members[second]
        close = np.bitwise_count(hashes[a] ^ hashes[b]) <= max_distance
        return [np.column_stack([a[close], b[close]])]
    found = []
    for band in _band_masks(free_mask, max_distance + 1):
        keys = values & band
        order = np.argsort(keys, kind="stable")
        keys, ordered = keys[order], members[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        sizes = np.diff(np.r_[starts, len(keys)])
        in_small_bucket = np.repeat(sizes <= small, sizes)
        # Every small bucket at once: each member against the one `lag` places further in the same bucket.
        for lag in range(1, min(small, int(sizes.max()))):
            same = (keys[lag:] == keys[:-lag]) & in_small_bucket[lag:]
            if not same.any():
                break
            a, b = ordered[:-lag][same], ordered[lag:][same]
            close = np.bitwise_count(hashes[a] ^ hashes[b]) <= max_distance
            found.append(np.column_stack([a[close], b[close]]))
        for start, size in zip(starts[sizes > small], sizes[sizes > small]):
            found += _close_pairs(hashes, ordered[start:start + size], free_mask & ~int(band), max_distance, small)
    return found


def _member_pairs(first: np.ndarray, second: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                  by_hash: np.ndarray) -> np.ndarray:
    """Every (image of hash a, image of hash b) for the hash pairs (a, b); ``by_hash`` lists images hash by hash."""
    per_pair = counts[first] * counts[second]
    pair = np.repeat(np.arange(len(first)), per_pair)
    offset = np.arange(per_pair.sum()) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    across = counts[second][pair]
    return np.column_stack([by_hash[starts[first][pair] + offset // across],
                            by_hash[starts[second][pair] + offset % across]])


def candidate_pairs(hashes: np.ndarray, max_distance: int, small_bucket: int = 512) -> pd.DataFrame:
    """All pairs of images whose hashes are within ``max_distance`` bits: exact, and never quadratic in the search.

    Identical hashes are searched once (multi-index hashing over the distinct values, see ``_close_pairs``);
    the pairs are then listed image by image, so the cost is the search plus the pairs found.

    Returns:
        ``i, j, distance`` with i < j, sorted by ``i`` then ``j``.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    distinct, image_hash, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    image_hash = image_hash.ravel()
    found = _close_pairs(distinct, np.arange(len(distinct)), (1 << HASH_BITS) - 1, max_distance, small_bucket)
    close = np.vstack(found) if found else np.empty((0, 2), dtype=np.int64)
    codes = np.unique(np.sort(close, axis=1).astype(np.int64) @ np.array([len(distinct), 1]))
    by_hash = np.argsort(image_hash, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    pairs = [_member_pairs(codes // len(distinct), codes % len(distinct), starts, counts, by_hash)]
    for value in np.flatnonzero(counts > 1):  # images sharing one hash: distance 0
        members = by_hash[starts[value]:starts[value] + counts[value]]
        first, second = np.triu_indices(len(members), k=1)
        pairs.append(np.column_stack([members[first], members[second]]))
    pairs = np.sort(np.vstack(pairs), axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    distance = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]])
    return pd.DataFrame({"i": pairs[:, 0].astype(np.int64), "j": pairs[:, 1].astype(np.int64),
                         "distance": distance.astype(np.int64)})


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
        "largest_merged_group": int(sizes.max()) if len(sizes) else 0,  # in basename (identity) groups
        "largest_merged_group_images": int(groups.groupby("group").size().max()) if len(groups) else 0,
        "cross_group_pairs": int(len(pairs)),
        "example_pairs": pairs.sort_values("distance").head(10).to_dict(orient="records"),
    }
    if summary["basename_groups_merged"]:
        logger.warning("%d basename groups hold near duplicates of each other and were merged into %d groups",
                       summary["basename_groups_merged"], int((sizes > 1).sum()))
    return summary
