"""Nodes of the predict pipeline: score ``predict.input`` with the model package, then draw the gallery."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro.face_crops import FaceDetector
from deepfake_kedro.inference import Predictor, VideoRule, gallery_figure, list_inputs, status_counts
from deepfake_kedro.model_package import ModelPackage

logger = logging.getLogger(__name__)


def _predictor(package: ModelPackage, predict: dict[str, Any], preprocessing: dict[str, Any]) -> Predictor:
    """The package's fold models, with MTCNN set up as the study's crops were found when the package crops faces.

    Inputs below the study's ``min_image_size`` get ``too_small``, as the study's index excludes them.
    """
    detection = preprocessing.get("face_detection", {})
    device = predict.get("device") or detection.get("device")
    # The package records the threshold its training crops were found with (older packages: the run's).
    min_confidence = package.preprocessing.get("face_min_confidence", detection.get("min_confidence", 0.9))
    detector = FaceDetector(None, min_confidence, device) if package.needs_faces else None
    return Predictor(package, detector, VideoRule.from_params(predict.get("video")), device,
                     int(predict.get("batch_size", 32)), int(preprocessing.get("min_image_size", 32)))


def predict_inputs(
    model_package: ModelPackage, predict: dict[str, Any], preprocessing: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores every image and video under ``predict.input``; a bad input becomes a row with its status.

    Args:
        model_package: The packaged experiment (fold models, preprocessing, threshold).
        predict: ``input`` (an image, a video, a folder or a .txt list of paths), ``video`` (``frames``,
            ``rule``: mean | topk_mean, ``k``), ``batch_size``, ``device``.
        preprocessing: ``min_image_size`` (smaller images and video frames get ``too_small``, as in the study's
            index) and ``face_detection`` (MTCNN's ``min_confidence`` and ``device``), for face-crop packages.

    Returns:
        ``predictions`` (one row per input) and ``frame_scores`` (one row per sampled video frame).

    Raises:
        ValueError: ``predict.input`` is not set.
        FileNotFoundError: ``predict.input`` does not exist.
        ValueError: ``predict.input`` is a folder or list with no image or video, or a list that is not UTF-8.
    """
    source = predict.get("input")
    if not source:
        raise ValueError("predict.input is not set: kedro run --pipelines predict --params predict.input=PATH "
                         "(an image, a video, a folder or a text file of paths)")
    paths = list_inputs(source)
    started = time.perf_counter()
    predictor = _predictor(model_package, predict, preprocessing)
    logger.info("predict: %d input(s) under %s with %s (%s crop, threshold %.3f)", len(paths), source,
                model_package.resolved.label, model_package.preprocessing["crop"], model_package.threshold["value"])
    predictions, frame_scores = predictor(paths)
    logger.info("predict: %s in %.1f s", status_counts(predictions), time.perf_counter() - started)
    return predictions, frame_scores


def draw_prediction_gallery(
    model_package: ModelPackage, predictions: pd.DataFrame, frame_scores: pd.DataFrame, predict: dict[str, Any],
    preprocessing: dict[str, Any],
) -> Figure:
    """The most fake and most real inputs with the fold models' mean Grad-CAM (``predict.gallery_size`` each)."""
    predictor = _predictor(model_package, predict, preprocessing)
    return gallery_figure(predictor, predictions, frame_scores, int(predict.get("gallery_size", 6)))
