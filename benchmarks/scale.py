"""Preprocessing at DFF size: seconds and peak memory of every audit and cache stage, first run and re-run.

Generates a DFF-shaped tree of N images (``wiki`` real, ``text2img`` / ``inpainting`` / ``insight`` fakes sharing
each identity's basename, 50 sub-folders per source) and runs the preprocessing nodes on it, stage by stage, each
in its own process so each stage's peak RSS is its own. The nodes are the pipeline's own functions with its
datasets' save logic (``kedro run --pipelines preprocessing`` minus the runner): index (one decode per file:
integrity, metadata and pHash), hashes, near-duplicate grouping, fold table, the square-crop caches
(128 and 224 px) and the images check a run reading the study's results makes first (``images_check``: the
tree against the audit, ``hooks.UnchangedImagesHook``). Then everything runs again on the unchanged tree.

    python benchmarks/scale.py 20000                 # one size
    python benchmarks/scale.py 5000 20000 --extrapolate 120000   # growth between sizes, extrapolated

The tree is made from the 200 faces of scikit-image's LFW subset: each identity takes one face, cropped, tinted
and overlaid with its own low-frequency field; its fakes add their own smaller changes, so a group's images are
near each other and identities sharing a base face are not. Real images are JPEGs of 250-500 px per side
(quality 70-95), fakes 512 x 512 JPEGs (quality 90), as in DFF. Trees live under --workdir (default /tmp) and are
deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from io import BytesIO
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}
STAGES = ["index", "hashes", "near_duplicates", "folds", "square_caches", "images_check"]
IMAGE_SIZES = [128, 224]  # conf/base preprocessing.image_sizes
MIN_IMAGE_SIZE = 32
MAX_DISTANCE = 4
SUBFOLDERS = 50
PROJECT = Path(__file__).resolve().parents[1]
# Each generating process's base faces and film-grain tiles (set by _init_worker).
_BASES: np.ndarray
_GRAIN: np.ndarray


# The tree ----------------------------------------------------------------------------------------------------------
def _base_faces() -> np.ndarray:
    from skimage import data

    return (data.lfw_subset() * 255).astype(np.uint8)


def _identity_face(identity: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One identity's face at ``size``: its base face, crop, tint and low-frequency field, plus fine grain."""
    identity_rng = np.random.default_rng(identity)  # the same face in every source
    top, bottom, left, right = identity_rng.integers(0, 4, 4)
    base = _BASES[identity % len(_BASES)][top:25 - bottom, left:25 - right].astype(np.float32)
    field = Image.fromarray(identity_rng.integers(0, 255, (6, 6), dtype=np.uint8))
    field = np.asarray(field.resize(base.shape[::-1], Image.Resampling.BICUBIC), np.float32) - 128
    low = base[..., None] * identity_rng.uniform(0.75, 1.15, 3) + field[..., None] * 0.35
    face = Image.fromarray(np.clip(low, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    y, x = rng.integers(0, 64, 2)
    grain = _GRAIN[rng.integers(len(_GRAIN)), y:y + size[1], x:x + size[0], None]  # distinct bytes per file
    return np.clip(np.asarray(face, np.int16) + grain, 0, 255).astype(np.uint8)


def _identity_files(identity: int) -> list[tuple[str, bytes]]:
    basename = f"nm{identity:07d}_{1930 + identity % 60}_{1990 + identity % 30}"
    folder = f"{identity % SUBFOLDERS:02d}"
    files = []
    for k, source in enumerate(SOURCES):
        rng = np.random.default_rng([identity, k])
        if source == "wiki":
            size = (int(rng.integers(250, 501)), int(rng.integers(250, 501)))
            quality = int(rng.integers(70, 96))
        else:
            size, quality = (512, 512), 90
        pixels = _identity_face(identity, size, rng)
        if source != "wiki":  # the generator's own change: a brighter or darker patch somewhere
            y, x = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
            patch = pixels[y:y + size[1] // 3, x:x + size[0] // 3].astype(np.int16) + int(rng.integers(-30, 30))
            pixels[y:y + size[1] // 3, x:x + size[0] // 3] = np.clip(patch, 0, 255)
        buffer = BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        files.append((f"{source}/{folder}/{basename}.jpg", buffer.getvalue()))
    return files


def _init_worker() -> None:
    global _BASES, _GRAIN
    _BASES = _base_faces()
    _GRAIN = np.random.default_rng(0).normal(0, 6, (8, 576, 576)).astype(np.int16)


def _write_identities(root: str, identities: range) -> int:
    written = 0
    for identity in identities:
        for relative, data in _identity_files(identity):
            target = Path(root) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written += len(data)
    return written


def generate_tree(root: Path, n_images: int, workers: int) -> dict[str, float]:
    """Writes ``n_images`` (a multiple of 4: one per source per identity) under ``root``."""
    check_size(n_images)
    identities = n_images // len(SOURCES)
    started = time.perf_counter()
    chunks = [range(start, min(start + 250, identities)) for start in range(0, identities, 250)]
    with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
        written = sum(pool.map(_write_identities, [str(root)] * len(chunks), chunks))
    return {"images": identities * len(SOURCES), "seconds": time.perf_counter() - started, "bytes": written}


def check_size(n_images: int) -> None:
    """Refuses an N the tree cannot have: every identity has one image in each of the 4 sources."""
    if n_images <= 0 or n_images % len(SOURCES):
        raise ValueError(f"N = {n_images}: the number of images must be a positive multiple of {len(SOURCES)} "
                         f"(one image per source per identity), e.g. {max(len(SOURCES), n_images // 4 * 4)}")


def tree_marker(root: Path) -> Path:
    """Written beside a tree once all its files are there (not inside it, where it would be indexed)."""
    return root.with_name(f"{root.name}.complete.json")


def prepare_tree(root: Path, n_images: int, workers: int) -> int:
    """A complete tree of ``n_images`` under ``root``: reused when its marker and file count say so, else made anew.

    Returns:
        The number of images in the tree, the N the stages measure.
    """
    marker = tree_marker(root)
    if (marker.exists() and root.is_dir() and json.loads(marker.read_text())["images"] == n_images
            and sum(1 for path in root.rglob("*") if path.is_file()) == n_images):
        return n_images
    # A tree without its marker was cut short (a killed generation) or is another N's: it is made again.
    marker.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    made = generate_tree(root, n_images, workers)
    print(f"\nN = {made['images']}: generated in {made['seconds']:.0f} s, {made['bytes'] / 2**30:.2f} GiB of JPEG "
          f"under {root}")
    marker.write_text(json.dumps({"images": made["images"]}))
    return int(made["images"])


# One stage, in its own process -------------------------------------------------------------------------------------
def _study_defaults() -> dict:
    return yaml.safe_load((PROJECT / "conf/base/parameters.yml").read_text())["defaults"]


def run_stage(stage: str, root: Path, data_dir: Path) -> dict[str, object]:
    """Runs one stage as its node and dataset do, reading the previous stages' outputs from ``data_dir``.

    The calls are the core functions the preprocessing nodes make, with the same arguments; the nodes module
    itself is not imported, as it loads torch (about 0.8 GB) into every stage's peak.
    """
    import pandas as pd

    from deepfake_kedro.data_index import (
        FileAuditor,
        ImageTree,
        check_usable_images,
        decode_square,
        index_from_audit,
        source_files,
        tree_changes,
        usable,
    )
    from deepfake_kedro.folds import build_fold_table, required_groups
    from deepfake_kedro.image_cache import ImageStackPlan, TablePlan, write_image_stack, write_table
    from deepfake_kedro.near_duplicates import merge_groups, merge_summary

    defaults, tree = _study_defaults(), ImageTree(root)
    files = {name: data_dir / f"{name}.parquet"
             for name in ("image_audit", "image_index", "perceptual_hashes", "image_groups", "fold_table")}
    data_dir.mkdir(parents=True, exist_ok=True)
    note: dict[str, object] = {"import_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    started, cpu = time.perf_counter(), time.process_time()
    if stage == "index":  # audit_images (its dataset decodes what changed), then index_images
        paths = source_files(tree, SOURCES)
        auditor = FileAuditor(tree, MIN_IMAGE_SIZE, max(IMAGE_SIZES))
        note["decoded"] = write_table(TablePlan(paths, [auditor.signature(p) for p in paths], auditor, 256, "indexing"),
                                      files["image_audit"])
        index = index_from_audit(pd.read_parquet(files["image_audit"]), SOURCES)
        cv_folds, val_ratio = defaults["cv_folds"], defaults["val_ratio"]
        check_usable_images(index, root, SOURCES, cv_folds, required_groups(cv_folds, val_ratio))
        index.to_parquet(files["image_index"])
        note["files"] = len(index)
    elif stage == "hashes":  # hash_images
        paths = usable(pd.read_parquet(files["image_index"]))["path"]
        phash = paths.map(pd.read_parquet(files["image_audit"]).set_index("key")["phash"])
        pd.DataFrame({"path": paths, "phash": phash.to_numpy(dtype=np.int64)}).to_parquet(files["perceptual_hashes"])
    elif stage == "near_duplicates":  # group_near_duplicates
        images = usable(pd.read_parquet(files["image_index"]))[["path", "group"]].merge(
            pd.read_parquet(files["perceptual_hashes"]), on="path", how="left")
        merged, pairs = merge_groups(images, images["phash"].to_numpy().view(np.uint64), MAX_DISTANCE)
        groups = pd.DataFrame({"path": images["path"], "basename_group": images["group"], "group": merged})
        groups.to_parquet(files["image_groups"])
        summary = merge_summary(groups, pairs, MAX_DISTANCE)
        note.update(pairs=len(pairs), basename_groups=summary["basename_groups"], groups=summary["merged_groups"])
    elif stage == "folds":  # build_folds
        images = usable(pd.read_parquet(files["image_index"])).drop(columns="group").merge(
            pd.read_parquet(files["image_groups"])[["path", "group"]], on="path")
        table = build_fold_table(images, defaults["cv_folds"], defaults["val_ratio"], defaults["seed"])
        table.to_parquet(files["fold_table"])
    elif stage == "square_caches":  # plan_square_caches, executed by RenderedImageCacheDataset
        keys = usable(pd.read_parquet(files["image_index"]))["path"].tolist()
        signatures = [tree.signature(k) for k in keys]
        note["rendered"] = sum(
            write_image_stack(ImageStackPlan(keys, signatures, size, partial(decode_square, tree, size=size)),
                              data_dir / "image_cache" / f"square_{size}")
            for size in IMAGE_SIZES)
    elif stage == "images_check":  # hooks.UnchangedImagesHook: what a reporting or package run adds before any node
        changes = tree_changes(tree, SOURCES, pd.read_parquet(files["image_audit"]))
        note["changed"] = len(changes.added) + len(changes.removed) + len(changes.replaced)
    elif stage == "decode_only":  # not a pipeline stage: every file decoded once, the floor of a first index
        def decode(path: str) -> None:
            with Image.open(root / path) as image:
                image.load()

        with ThreadPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(decode, source_files(tree, SOURCES)))
    else:
        raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
    note.update(seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu)
    return note


def _stage_main(stage: str, root: Path, data_dir: Path) -> None:
    note = run_stage(stage, root, data_dir)
    print(json.dumps({"stage": stage, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **note}))


def measure(stage: str, root: Path, data_dir: Path) -> dict[str, object]:
    """Runs a stage in a fresh process and returns its seconds, CPU seconds and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src"), "CI": "true"}  # CI: log lines, no progress bars
    done = subprocess.run([sys.executable, __file__, "--stage", stage, "--root", str(root), "--data-dir",
                           str(data_dir)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"stage {stage} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# The report --------------------------------------------------------------------------------------------------------
def benchmark(n_images: int, workdir: Path, workers: int, keep: bool) -> dict[str, list[dict]]:
    root, data_dir = workdir / f"dff_{n_images}", workdir / f"dff_{n_images}_data"
    shutil.rmtree(data_dir, ignore_errors=True)
    n_images = prepare_tree(root, n_images, workers)
    try:
        floor = measure("decode_only", root, data_dir)
        runs = {run: [measure(stage, root, data_dir) for stage in STAGES] for run in ("first run", "re-run")}
    finally:
        if not keep:
            tree_marker(root).unlink(missing_ok=True)
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\nN = {n_images} images ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"{'stage':<16}{'first s':>9}{'cpu s':>8}{'peak MB':>9}{'re-run s':>10}{'cpu s':>8}{'peak MB':>9}  notes")
    for first, again in zip(runs["first run"], runs["re-run"]):
        notes = {k: round(v) if isinstance(v, float) else v for k, v in first.items()
                 if k not in {"stage", "seconds", "cpu_seconds", "peak_rss_mb"}}
        rerun_notes = {k: v for k, v in again.items() if k in {"decoded", "rendered"}}
        print(f"{first['stage']:<16}{first['seconds']:>9.1f}{first['cpu_seconds']:>8.1f}{first['peak_rss_mb']:>9.0f}"
              f"{again['seconds']:>10.1f}{again['cpu_seconds']:>8.1f}{again['peak_rss_mb']:>9.0f}  "
              f"{notes} re-run {rerun_notes}")
    totals = {run: sum(s["seconds"] for s in stages) for run, stages in runs.items()}
    print(f"{'total':<16}{totals['first run']:>9.1f}{'':>17}{totals['re-run']:>10.1f}")
    print(f"{'(decode only)':<16}{floor['seconds']:>9.1f}{floor['cpu_seconds']:>8.1f}{floor['peak_rss_mb']:>9.0f}"
          f"  every file decoded once, nothing else: the floor of a first index")
    return runs


def growth(results: dict[int, dict[str, list[dict]]], target: int | None) -> None:
    """Per stage: the exponent b of time ~ N**b between the smallest and largest N, and the value at ``target``."""
    small, large = min(results), max(results)
    print(f"\nGrowth from N = {small} to N = {large}" + (
        f"; extrapolated to N = {target}, not measured (time with the measured exponent, at least 1; memory "
        f"linearly from the growth per image)" if target else ""))
    print(f"{'stage':<16}{'run':<10}{'seconds':>16}{'exponent':>10}{'peak MB':>14}" + ("  at target: s, peak MB"
                                                                                         if target else ""))
    for run in ("first run", "re-run"):
        for a, b in zip(results[small][run], results[large][run]):
            exponent = math.log(max(b["seconds"], 1e-3) / max(a["seconds"], 1e-3)) / math.log(large / small)
            line = (f"{a['stage']:<16}{run:<10}{a['seconds']:>7.1f} -> {b['seconds']:>5.1f}{exponent:>10.2f}"
                    f"{a['peak_rss_mb']:>6.0f} -> {b['peak_rss_mb']:>5.0f}")
            if target:
                seconds = b["seconds"] * (target / large) ** max(exponent, 1.0)
                # Memory: the growth per image between the two sizes, continued linearly.
                peak = b["peak_rss_mb"] + (b["peak_rss_mb"] - a["peak_rss_mb"]) / (large - small) * (target - large)
                line += f"  {seconds:>8.1f} {peak:>8.0f}"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, help="numbers of images (multiples of 4), e.g. 5000 20000")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"), help="where the trees and outputs go")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes generating the tree")
    parser.add_argument("--extrapolate", type=int, help="a larger N to extrapolate the measured growth to")
    parser.add_argument("--keep", action="store_true", help="keep the generated trees and outputs")
    parser.add_argument("--stage", choices=[*STAGES, "decode_only"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        _stage_main(args.stage, args.root, args.data_dir)
        return
    if not args.sizes:
        parser.error("give at least one number of images, e.g. 20000")
    for size in args.sizes:
        try:
            check_size(size)
        except ValueError as error:
            parser.error(str(error))
    results = {n: benchmark(n, args.workdir, args.workers, args.keep) for n in args.sizes}
    if len(results) > 1:
        growth(results, args.extrapolate)


if __name__ == "__main__":
    main()
