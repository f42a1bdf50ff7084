from functools import partial
from io import BytesIO
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from deepfake_kedro.data_index import (
    FileAuditor,
    ImageTree,
    decode_square,
    decode_squares,
    inspect_image,
    square_resize,
)
from deepfake_kedro.demo_data import generate_demo_dataset
from deepfake_kedro.folds import build_fold_table, check_no_leakage
from deepfake_kedro.image_cache import ImageStackPlan, read_image_stack, write_image_stack
from deepfake_kedro.near_duplicates import (
    candidate_pairs,
    hash_squares,
    merge_groups,
    merge_summary,
    perceptual_hash,
)


def reencode(image: Image.Image, scale: float, quality: int) -> Image.Image:
    small = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.BILINEAR)
    buffer = BytesIO()
    small.save(buffer, "JPEG", quality=quality)
    return Image.open(BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def faces():
    """100 real LFW faces as 'wiki' images, each with a 'text2img' fake of the same basename."""
    rows, pixels = [], []
    rng = np.random.default_rng(0)
    for i, face in enumerate(data.lfw_subset()[:100]):
        real = Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((64, 64))
        fake = Image.fromarray(np.clip(np.asarray(real) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8))
        for source, label, image in (("wiki", 0, real), ("text2img", 1, fake)):
            rows.append({"path": f"{source}/{i:03d}.jpg", "source": source, "label": label, "group": f"{i:03d}"})
            pixels.append(square_resize(image, 64))
    # A lightly edited copy of person 7's real photo under another basename, as in DFF's face swaps.
    edited = reencode(Image.fromarray(pixels[14]), scale=0.8, quality=70)
    rows.append({"path": "insight/swap_of_007.jpg", "source": "insight", "label": 1, "group": "swap_of_007"})
    pixels.append(square_resize(edited, 64))
    return pd.DataFrame(rows), np.stack(pixels)


def test_edited_copy_joins_the_group_of_its_source_and_folds_keep_it_together(faces):
    images, pixels = faces
    hashes = np.array([perceptual_hash(p) for p in pixels], dtype=np.uint64)
    merged, pairs = merge_groups(images, hashes, max_distance=4)
    by_path = dict(zip(images["path"], merged))
    assert by_path["insight/swap_of_007.jpg"] == by_path["wiki/007.jpg"] == by_path["text2img/007.jpg"]
    assert {"wiki/007.jpg", "insight/swap_of_007.jpg"} <= set(pairs["path_a"]) | set(pairs["path_b"])
    # Different people are not merged wholesale: nearly every basename keeps its own group.
    assert merged.nunique() >= 95
    table = build_fold_table(images.assign(group=merged), cv_folds=5, val_ratio=0.1, seed=0)
    check_no_leakage(table)
    swap_rows = table[table["group"] == by_path["wiki/007.jpg"]]
    assert swap_rows["fold"].nunique() == 1 and len(swap_rows) == 3


def test_candidate_pairs_equal_brute_force_hamming():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (40, 3)).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips[:, 0] ^ flips[:, 1], base ^ flips[:, 0] ^ flips[:, 1] ^ flips[:, 2]])
    found = candidate_pairs(hashes, max_distance=3)
    brute = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
             if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 3}
    assert set(zip(found["i"], found["j"])) == brute


