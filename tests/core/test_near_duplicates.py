from io import BytesIO

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from deepfake_kedro.data_index import square_resize
from deepfake_kedro.folds import build_fold_table, check_no_leakage
from deepfake_kedro.near_duplicates import candidate_pairs, merge_groups, merge_summary, perceptual_hash


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


def test_merge_summary_counts_merged_basename_groups_and_keeps_the_closest_pairs(caplog):
    groups = pd.DataFrame({"path": list("abcde"), "basename_group": ["g1", "g2", "g3", "g4", "g4"],
                           "group": ["g1", "g1", "g1", "g4", "g4"]})
    pairs = pd.DataFrame({"a": ["a", "b"], "b": ["b", "c"], "distance": [5, 2]})
    summary = merge_summary(groups, pairs, max_distance=6)
    assert (summary["basename_groups"], summary["merged_groups"]) == (4, 2)
    assert summary["basename_groups_merged"] == 3 and summary["largest_merged_group"] == 3
    assert summary["cross_group_pairs"] == 2 and [p["distance"] for p in summary["example_pairs"]] == [2, 5]
    assert "3 basename groups hold near duplicates of each other and were merged into 1 groups" in caplog.text
