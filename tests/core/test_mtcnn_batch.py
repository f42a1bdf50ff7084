"""The batched MTCNN stages against facenet-pytorch's own ``detect_face``, on real faces."""

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from PIL import Image
from skimage import data
from torch.nn.functional import interpolate

from deepfake_kedro.mtcnn_batch import area_resize_boxes, detect_faces, summed_area_table
from tests.conftest import faces140k_root


def test_area_resize_of_every_box_equals_torch_area_interpolation():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 60, 70, 3), dtype=np.uint8))
    # Shrunk, enlarged (bins overlap), one pixel, whole image, a box on the last row and column.
    boxes = [(0, 0, 0, 60, 70), (1, 5, 3, 13, 40), (2, 10, 7, 50, 5), (1, 59, 0, 1, 70), (0, 30, 69, 30, 1),
             (2, 0, 0, 1, 1), (1, 17, 11, 24, 24), (0, 2, 9, 48, 48)]
    index, top, left, height, width = (torch.tensor(column) for column in zip(*boxes))
    for size in (24, 48):
        ours = area_resize_boxes(summed_area_table(images), index, top, left, height, width, size, chunk=3)
        chw = images.permute(0, 3, 1, 2).float()
        expected = torch.cat([interpolate(chw[b:b + 1, :, t:t + h, x:x + w], size=(size, size), mode="area")
                              for b, t, x, h, w in boxes])
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)


def _face_photos() -> list[np.ndarray]:
    astronaut = Image.fromarray(data.astronaut())
    photos = [astronaut, astronaut.rotate(12), astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
              astronaut.resize((256, 256)).resize((512, 512))]
    root = faces140k_root()
    if root is not None:  # 256 px real and GAN faces, resized to the astronaut's size to share a batch
        for path in sorted((root / "real").glob("*.jpg"))[:3] + sorted((root / "fake").glob("*.jpg"))[:3]:
            photos.append(Image.open(path).convert("RGB").resize((512, 512)))
    noise = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return [np.asarray(photo) for photo in photos] + [noise]


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return MTCNN(keep_all=True, select_largest=False, post_process=False, device="cpu")


def test_batched_detection_finds_the_same_faces_as_facenet_pytorch(mtcnn):
    photos = _face_photos()
    reference_boxes, reference_probabilities = mtcnn.detect([Image.fromarray(p) for p in photos])
    ours = detect_faces(torch.from_numpy(np.stack(photos)), mtcnn)
    assert len(ours) == len(photos)
    found = 0
    for boxes_ref, probabilities_ref, (boxes, probabilities) in zip(reference_boxes, reference_probabilities, ours):
        if boxes_ref is None:  # facenet-pytorch's "no face"
            assert len(boxes) == 0
            continue
        boxes_ref = np.asarray(np.stack(list(boxes_ref)), dtype=np.float64)
        probabilities_ref = np.asarray(list(probabilities_ref), dtype=np.float64)
        assert boxes.shape == boxes_ref.shape
        np.testing.assert_allclose(boxes, boxes_ref, atol=1e-3)
        np.testing.assert_allclose(probabilities, probabilities_ref, atol=1e-5)
        found += len(boxes)
    assert found >= 4  # every astronaut variant at least; the noise image has none
    assert len(ours[-1][0]) == 0


def test_a_batch_without_candidates_returns_empty_results(mtcnn):
    flat = torch.zeros((2, 64, 64, 3), dtype=torch.uint8)
    assert [len(boxes) for boxes, _ in detect_faces(flat, mtcnn)] == [0, 0]


def test_images_smaller_than_the_smallest_face_give_no_detections(mtcnn):
    # No scale of the pyramid fits below min_face_size (20 px); facenet-pytorch itself raises here.
    astronaut = Image.fromarray(data.astronaut())
    for size in ((16, 16), (40, 19)):
        faces = torch.from_numpy(np.stack([np.asarray(astronaut.resize(size))] * 2))
        found = detect_faces(faces, mtcnn)
        assert [(boxes.shape, probabilities.shape) for boxes, probabilities in found] == [((0, 4), (0,))] * 2
