from io import BytesIO

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from deepfake_kedro.data_index import ImageTree, square_resize
from deepfake_kedro.face_crops import FaceDetector, crop_box, face_box_in_view, face_boxes_in_view, face_crop
from deepfake_kedro.image_cache import TablePlan, write_table


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> ImageTree:
    root = tmp_path_factory.mktemp("faces")
    (root / "real").mkdir()
    Image.fromarray(data.astronaut()).save(root / "real" / "astronaut.png")
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "real" / "noise.png")
    return ImageTree(root)


@pytest.fixture(scope="module")
def detections(tree):
    return dict(zip(["astronaut", "noise"], FaceDetector(tree, device="cpu")(["real/astronaut.png", "real/noise.png"])))


def test_mtcnn_finds_the_astronaut_and_flags_noise(detections):
    face = detections["astronaut"]
    assert face["detected"] and face["confidence"] > 0.99
    # Eileen Collins' face sits around x 180-270, y 60-170 in skimage's 512 px astronaut.
    assert 150 < face["x0"] < 200 and 240 < face["x1"] < 290 and 40 < face["y0"] < 90 and 150 < face["y1"] < 200
    assert not detections["noise"]["detected"]


def test_crop_contains_the_box_enlarged_by_the_margin(detections):
    face = detections["astronaut"]
    box = (face["x0"], face["y0"], face["x1"], face["y1"])
    left, top, right, bottom = crop_box(box, 0.6)
    side = max(box[2] - box[0], box[3] - box[1])
    assert right - left == pytest.approx(1.6 * side, abs=1)
    assert left < box[0] and top < box[1] and right > box[2] and bottom > box[3]
    # The face box's centre stays the crop's centre.
    assert (left + right) / 2 == pytest.approx((box[0] + box[2]) / 2, abs=1)
    astronaut = Image.fromarray(data.astronaut())
    expected = np.asarray(astronaut.crop((left, top, right, bottom)).resize((64, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(face_crop(astronaut, face, 0.6, 64), expected)


def test_no_face_falls_back_to_the_square_crop(tree, detections):
    with Image.open(BytesIO(tree.read_bytes("real/noise.png"))) as image:
        assert np.array_equal(face_crop(image, detections["noise"], 0.6, 32), square_resize(image, 32))


def test_second_detection_run_processes_zero_images(tmp_path, tree):
    calls = []

    def counting_detector(keys):
        calls.extend(keys)
        return [{"detected": False, "confidence": 0.0} for _ in keys]

    keys = ["real/astronaut.png", "real/noise.png"]
    plan = TablePlan(keys, [tree.signature(k) for k in keys], counting_detector, batch_size=1)
    assert write_table(plan, tmp_path / "faces.parquet") == 2
    assert write_table(plan, tmp_path / "faces.parquet") == 0
    assert calls == keys


def test_16_bit_image_is_face_cropped(tmp_path):
    # The astronaut as a 16-bit grey PNG (mode I;16): a plain convert("RGB") turns it all white.
    grey = np.asarray(Image.fromarray(data.astronaut()).convert("L"), dtype=np.uint16) * 257
    (tmp_path / "real").mkdir()
    Image.fromarray(grey).save(tmp_path / "real/deep16.png")
    tree = ImageTree(tmp_path)
    with Image.open(tmp_path / "real/deep16.png") as image:
        assert image.mode.startswith("I")
    detector = FaceDetector(tree, device="cpu")
    opened = np.asarray(detector._open("real/deep16.png"))
    assert opened.dtype == np.uint8 and opened.std() > 30  # a picture, not a white sheet
    face = detector(["real/deep16.png"])[0]
    assert face["detected"] and 150 < face["x0"] < 200 and 240 < face["x1"] < 290
    with Image.open(tmp_path / "real/deep16.png") as image:
        crop = face_crop(image, face, 0.6, 32)
    assert crop.shape == (32, 32, 3) and crop.std() > 10


def _painted(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """A black image with the face box painted white, so the box can be found again in any crop of it."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 255
    return Image.fromarray(pixels)


def _white_extent(pixels: np.ndarray) -> tuple[float, float, float, float]:
    """The white region's bounding box as fractions of the square's side."""
    ys, xs = np.nonzero(pixels[..., 0] > 127)
    side = pixels.shape[0]
    return xs.min() / side, ys.min() / side, (xs.max() + 1) / side, (ys.max() + 1) / side


@pytest.mark.parametrize("face_crop_mode", [False, True])
def test_face_box_in_view_is_where_the_face_lands_in_what_the_model_saw(face_crop_mode):
    # A wide image with the face off-centre: the centre square cuts the frame, the face crop re-centres it.
    width, height, box, margin, size = 300, 200, (130, 40, 190, 120), 0.3, 64
    image = _painted(width, height, box)
    face = {"detected": True, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3], "width": width,
            "height": height}
    seen = face_crop(image, face, margin, size) if face_crop_mode else square_resize(image, size)
    expected = face_box_in_view(face, face_crop_mode, margin)
    assert expected == pytest.approx(_white_extent(seen), abs=1.5 / size)


def test_face_box_in_view_cuts_the_box_to_the_square_and_is_none_without_a_face():
    # The centre square of a 300 x 200 image spans x 50-250; a face at x 0-80 is cut at the square's left edge.
    face = {"detected": True, "x0": 0.0, "y0": 50.0, "x1": 80.0, "y1": 150.0, "width": 300, "height": 200}
    assert face_box_in_view(face, False, 0.3) == pytest.approx((0.0, 0.25, 0.15, 0.75))
    assert face_box_in_view({**face, "x1": 40.0}, False, 0.3) is None  # wholly outside the square
    assert face_box_in_view({**face, "detected": False}, True, 0.3) is None
    boxes = face_boxes_in_view(pd.DataFrame([{"key": "a.jpg", **face}]), ["a.jpg", "b.jpg"], False, 0.3)
    assert boxes["a.jpg"] == pytest.approx((0.0, 0.25, 0.15, 0.75)) and boxes["b.jpg"] is None


@pytest.mark.parametrize(("device", "requested", "expected"), [
    ("cpu", None, 16), ("cuda", None, 128), ("cuda", 8, 8), ("cpu", 48, 48)])
def test_detection_batch_size_defaults_to_the_devices_and_follows_a_configured_one(device, requested, expected):
    # No GPU needed: the detector loads MTCNN only when it first detects.
    assert FaceDetector(None, device=device).batch_size(requested) == expected


def test_a_sideways_stored_photo_is_detected_and_cropped_upright(tmp_path, detections):
    from deepfake_kedro.face_crops import render_face_crop
    from tests.core.test_data_index import save_sideways

    (tmp_path / "real").mkdir()
    save_sideways(Image.fromarray(data.astronaut()), tmp_path / "real" / "phone.png")
    tree = ImageTree(tmp_path)
    face = FaceDetector(tree, device="cpu")(["real/phone.png"])[0]
    # MTCNN finds no upright face in a face lying on its side: it must be shown the picture as viewers see it.
    upright = detections["astronaut"]
    assert face["detected"]
    assert [face[k] for k in ("x0", "y0", "x1", "y1")] == pytest.approx([upright[k] for k in ("x0", "y0", "x1", "y1")])
    expected = face_crop(Image.fromarray(data.astronaut()), upright, 0.6, 32)
    np.testing.assert_array_equal(render_face_crop(tree, {"real/phone.png": face}, "real/phone.png", 0.6, 32), expected)
