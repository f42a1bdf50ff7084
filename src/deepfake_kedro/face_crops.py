"""Face crops with facenet-pytorch's MTCNN: detect once, crop square with a margin, fall back when no face.

Detection runs in batches (images of one size per batch, as MTCNN requires), on CUDA when present,
through ``mtcnn_batch.detect_faces`` (facenet-pytorch's nets with its per-box loops batched); the
images of a batch are decoded on threads.
The most confident face is kept; its box is enlarged by ``margin`` (0.6 = 60% of the box size)
into a square crop. Images without a confident face fall back to the plain centre square crop
and are flagged.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from io import BytesIO
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from deepfake_kedro.data_index import ImageTree, square_resize, to_rgb8
from deepfake_kedro.mtcnn_batch import detect_faces
from deepfake_kedro.training import select_device

logger = logging.getLogger(__name__)

BOX_COLUMNS = ["detected", "confidence", "x0", "y0", "x1", "y1", "width", "height"]


class FaceDetector:
    """MTCNN (weights ship in facenet-pytorch's wheel), loaded on first use."""

    # Images per call when the configuration leaves it open: a GPU needs large batches to be busy, while on a
    # CPU small ones keep the progress bar moving and lose little when a run is interrupted.
    DEFAULT_BATCH_SIZE = {"cuda": 128, "cpu": 16}

    def __init__(self, tree: ImageTree | None, min_confidence: float = 0.9, device: str | None = None,
                 decode_workers: int | None = None):
        self.tree = tree
        self.min_confidence = min_confidence
        self.device = select_device(device)
        self.decode_workers = decode_workers or os.cpu_count() or 1

    def batch_size(self, requested: int | None = None) -> int:
        """``requested``, or this device's default (``DEFAULT_BATCH_SIZE``) when it is None."""
        return requested or self.DEFAULT_BATCH_SIZE.get(self.device.type, self.DEFAULT_BATCH_SIZE["cpu"])

    @cached_property
    def mtcnn(self):
        from facenet_pytorch import MTCNN

        return MTCNN(keep_all=True, post_process=False, device=self.device)

    def _open(self, key: str) -> Image.Image:
        with Image.open(BytesIO(self.tree.read_bytes(key))) as image:
            return to_rgb8(image)

    def __call__(self, keys: Sequence[str]) -> list[dict]:
        """Detects the most confident face of each image; one result dict per key."""
        # PIL decodes without the GIL: threads keep a GPU detector fed.
        with ThreadPoolExecutor(max_workers=min(self.decode_workers, len(keys) or 1)) as pool:
            return self.detect_images(list(pool.map(self._open, keys)))

    def detect_images(self, images: Sequence[Image.Image]) -> list[dict]:
        """Detects the most confident face of each 8-bit RGB image (``to_rgb8``); one result dict per image."""
        results: list[dict] = [{}] * len(images)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for position, image in enumerate(images):
            by_size[image.size].append(position)
        for positions in by_size.values():
            pixels = torch.from_numpy(np.stack([np.asarray(images[p], dtype=np.uint8) for p in positions]))
            for position, (boxes, probabilities) in zip(positions, detect_faces(pixels, self.mtcnn)):
                results[position] = self._best_face(images[position], boxes, probabilities)
        return results

    def _best_face(self, image: Image.Image, boxes: np.ndarray, probabilities: np.ndarray) -> dict:
        row = {"detected": False, "confidence": 0.0, "x0": np.nan, "y0": np.nan, "x1": np.nan, "y1": np.nan,
               "width": image.width, "height": image.height}
        if len(boxes) == 0:
            return row
        best = int(np.argmax(probabilities))
        if probabilities[best] < self.min_confidence:
            return {**row, "confidence": float(probabilities[best])}
        x0, y0, x1, y1 = boxes[best]
        return {**row, "detected": True, "confidence": float(probabilities[best]),
                "x0": float(x0), "y0": float(y0), "x1": float(x1), "y1": float(y1)}


def crop_box(box: Sequence[float], margin: float) -> tuple[int, int, int, int]:
    """The square around a face box, its side enlarged by ``margin`` of the box's larger side."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left, top = round(cx - side / 2.0), round(cy - side / 2.0)
    return left, top, left + round(side), top + round(side)


def face_box_in_view(face: Mapping[str, Any], face_crop: bool, margin: float
                     ) -> tuple[float, float, float, float] | None:
    """Where the detected face lies in the square the model saw, as fractions ``(x0, y0, x1, y1)`` of its side.

    Args:
        face: One ``face_boxes`` row (``detected``, the box ``x0``-``y1``, the image's ``width`` and ``height``).
        face_crop: The model saw the enlarged square around the face (``face_crop``), else the image's centre
            square (``square_resize``).
        margin: ``face_crop_margin`` of a face-crop model.

    Returns:
        The box, cut to the square; None when no face was detected (a face-crop model then saw the centre
        square, with no face found in it) or the face lies outside the square.
    """
    if not face.get("detected"):
        return None
    box = (float(face["x0"]), float(face["y0"]), float(face["x1"]), float(face["y1"]))
    if face_crop:
        left, top, right, _ = crop_box(box, margin)
        side = right - left
    else:
        side = min(int(face["width"]), int(face["height"]))
        left, top = (int(face["width"]) - side) // 2, (int(face["height"]) - side) // 2
    x0, y0, x1, y1 = (min(max((value - offset) / side, 0.0), 1.0)
                      for value, offset in zip(box, (left, top, left, top)))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def face_boxes_in_view(face_boxes: pd.DataFrame, paths: Sequence[str], face_crop: bool, margin: float
                       ) -> dict[str, tuple[float, float, float, float] | None]:
    """``face_box_in_view`` for each path; None for a path without a detection row (not detected)."""
    faces = face_boxes.set_index("key") if "key" in face_boxes else pd.DataFrame()
    return {path: face_box_in_view(faces.loc[path], face_crop, margin) if path in faces.index else None
            for path in paths}


def face_crop(image: Image.Image, face: dict, margin: float, size: int) -> np.ndarray:
    """The enlarged square face crop resized to ``size`` (uint8 RGB), or the plain square crop when no face."""
    if not face.get("detected"):
        return square_resize(image, size)
    # PIL pads outside the image with black, so a face at the border keeps its position in the crop.
    square = to_rgb8(image).crop(crop_box((face["x0"], face["y0"], face["x1"], face["y1"]), margin))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def render_face_crop(tree: ImageTree, faces: dict[str, dict], key: str, margin: float, size: int) -> np.ndarray:
    """Reads one image and returns its face crop (see ``face_crop``)."""
    with Image.open(BytesIO(tree.read_bytes(key))) as image:
        return face_crop(image, faces[key], margin, size)


def detection_summary(faces: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Per source: images, detected, detection rate, mean confidence of detections, fallbacks."""
    merged = faces.merge(index[["path", "source"]], left_on="key", right_on="path")
    summary = merged.groupby("source").agg(
        images=("key", "size"), detected=("detected", "sum"),
        mean_confidence=("confidence", lambda c: float(c[merged.loc[c.index, "detected"]].mean())),
    ).reset_index()
    summary["detected"] = summary["detected"].astype(int)
    summary["detection_rate"] = summary["detected"] / summary["images"]
    summary["fallback"] = summary["images"] - summary["detected"]
    return summary[["source", "images", "detected", "detection_rate", "mean_confidence", "fallback"]]
