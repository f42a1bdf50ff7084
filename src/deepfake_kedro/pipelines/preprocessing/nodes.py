"""Nodes of the preprocessing pipeline: thin adapters over the data-index, folds and cache core."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from deepfake_kedro.augmentation import BatchAugmenter
from deepfake_kedro.config import AugmentConfig, validate_defaults, validate_families
from deepfake_kedro.data_index import (
    DataLayoutError,
    FileAuditor,
    ImageTree,
    check_usable_images,
    decode_square,
    index_from_audit,
    integrity_report,
    render_signatures,
    source_files,
    to_rgb8,
    usable,
)
from deepfake_kedro.face_crops import (
    BOX_COLUMNS,
    FaceDetector,
    crop_box,
    detection_summary,
    face_crop,
    render_face_crop,
)
from deepfake_kedro.figures import augmentation_grid, face_crop_grid
from deepfake_kedro.folds import build_fold_table, required_groups
from deepfake_kedro.image_cache import ImageStack, ImageStackPlan, TablePlan
from deepfake_kedro.near_duplicates import merge_groups, merge_summary

logger = logging.getLogger(__name__)


def _reads_root(raw_images: ImageTree, root: str) -> bool:
    """Whether the catalog's tree is ``data.root``; a relative one is anchored at the project, not at the cwd.

    Kedro (and ``DataRootHook``) anchor relative catalog paths at the project, which is the cwd or, for a
    ``kedro run`` started in a subfolder, one of its parents.
    """
    tree, cwd = raw_images.root.resolve(), Path.cwd()
    return any((anchor / root).resolve() == tree for anchor in (cwd, *cwd.parents))


def audit_images(
    raw_images: ImageTree, data: dict[str, Any], preprocessing: dict[str, Any], defaults: dict[str, Any]
) -> TablePlan:
    """Describes one decode per new or changed file: integrity, metadata and the pHash of usable images.

    The ``image_audit`` dataset executes the plan on save, reusing the rows of files whose path, size and mtime
    (and ``min_image_size`` and hash size) are unchanged, so an unchanged tree re-indexes without decoding.

    Args:
        raw_images: The raw image folder (catalog ``raw_images``).
        data: ``data.root`` and ``data.sources``.
        preprocessing: ``min_image_size``, and ``image_sizes``: the largest is the square crop that is hashed,
            pixel for pixel what the ``square_<size>`` cache holds, so the audit needs no cache.
        defaults: Study-wide settings, validated here before anything is written.

    Returns:
        The audit plan for every file of every source folder.
    """
    if not _reads_root(raw_images, data["root"]):
        raise DataLayoutError(
            f"data.root is {data['root']!r} but the catalog's raw_images reads {str(raw_images.root)!r}; "
            f"set data_root in conf/<env>/globals.yml, or pass --params data.root=... (both follow it)"
        )
    validate_defaults(defaults)
    started = time.perf_counter()
    paths = source_files(raw_images, data["sources"])
    auditor = FileAuditor(raw_images, preprocessing["min_image_size"], max(preprocessing["image_sizes"]))
    signatures = [auditor.signature(p) for p in paths]
    logger.info("Listed %d files in %.1f s", len(paths), time.perf_counter() - started)
    return TablePlan(paths, signatures, auditor, batch_size=256, description="indexing")


def index_images(
    image_audit: pd.DataFrame, raw_images: ImageTree, data: dict[str, Any], defaults: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every file of every source with its metadata and integrity status, from the audit table.

    Args:
        image_audit: One row per file (``audit_images``).
        raw_images: The raw image folder, to name it in errors.
        data: ``data.sources``.
        defaults: Study-wide ``cv_folds`` and ``val_ratio``: enough usable groups of each label are checked
            here, before any cache, hash or face detection.

    Returns:
        The image index (all files) and the integrity report (excluded files with reasons).
    """
    study = validate_defaults(defaults)
    index = index_from_audit(image_audit, data["sources"])
    check_usable_images(index, raw_images.root, data["sources"], study.cv_folds,
                        required_groups(study.cv_folds, study.val_ratio))
    validate_families(data)  # before any cache or training: generalisation and attribution read the families
    return index, integrity_report(index)