def brute_force_pairs(hashes: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    first, second = np.triu_indices(len(hashes), k=1)
    close = np.bitwise_count(hashes[first] ^ hashes[second]) <= max_distance
    return set(zip(first[close].tolist(), second[close].tolist()))


def test_crowded_and_repeated_hashes_are_searched_exactly():
    # 3000 hashes agreeing on 48 bits fill one bucket of every band (the search used to skip such buckets).
    rng = np.random.default_rng(4)
    hashes = (np.uint64(0xABCD_0123_4567) << np.uint64(16)) | rng.integers(0, 2**16, 3000).astype(np.uint64)
    hashes[:40] = hashes[40]  # and a run of identical hashes (blank images)
    for max_distance in (0, 2, 4):
        found = candidate_pairs(hashes, max_distance, small_bucket=64)
        assert set(zip(found["i"], found["j"])) == brute_force_pairs(hashes, max_distance)
        assert (found["distance"] <= max_distance).all() and (found["i"] < found["j"]).all()


def assert_groups_are_brute_force_components(images: pd.DataFrame, hashes: np.ndarray, max_distance: int) -> None:
    merged, pairs = merge_groups(images, hashes, max_distance)
    close = brute_force_pairs(hashes, max_distance)
    parent = {group: group for group in images["group"]}

    def root(group: str) -> str:
        while parent[group] != group:
            group = parent[group]
        return group

    for i, j in close:
        a, b = sorted([root(images["group"][i]), root(images["group"][j])])
        parent[b] = a
    assert merged.tolist() == [root(group) for group in images["group"]]  # the root is the smallest name
    assert len(pairs) == sum(images["group"][i] != images["group"][j] for i, j in close)


def test_demo_grouping_equals_brute_force_components():
    """On the demo images, merged groups are exactly the components of all pairs within the distance."""
    tree_files = generate_demo_dataset(n_identities=64, seed=0)
    rows = [inspect_image(data, ".jpg", min_size=24, hash_size=32) for data in tree_files.values()]
    images = pd.DataFrame({"path": list(tree_files), "group": [PurePosixPath(p).stem.lower() for p in tree_files]})
    assert_groups_are_brute_force_components(images, np.array([r["phash"] for r in rows]).view(np.uint64), 4)


def test_face_grouping_with_merges_equals_brute_force_components(faces):
    images, pixels = faces
    hashes = np.array([perceptual_hash(p) for p in pixels], dtype=np.uint64)
    for max_distance in (4, 12):  # 12 bits: many basename groups merge
        assert_groups_are_brute_force_components(images, hashes, max_distance)


def test_merge_summary_counts_merged_basename_groups_and_keeps_the_closest_pairs(caplog):
    groups = pd.DataFrame({"path": list("abcde"), "basename_group": ["g1", "g2", "g3", "g4", "g4"],
                           "group": ["g1", "g1", "g1", "g4", "g4"]})
    pairs = pd.DataFrame({"a": ["a", "b"], "b": ["b", "c"], "distance": [5, 2]})
    summary = merge_summary(groups, pairs, max_distance=6)
    assert (summary["basename_groups"], summary["merged_groups"]) == (4, 2)
    assert summary["basename_groups_merged"] == 3 and summary["largest_merged_group"] == 3
    assert summary["cross_group_pairs"] == 2 and [p["distance"] for p in summary["example_pairs"]] == [2, 5]
    assert "3 basename groups hold near duplicates of each other and were merged into 1 groups" in caplog.text


def varied_tree(root) -> list[str]:
    """LFW faces saved as the raw trees hold them: JPEG, PNG, grey, RGBA, CMYK, 16-bit, landscape and portrait."""
    faces = (data.lfw_subset()[:24] * 255).astype(np.uint8)
    paths = []
    for i, face in enumerate(faces):
        image = Image.fromarray(face).convert("RGB").resize((60 + 7 * i, 90 - 2 * i), Image.Resampling.BILINEAR)
        path, kind = f"{('real', 'fake')[i % 2]}/{i:02d}", i % 6
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        if kind == 0:
            image.save(root / f"{path}.jpg", quality=90)
        elif kind == 1:
            image.save(root / f"{path}.png")
        elif kind == 2:
            image.convert("L").save(root / f"{path}.jpg")
        elif kind == 3:
            image.convert("RGBA").save(root / f"{path}.png")
        elif kind == 4:
            image.convert("CMYK").save(root / f"{path}.jpg")
        else:
            Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 200).save(root / f"{path}.png")
        paths.append(f"{path}.{'png' if kind in (1, 3, 5) else 'jpg'}")
    return paths


def test_hashes_from_the_raw_tree_equal_hashes_from_the_square_cache(tmp_path):
    # The hashes decide near-duplicate groups, hence folds: the audit's cache-free path must not move a bit.
    root = tmp_path / "raw"
    paths = varied_tree(root)
    tree, size = ImageTree(root), 48
    plan = ImageStackPlan(paths, [tree.signature(p) for p in paths], size, partial(decode_square, tree, size=size))
    write_image_stack(plan, tmp_path / "square_48")
    stack = read_image_stack(tmp_path / "square_48")
    from_cache = np.array([perceptual_hash(np.asarray(stack.array[row])) for row in stack.rows(paths)],
                          dtype=np.uint64)
    from_tree = hash_squares(tree, paths, size, workers=3)
    np.testing.assert_array_equal(from_tree, from_cache)
    # The index's single decode hashes the same pixels.
    audit = FileAuditor(tree, min_size=1, hash_size=size, workers=3)(paths)
    np.testing.assert_array_equal(np.array([row["phash"] for row in audit], dtype=np.int64).view(np.uint64), from_cache)
    assert len(set(from_tree.tolist())) > 20  # distinct faces, not one constant hash
    np.testing.assert_array_equal(decode_squares(tree, paths[::-1], size), np.asarray(stack.array)[::-1])
