"""Grad-CAM explanations: where each fold's model looks when it calls a face real or fake.

Every explained image is an out-of-fold prediction, so it is explained by the one
fold model that never trained on it. Built on pytorch-grad-cam; knows nothing of Kedro.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TypedDict

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from torch import nn

from deepfake_kedro.error_analysis import decision_thresholds
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.models import cam_target_layer, create_model
from deepfake_kedro.run_store import FoldRunStore, run_key
from deepfake_kedro.training import Normalizer, select_device

logger = logging.getLogger(__name__)

CamTarget = Literal["predicted", "fake", "real"]
PRED_TYPES = ("TP", "TN", "FP", "FN")
"""Prediction types in display order: correct first, then the two kinds of error."""
FLAT_CAM_NOTE = "CAM all zero: no class-discriminative gradient at the target layer"
"""What a figure says under a map that is zero everywhere, so it is not read as an explanation."""
OOF_COLUMNS = ("path", "source", "label", "fold", "prob")


class Explanation(TypedDict):
    """One explained image: the picture, its Grad-CAM and what the model said about it."""

    path: str
    source: str
    label: int
    fold: int
    prob: float
    pred_type: str
    image: np.ndarray
    cam: np.ndarray


FoldModelLoader = Callable[[int], tuple[nn.Module, Normalizer]]


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _predicted_categories(model: nn.Module, inputs: torch.Tensor) -> list[int]:
    """1 where the model calls the image fake (p >= 0.5, i.e. logit >= 0), else 0."""
    logits = model(inputs).float().reshape(len(inputs))
    return [int(v) for v in (logits >= 0).tolist()]


def gradcam_maps(
    model: nn.Module,
    backbone: str,
    pixels: np.ndarray,
    normalizer: Normalizer,
    device: torch.device | str | None = None,
    target: CamTarget = "predicted",
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM heatmaps of a one-logit model for a batch of images.

    Args:
        model: A ``create_model`` network (one logit, label 1 = fake); switched to eval mode and left there.
        backbone: Its ``BACKBONES`` name, which picks the explained layer.
        pixels: ``(N, H, W, 3)`` uint8 images, as stored in the cache.
        normalizer: The normalization the model was trained with.
        device: Where to run (default: where the model's parameters are); the model is moved there.
        target: ``"fake"`` explains evidence for fake, ``"real"`` evidence for real, ``"predicted"``
            whichever class the model predicts for each image.
        batch_size: Images per Grad-CAM pass.

    Returns:
        ``(N, H, W)`` float32 maps in [0, 1], each scaled to its own maximum; an image with no
        positive evidence for the target class gets an all-zero map.
    """
    if target not in ("predicted", "fake", "real"):
        raise ValueError(f"target must be 'predicted', 'fake' or 'real', got {target!r}")
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"pixels must be (N, H, W, 3) uint8, got shape {pixels.shape}")
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device).eval()
    maps = np.zeros(pixels.shape[:3], dtype=np.float32)
    cam = GradCAM(model=model, target_layers=[cam_target_layer(backbone, model, pixels.shape[1])])
    try:
        # Grad-CAM needs gradients even when the caller is inside torch.no_grad().
        with torch.enable_grad():
            for start in range(0, len(pixels), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size]))
                inputs = normalizer(batch, device)
                categories = (
                    _predicted_categories(model, inputs) if target == "predicted"
                    else [int(target == "fake")] * len(inputs)
                )
                targets = [BinaryClassifierOutputTarget(category) for category in categories]
                maps[start:start + len(inputs)] = cam(input_tensor=inputs, targets=targets)
    finally:
        # Released by hand: GradCAM's own context manager silently swallows IndexErrors.
        cam.activations_and_grads.release()
    return np.clip(np.nan_to_num(maps, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def prediction_types(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray,
                     threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """``TP`` / ``TN`` / ``FP`` / ``FN`` per image (positive = fake, called fake when prob >= its threshold)."""
    fake = np.asarray(labels) == 1
    called_fake = np.asarray(probs, dtype=float) >= threshold
    return np.select(
        [fake & called_fake, ~fake & ~called_fake, ~fake & called_fake], ["TP", "TN", "FP"], default="FN"
    )


def _interleave(queues: list[list[int]]) -> list[int]:
    """Round-robin: the first of every queue, then the second of every queue, skipping exhausted ones."""
    longest = max((len(q) for q in queues), default=0)
    return [q[i] for i in range(longest) for q in queues if i < len(q)]


def choose_examples(oof: pd.DataFrame, n_images: int = 16, threshold: float = 0.5) -> pd.DataFrame:
    """Picks images to explain, spread over prediction types (TP, TN, FP, FN) and sources.

    Round-robin over prediction types, and within a type round-robin over its sources, so
    each (type, source) cell gets its turn; within a cell the most confident predictions
    (furthest from the threshold) come first, ties broken by path. Empty or exhausted cells
    are skipped, so the others fill their places. Each image is judged at its fold's decision
    ``threshold`` where ``oof`` has one, as the metrics are.

    Args:
        oof: Out-of-fold predictions: ``path``, ``source``, ``label`` (1 = fake), ``fold``, ``prob``
            and optionally each fold's ``threshold``.
        n_images: How many to pick (fewer if ``oof`` has fewer rows).
        threshold: Probability from which an image counts as called fake, for rows without a fold threshold.

    Returns:
        The chosen rows of ``oof`` with a ``pred_type`` column, ordered by prediction type, source,
        then confidence.
    """
    missing = [c for c in OOF_COLUMNS if c not in oof.columns]
    if missing:
        raise KeyError(f"out-of-fold predictions lack columns {missing}")
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    table = oof.reset_index(drop=True)
    cut, _ = decision_thresholds(table, threshold)
    table = table.assign(
        pred_type=prediction_types(table["label"], table["prob"], cut.to_numpy()),
        _confidence=(table["prob"].astype(float) - cut).abs(),
        _type_order=lambda t: t["pred_type"].map(PRED_TYPES.index),
    )
    # Sorting by path first (stable sorts after) makes the choice independent of the input's row order.
    table = table.sort_values("path", kind="mergesort").sort_values("_confidence", ascending=False, kind="mergesort")
    per_type = [
        _interleave([cell.index.tolist() for _, cell in of_type.groupby("source", sort=True)])
        for _, of_type in table.groupby("_type_order", sort=True)
    ]
    chosen = table.loc[_interleave(per_type)[:n_images]]
    chosen = chosen.sort_values(["_type_order", "source"], kind="mergesort")
    return chosen.drop(columns=["_confidence", "_type_order"]).reset_index(drop=True)


def load_fold_model(
    store: FoldRunStore, fingerprint: str, fold: int, device: torch.device | str | None = None
) -> tuple[nn.Module, Normalizer]:
    """Rebuilds one fold's trained model and its normalization from the run store.

    Args:
        store: Where training wrote the folds.
        fingerprint: The experiment's config fingerprint.
        fold: The outer fold whose model to load.
        device: Where to put the model (default: CUDA if present).

    Returns:
        The model in eval mode, and the normalizer it was trained with.
    """
    stored = store.read(run_key(fingerprint, fold))
    config = stored.meta["config"]
    # pretrained=False: the trained weights come from the state dict, not from ImageNet.
    model = create_model(config["backbone"], pretrained=False, cnn_preset=config.get("cnn_preset", "medium"),
                         dropout=config.get("dropout", 0.0), num_classes=config.get("num_classes", 1))
    model.load_state_dict(stored.load_state_dict())
    normalizer = Normalizer(tuple(stored.meta["normalization_mean"]), tuple(stored.meta["normalization_std"]))
    device = torch.device(device) if device is not None else select_device()
    return model.to(device).eval(), normalizer


def explain_examples(
    examples: pd.DataFrame,
    cache: ImageStack,
    fold_model_loader: FoldModelLoader,
    backbone: str,
    target: CamTarget = "predicted",
    device: torch.device | str | None = None,
) -> list[Explanation]:
    """Grad-CAM of each chosen image by the fold model that held it out.

    Args:
        examples: Rows from ``choose_examples``: ``path``, ``source``, ``label``, ``fold``, ``prob`` and
            ``pred_type`` (derived at threshold 0.5 when absent).
        cache: The image cache the models were trained on.
        fold_model_loader: ``fold -> (model, normalizer)``; called once per fold present.
        backbone: The models' ``BACKBONES`` name.
        target: Which class to explain (see ``gradcam_maps``).
        device: Where to run (default: where each model is).

    Returns:
        One explanation per row of ``examples``, in the same order.
    """
    examples = examples.reset_index(drop=True)
    if "pred_type" not in examples:
        examples["pred_type"] = prediction_types(examples["label"], examples["prob"])
    explained: list[Explanation | None] = [None] * len(examples)
    for fold, of_fold in examples.groupby("fold", sort=True):
        model, normalizer = fold_model_loader(int(fold))
        pixels = np.ascontiguousarray(cache.array[cache.rows(of_fold["path"].tolist())])
        cams = gradcam_maps(model, backbone, pixels, normalizer, device=device, target=target)
        for position, row, image, cam in zip(of_fold.index, of_fold.itertuples(index=False), pixels, cams):
            explained[position] = Explanation(
                path=str(row.path), source=str(row.source), label=int(row.label), fold=int(row.fold),
                prob=float(row.prob), pred_type=str(row.pred_type), image=image, cam=cam,
            )
        logger.info("Grad-CAM: fold %d explained %d images", fold, len(of_fold))
    return explained


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The CAM as a jet heatmap (red = high) blended over the uint8 RGB image; uint8 RGB out."""
    if image.shape[:2] != cam.shape:
        raise ValueError(f"cam shape {cam.shape} does not match image shape {image.shape[:2]}")
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    mask = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    return show_cam_on_image(rgb, mask, use_rgb=True, image_weight=image_weight)


def cam_mass_in_region(cam: np.ndarray, box_fraction: tuple[float, float, float, float]) -> float:
    """Share of a CAM's total mass inside a box; a uniform map gives the box's area share.

    Args:
        cam: ``(H, W)`` non-negative map.
        box_fraction: ``(x0, y0, x1, y1)`` as fractions of width and height, rounded to pixel edges.

    Returns:
        Mass inside / total mass, or NaN for an all-zero map (no attention anywhere).
    """
    x0, y0, x1, y1 = box_fraction
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"box_fraction must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {box_fraction}")
    height, width = cam.shape
    total = float(np.sum(cam, dtype=np.float64))
    if total <= 0:
        return float("nan")
    inside = cam[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)]
    return float(np.sum(inside, dtype=np.float64)) / total


def cam_is_flat(cam: np.ndarray) -> bool:
    """The CAM is zero everywhere: nothing in the image moved the prediction (an overlay would look broken).

    ``gradcam_maps`` scales each map by its own range, so a constant map arrives here as all zero.
    """
    return not bool(np.any(np.asarray(cam) > 0))


def _flat(explanation: Explanation) -> bool:
    return cam_is_flat(explanation["cam"])


def _caption(explanation: Explanation) -> str:
    label = "fake" if explanation["label"] == 1 else "real"
    return (f"{explanation['pred_type']} · {explanation['source']}\n"
            f"p(fake)={explanation['prob']:.2f} · label {label}" + (" · CAM all zero" if _flat(explanation) else ""))


def gradcam_gallery(explained: Sequence[Explanation], title: str, columns: int = 4) -> Figure:
    """A grid of Grad-CAM overlays, captioned with prediction type, source, p(fake) and label.

    Captions of correct predictions are green, of errors red.
    """
    columns = max(1, min(columns, len(explained)))
    rows = max(1, math.ceil(len(explained) / columns))
    # Fixed spacing: constrained layout doubles the cost of a many-axes gallery, drawn for every experiment.
    figure = Figure(figsize=(2.3 * columns, 2.6 * rows + 0.4))
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.06, top=1 - 0.5 / (2.6 * rows + 0.4),
                           hspace=0.35, wspace=0.05)
    for position, explanation in enumerate(explained):
        ax = figure.add_subplot(rows, columns, position + 1)
        ax.imshow(overlay(explanation["image"], explanation["cam"]))
        ax.set_xticks([])
        ax.set_yticks([])
        correct = explanation["pred_type"] in ("TP", "TN")
        ax.set_xlabel(_caption(explanation), fontsize=8, color="darkgreen" if correct else "firebrick")
    figure.suptitle(title)
    return figure


def cam_comparison_grid(explained_by_model: Mapping[str, Sequence[Explanation]]) -> Figure:
    """The same images (rows) explained by each model (columns), titled with model, source and p(fake).

    A map that is zero everywhere says ``FLAT_CAM_NOTE`` in its title (in red): its overlay is the bare image.
    """
    names = list(explained_by_model)
    rows = max((len(explained) for explained in explained_by_model.values()), default=0)
    figure = Figure(figsize=(2.6 * len(names), 3.1 * rows), constrained_layout=True)
    axes = figure.subplots(max(rows, 1), max(len(names), 1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for column, name in enumerate(names):
        for row, explanation in enumerate(explained_by_model[name]):
            ax = axes[row][column]
            ax.imshow(overlay(explanation["image"], explanation["cam"]))
            title = f"{name}\n{explanation['source']} p(fake)={explanation['prob']:.2f}"
            flat = _flat(explanation)
            note = "\n" + textwrap.fill(FLAT_CAM_NOTE, 34, break_on_hyphens=False) if flat else ""
            ax.set_title(title + note, fontsize=8, color="firebrick" if flat else "black")
    return figure


def captioned_overlay(explanation: Explanation, scale_to: int = 192) -> Image.Image:
    """The overlay as a PNG-ready image, upscaled for tiny inputs, with label and probability under it."""
    picture = Image.fromarray(overlay(explanation["image"], explanation["cam"]))
    side = max(scale_to, picture.width)
    picture = picture.resize((side, side), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (side, side + 34), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    truth = "fake" if explanation["label"] == 1 else "real"
    draw.text((4, side + 3), f"{explanation['pred_type']}  {explanation['source']} ({truth})", fill="black")
    flat = "  (CAM all zero)" if _flat(explanation) else ""
    draw.text((4, side + 18), f"p(fake) = {explanation['prob']:.3f}  fold {explanation['fold']}{flat}", fill="black")
    return canvas


def explanation_table(
    explained: Sequence[Explanation], face_boxes: Mapping[str, tuple[float, float, float, float] | None] | None = None,
) -> pd.DataFrame:
    """One row per explained image: what was predicted, and how much of its Grad-CAM lies on the face.

    Args:
        explained: The explanations.
        face_boxes: Path -> the detected face as fractions of the model's input (``face_crops.face_box_in_view``);
            None or a missing path: no face found.

    Returns:
        Columns ``path``, ``source``, ``label``, ``fold``, ``prob``, ``pred_type``; ``cam_mass_face`` (the
        CAM's share inside the face box; NaN without a face or for an all-zero CAM), ``face_area_share`` (the
        box's share of the input: what a map without preference gives) and ``cam_flat`` (the CAM is zero
        everywhere: nothing in the image moved the prediction towards its class).
    """
    face_boxes = face_boxes or {}
    rows = []
    for e in explained:
        box = face_boxes.get(e["path"])
        cam = np.asarray(e["cam"])
        rows.append({
            "path": e["path"], "source": e["source"], "label": e["label"], "fold": e["fold"], "prob": e["prob"],
            "pred_type": e["pred_type"],
            "cam_mass_face": cam_mass_in_region(cam, box) if box else float("nan"),
            "face_area_share": cam_mass_in_region(np.ones(cam.shape), box) if box else float("nan"),
            "cam_flat": _flat(e),
        })
    return pd.DataFrame(rows, columns=["path", "source", "label", "fold", "prob", "pred_type", "cam_mass_face",
                                       "face_area_share", "cam_flat"])
