"""MTCNN's three stages over a batch of images without a Python loop per candidate box.

facenet-pytorch's ``detect_face`` crops and resizes every candidate box of stages 2 and 3 one at a time
(about 160 boxes per 512 px face photo, several kernel launches each), and converts boxes to numpy in
between: on a GPU those loops, not the networks, set the pace. Here the same crops come from one
summed-area table per image, gathered for all boxes at once, and the boxes stay on the device until NMS's
last stage. The networks, weights, thresholds, scale pyramid and NMS are facenet-pytorch's own; the
crops equal its ``interpolate(mode="area")`` resize (adaptive average pooling) up to float rounding
(checked in tests/core/test_mtcnn_batch.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops.boxes import batched_nms

__all__ = ["area_resize_boxes", "detect_faces", "summed_area_table"]

_NORMALISE_MEAN, _NORMALISE_SCALE = 127.5, 0.0078125  # facenet-pytorch's input scaling for all three nets


def _bins(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive average pooling's bin edges: bin i of ``size`` covers [floor(i*n/size), ceil((i+1)*n/size))."""
    i = torch.arange(size, device=start.device)
    lo = torch.div(i[None, :] * length[:, None], size, rounding_mode="floor")
    hi = -torch.div(-(i[None, :] + 1) * length[:, None], size, rounding_mode="floor")
    return start[:, None] + lo, start[:, None] + hi


def summed_area_table(images: torch.Tensor) -> torch.Tensor:
    """8-bit images (N, H, W, C) -> integer table (N, H+1, W+1, C): the sums above and left of each pixel."""
    # Integers keep every sum exact; int32 holds an image's total while H * W * 255 < 2**31 (a 2900 px square).
    dtype = torch.int32 if images.shape[1] * images.shape[2] * 255 < 2**31 else torch.int64
    table = images.cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
    return torch.nn.functional.pad(table, (0, 0, 1, 0, 1, 0))


def area_resize_boxes(
    table: torch.Tensor, image_index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
    height: torch.Tensor, width: torch.Tensor, size: int, chunk: int = 4096,
) -> torch.Tensor:
    """Each box resized to ``size`` x ``size`` by area averaging, all boxes at once, from ``summed_area_table``.

    Box k is rows ``top[k]:top[k]+height[k]``, columns ``left[k]:left[k]+width[k]`` (0-based, inside the image,
    non-empty) of image ``image_index[k]``; the result (K, C, size, size), float32, equals
    ``interpolate(crop, size, mode="area")`` of the crop as (1, C, h, w).
    """
    outputs = [table.new_zeros((0, table.shape[3], size, size), dtype=torch.float32)]
    for start in range(0, len(image_index), chunk):
        rows = slice(start, start + chunk)
        r0, r1 = _bins(top[rows], height[rows], size)
        c0, c1 = _bins(left[rows], width[rows], size)
        b = image_index[rows][:, None, None]
        r0, r1, c0, c1 = r0[:, :, None], r1[:, :, None], c0[:, None, :], c1[:, None, :]
        sums = table[b, r1, c1] - table[b, r0, c1] - table[b, r1, c0] + table[b, r0, c0]  # (k, size, size, C)
        area = ((r1 - r0) * (c1 - c0)).unsqueeze(-1)
        outputs.append((sums.to(torch.float32) / area).permute(0, 3, 1, 2))
    return torch.cat(outputs)


def _padded(boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, ...]:
    """facenet-pytorch's ``pad``: truncated boxes clipped to the image, as 0-based top, left, height, width."""
    corners = boxes[:, :4].trunc().long()
    x0, y0 = corners[:, 0].clamp(min=1), corners[:, 1].clamp(min=1)
    x1, y1 = corners[:, 2].clamp(max=width), corners[:, 3].clamp(max=height)
    return y0 - 1, x0 - 1, y1 - y0 + 1, x1 - x0 + 1


