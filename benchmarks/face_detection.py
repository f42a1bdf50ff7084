"""MTCNN face detection, images per second, on 512 px face photos (docs/benchmarks.md; goal on a GPU: >= 300).

Three figures on the same images, device and batch size:
  facenet-pytorch  ``MTCNN.detect`` on decoded images (its per-box crop loops; the baseline)
  batched          ``mtcnn_batch.detect_faces`` on decoded images (the detector alone)
  pipeline         ``FaceDetector`` as the preprocessing node runs it: JPEG files read and decoded on
                   threads, then ``detect_faces``

The images are skimage's astronaut (512 px), shifted, scaled, rotated and flipped at random, saved as JPEG.

    python benchmarks/face_detection.py                                     # small CPU run
    python benchmarks/face_detection.py --images 4096 --batch 128 --device cuda --csv $OUT/face_detection.csv
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from deepfake_kedro.data_index import ImageTree
from deepfake_kedro.face_crops import FaceDetector
from deepfake_kedro.mtcnn_batch import detect_faces
from deepfake_kedro.training import select_device

VARIANTS = 64  # distinct photos; the tree repeats them to the requested count


def face_photos(count: int, size: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs of the astronaut at ``size`` px, each moved, scaled, rotated and maybe flipped."""
    rng = np.random.default_rng(seed)
    astronaut = Image.fromarray(data.astronaut())
    photos = []
    for _ in range(count):
        zoom = rng.uniform(0.8, 1.0)
        side = int(512 * zoom)
        left, top = rng.integers(0, 512 - side + 1, size=2)
        image = astronaut.crop((left, top, left + side, top + side)).rotate(rng.uniform(-15, 15))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buffer = BytesIO()
        image.resize((size, size), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos


def write_tree(root: Path, photos: list[bytes], count: int) -> list[str]:
    (root / "real").mkdir(parents=True)
    keys = [f"real/{i:06d}.jpg" for i in range(count)]
    for i, key in enumerate(keys):
        (root / key).write_bytes(photos[i % len(photos)])
    return keys


def timed(run, batches: list, warmup: int = 1) -> float:
    """Images per second of ``run`` over ``batches``, after ``warmup`` untimed batches (weights, cuDNN)."""
    for batch in batches[:warmup]:
        run(batch)
    synchronize()
    started, seen = time.perf_counter(), 0
    for batch in batches:
        run(batch)
        seen += len(batch)
    synchronize()
    return seen / (time.perf_counter() - started)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--decode-workers", type=int, default=None, help="threads decoding JPEGs (default: all cores)")
    parser.add_argument("--baseline-images", type=int, default=None,
                        help="images for the (slower) facenet-pytorch baseline (default: all; 0 skips it)")
    parser.add_argument("--csv", type=Path, help="also write the figures here")
    args = parser.parse_args()

    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    photos = face_photos(min(VARIANTS, args.images), args.size)
    detector = FaceDetector(None, device=str(device), decode_workers=args.decode_workers)
    decoded = [Image.open(BytesIO(photos[i % len(photos)])).convert("RGB") for i in range(args.images)]
    image_batches = [decoded[i:i + args.batch] for i in range(0, len(decoded), args.batch)]
    tensor_batches = [torch.from_numpy(np.stack([np.asarray(image) for image in batch])) for batch in image_batches]

    rows = []
    baseline = len(decoded) if args.baseline_images is None else args.baseline_images
    if baseline:
        baseline_batches = image_batches[: -(-baseline // args.batch)]
        rows.append(("facenet-pytorch MTCNN.detect", timed(detector.mtcnn.detect, baseline_batches)))
    rows.append(("batched detect_faces", timed(lambda batch: detect_faces(batch, detector.mtcnn), tensor_batches)))
    with tempfile.TemporaryDirectory() as folder:
        keys = write_tree(Path(folder), photos, args.images)
        detector.tree = ImageTree(Path(folder))
        key_batches = [keys[i:i + args.batch] for i in range(0, len(keys), args.batch)]
        found = sum(row["detected"] for row in detector(keys[: args.batch]))
        rows.append(("pipeline FaceDetector (decode + detect)", timed(detector, key_batches)))

    print(f"device {name}, {args.images} images of {args.size} px, batch {args.batch}, "
          f"{detector.decode_workers} decode threads; faces found in the first batch: {found} / {len(key_batches[0])}")
    print("| detector | images/s |")
    print("|---|---|")
    for label, rate in rows:
        print(f"| {label} | {rate:.1f} |")
    if args.csv:
        with args.csv.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["device", "image_size", "batch", "images", "detector", "images_per_s"])
            writer.writerows([name, args.size, args.batch, args.images, label, f"{rate:.1f}"] for label, rate in rows)


if __name__ == "__main__":
    main()