def hash_images(image_index: pd.DataFrame, image_audit: pd.DataFrame) -> pd.DataFrame:
    """The 64-bit perceptual hash (pHash) of every usable image's square crop, as the audit computed it.

    The crops were decoded from the raw images at the largest configured size, pixel for pixel what the
    ``square_<size>`` cache holds, so the hashes (hence groups and folds) are those the cache would give.
    """
    paths = usable(image_index)["path"]
    phash = paths.map(image_audit.set_index("key")["phash"])
    return pd.DataFrame({"path": paths, "phash": phash.to_numpy(dtype=np.int64)})


def group_near_duplicates(
    image_index: pd.DataFrame, perceptual_hashes: pd.DataFrame, preprocessing: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Merges basename groups that hold near-duplicate images (pHash within ``max_distance`` bits).

    Args:
        image_index: The image index.
        perceptual_hashes: ``path, phash`` per usable image.
        preprocessing: ``near_duplicates.max_distance``.

    Returns:
        ``path, basename_group, group`` per usable image, the cross-group near-duplicate pairs, and a summary.
    """
    images = usable(image_index)[["path", "group"]].merge(perceptual_hashes, on="path", how="left")
    max_distance = preprocessing["near_duplicates"]["max_distance"]
    merged, pairs = merge_groups(images, images["phash"].to_numpy().view(np.uint64), max_distance)
    groups = pd.DataFrame({"path": images["path"], "basename_group": images["group"], "group": merged})
    return groups, pairs, merge_summary(groups, pairs, max_distance)


def build_folds(image_index: pd.DataFrame, image_groups: pd.DataFrame, defaults: dict[str, Any]) -> pd.DataFrame:
    """Assigns usable images to grouped, stratified outer folds and inner train / val roles.

    Args:
        image_index: The image index.
        image_groups: The near-duplicate-aware group of every usable image.
        defaults: Shared defaults with ``cv_folds``, ``val_ratio`` and ``seed``.

    Returns:
        The fold table.
    """
    study = validate_defaults(defaults)
    images = usable(image_index).drop(columns="group").merge(image_groups[["path", "group"]], on="path")
    return build_fold_table(images, study.cv_folds, study.val_ratio, study.seed)


def plan_square_caches(
    image_index: pd.DataFrame, raw_images: ImageTree, preprocessing: dict[str, Any]
) -> dict[str, ImageStackPlan]:
    """Describes one square-crop cache per image size; the dataset renders only what changed.

    Args:
        image_index: The image index.
        raw_images: The raw image folder.
        preprocessing: ``image_sizes``.

    Returns:
        ``square_<size>`` -> plan.
    """
    images = usable(image_index)
    keys = images["path"].tolist()
    signatures = render_signatures(images)  # the file's bytes (and EXIF turn): a touched file is not re-rendered
    return {
        f"square_{size}": ImageStackPlan(
            keys, signatures, size, partial(decode_square, raw_images, size=size), description=f"square_{size}"
        )
        for size in preprocessing["image_sizes"]
    }


def plan_face_detection(
    image_index: pd.DataFrame, raw_images: ImageTree, preprocessing: dict[str, Any]
) -> TablePlan:
    """Describes MTCNN detection for every usable image; only new or changed images are processed.

    Args:
        image_index: The image index.
        raw_images: The raw image folder.
        preprocessing: ``face_detection`` (batch_size, null for the device's default; min_confidence; device)
            and ``face_crop_sizes`` (empty = no face crops, nothing is detected).

    Returns:
        The detection plan for the ``face_boxes`` table.
    """
    settings = preprocessing["face_detection"]
    images = usable(image_index) if preprocessing.get("face_crop_sizes") else usable(image_index).iloc[:0]
    keys = images["path"].tolist()
    detector = FaceDetector(raw_images, settings["min_confidence"], settings.get("device"))
    batch_size = detector.batch_size(settings.get("batch_size"))
    # A box depends on its file's bytes and on the confidence a detection needs: another threshold re-detects.
    signatures = [f"{rendered}|min_confidence={detector.min_confidence}" for rendered in render_signatures(images)]
    return TablePlan(keys, signatures, detector, batch_size, "MTCNN faces")


def plan_face_caches(
    image_index: pd.DataFrame, raw_images: ImageTree, face_boxes: pd.DataFrame, preprocessing: dict[str, Any]
) -> dict[str, ImageStackPlan]:
    """Describes one face-crop cache per size in ``face_crop_sizes``, cropped around the detected face.

    Args:
        image_index: The image index.
        raw_images: The raw image folder.
        face_boxes: MTCNN results per image.
        preprocessing: ``face_crop_sizes`` and ``face_crop_margin``.

    Returns:
        ``face_<size>`` -> plan.
    """
    if not preprocessing.get("face_crop_sizes"):
        return {}
    margin = preprocessing["face_crop_margin"]
    images = usable(image_index)
    keys = images["path"].tolist()
    faces = face_boxes.set_index("key")[BOX_COLUMNS].to_dict(orient="index")
    # A crop changes with its file's bytes (and EXIF turn), its box and the margin: all make up the signature.
    signatures = [
        f"{rendered}|{faces[k]['x0']:.2f},{faces[k]['y0']:.2f},{faces[k]['x1']:.2f},{faces[k]['y1']:.2f}|{margin}"
        for k, rendered in zip(keys, render_signatures(images), strict=True)
    ]
    return {
        f"face_{size}": ImageStackPlan(
            keys, signatures, size, partial(render_face_crop, raw_images, faces, margin=margin, size=size),
            description=f"face_{size}",
        )
        for size in preprocessing.get("face_crop_sizes") or []
    }


def summarize_face_detection(face_boxes: pd.DataFrame, image_index: pd.DataFrame) -> pd.DataFrame:
    """Per-source detection rate, mean confidence and fallback count (empty when face crops are off)."""
    if face_boxes.empty:
        return pd.DataFrame(columns=["source", "images", "detected", "detection_rate", "mean_confidence", "fallback"])
    summary = detection_summary(face_boxes, image_index)
    for row in summary.itertuples():
        logger.info("Face detection %s: %d / %d (%.1f%%), %d fall back to the square crop",
                    row.source, row.detected, row.images, 100 * row.detection_rate, row.fallback)
    return summary


def face_crop_figure(
    face_boxes: pd.DataFrame, image_index: pd.DataFrame, raw_images: ImageTree, preprocessing: dict[str, Any]
) -> Figure:
    """A grid per source of images with their face box, the enlarged crop square and the crop."""
    margin, per_source = preprocessing["face_crop_margin"], preprocessing["preview_images_per_source"]
    if face_boxes.empty:
        return face_crop_grid([], "No face crops: preprocessing.face_crop_sizes is empty")
    merged = face_boxes.merge(image_index[["path", "source"]], left_on="key", right_on="path")
    samples = []
    for source, rows in merged.groupby("source", sort=True):
        # Detected faces first, plus one fallback where there is any, so both cases are visible.
        chosen = pd.concat([rows[rows["detected"]].head(per_source - 1), rows[~rows["detected"]].head(1)])
        chosen = pd.concat([chosen, rows.drop(chosen.index).head(per_source - len(chosen))])
        for face in chosen.to_dict(orient="records"):
            with Image.open(BytesIO(raw_images.read_bytes(face["key"]))) as image:
                image = to_rgb8(image)  # upright, as the detector saw it
                box = (face["x0"], face["y0"], face["x1"], face["y1"])
                square = crop_box(box, margin) if face["detected"] else None
                samples.append((source, np.asarray(image), face, square, face_crop(image, face, margin, 128)))
    return face_crop_grid(samples, f"MTCNN face crops (margin {margin}): red = detected box, green = crop")


def augmentation_figure(image_cache: Mapping[str, ImageStack], preprocessing: dict[str, Any]) -> Figure:
    """A few cached images before and after the augmentation dict (several seeded draws)."""
    augment = AugmentConfig.model_validate(preprocessing["augment_preview"])
    stack = image_cache[f"square_{max(preprocessing['image_sizes'])}"]
    rows = np.linspace(0, len(stack) - 1, num=min(6, len(stack))).astype(int)
    originals = np.asarray(stack.array[rows])
    draws = [BatchAugmenter(augment, seed)(originals, rows) for seed in range(5)]
    return augmentation_grid(originals, draws, "Training augmentation: originals and five seeded draws")