def _refine(
    table: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor, net: torch.nn.Module, size: int,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Runs a refinement net (R-Net at 24 px, O-Net at 48 px) on every box's crop; boxes with empty crops go."""
    top, left, height, width = _padded(boxes, table.shape[2] - 1, table.shape[1] - 1)
    keep = (height > 0) & (width > 0)
    boxes, image_index = boxes[keep], image_index[keep]
    crops = area_resize_boxes(table, image_index, top[keep], left[keep], height[keep], width[keep], size)
    crops = ((crops - _NORMALISE_MEAN) * _NORMALISE_SCALE).to(next(net.parameters()).dtype)
    # Batches of 512 as facenet-pytorch does, to bound the net's memory.
    outputs = [net(crops[i:i + 512]) for i in range(0, len(crops), 512)]
    return boxes, image_index, tuple(torch.cat(parts) for parts in zip(*outputs))


@torch.no_grad()
def detect_faces(images: torch.Tensor, mtcnn) -> list[tuple[np.ndarray, np.ndarray]]:
    """Face boxes and probabilities of a batch of same-sized 8-bit RGB images (N, H, W, 3) with ``mtcnn``'s nets.

    Args:
        images: uint8 tensor, any device; moved to ``mtcnn.device``.
        mtcnn: a ``facenet_pytorch.MTCNN`` (its P-, R- and O-Net, ``min_face_size``, ``thresholds``, ``factor``).

    Returns:
        Per image: boxes (n, 4) as x0, y0, x1, y1 in pixels, and probabilities (n,); n may be 0, and is 0 for
        images whose shorter side is below ``mtcnn.min_face_size``.
    """
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, generateBoundingBox, rerec

    dtype = next(mtcnn.pnet.parameters()).dtype
    images = images.to(mtcnn.device)
    batch = images.permute(0, 3, 1, 2).to(dtype)
    table = summed_area_table(images)  # one per batch, read by stages 2 and 3
    n_images, (height, width) = len(batch), batch.shape[2:4]

    # Stage 1: P-Net over the scale pyramid, NMS per scale and image, then per image.
    scale = 12.0 / mtcnn.min_face_size
    shortest = min(height, width) * scale
    candidates, owners = [], []
    while shortest >= 12:
        resized = torch.nn.functional.interpolate(batch, size=(int(height * scale + 1), int(width * scale + 1)),
                                                  mode="area")
        regression, probabilities = mtcnn.pnet((resized - _NORMALISE_MEAN) * _NORMALISE_SCALE)
        found, found_owners = generateBoundingBox(regression, probabilities[:, 1], scale, mtcnn.thresholds[0])
        pick = batched_nms(found[:, :4], found[:, 4], found_owners, 0.5)
        candidates.append(found[pick])
        owners.append(found_owners[pick])
        scale, shortest = scale * mtcnn.factor, shortest * mtcnn.factor
    if not candidates:  # no scale fits: a side below min_face_size holds no face (facenet-pytorch raises here)
        return [(np.zeros((0, 4)), np.zeros(0)) for _ in range(n_images)]
    boxes, owners = torch.cat(candidates), torch.cat(owners)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
    boxes, owners = boxes[pick], owners[pick]
    box_width, box_height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * box_width, boxes[:, 1] + boxes[:, 6] * box_height,
                         boxes[:, 2] + boxes[:, 7] * box_width, boxes[:, 3] + boxes[:, 8] * box_height,
                         boxes[:, 4]], dim=1)
    boxes = rerec(boxes)

    # Stage 2: R-Net on 24 px crops of every candidate.
    if len(boxes):
        boxes, owners, (regression, scores) = _refine(table, boxes, owners, mtcnn.rnet, 24)
        passed = scores[:, 1] > mtcnn.thresholds[1]
        boxes = torch.cat([boxes[passed, :4], scores[passed, 1:2]], dim=1)
        owners, regression = owners[passed], regression[passed]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
        boxes = rerec(bbreg(boxes[pick], regression[pick]))
        owners = owners[pick]

    # Stage 3: O-Net on 48 px crops; NMS by the smaller box's area, as facenet-pytorch does.
    if len(boxes):
        boxes, owners, (regression, _landmarks, scores) = _refine(table, boxes, owners, mtcnn.onet, 48)
        passed = scores[:, 1] > mtcnn.thresholds[2]
        boxes = bbreg(torch.cat([boxes[passed, :4], scores[passed, 1:2]], dim=1), regression[passed])
        owners = owners[passed]
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], owners, 0.7, "Min")
        boxes, owners = boxes[pick], owners[pick]

    boxes, owners = boxes.cpu().numpy().astype(np.float64), owners.cpu().numpy()
    results = []
    for image in range(n_images):
        mine = boxes[owners == image]
        order = np.argsort(-mine[:, 4], kind="stable")  # most probable first, as MTCNN(select_largest=False)
        results.append((mine[order, :4], mine[order, 4]))
    return results
