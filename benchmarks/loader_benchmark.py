"""Training throughput: the real data path (memory-mapped cache -> DataLoader -> normalise)
against the same model fed preloaded, already-normalised tensors.

The ratio loader / preloaded shows whether data loading starves the model (goal: >= 0.9).

    python benchmarks/loader_benchmark.py                       # synthetic demo faces, CPU
    python benchmarks/loader_benchmark.py --data-root ../shared/data/faces140k --sources real=real fake=fake
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepfake_kedro.augmentation import BatchAugmenter
from deepfake_kedro.config import AugmentConfig
from deepfake_kedro.data_index import ImageTree, build_image_index, decode_square, usable
from deepfake_kedro.datasets import DemoImageTreeDataset
from deepfake_kedro.face_crops import FaceDetector, render_face_crop
from deepfake_kedro.image_cache import ImageStackPlan, read_image_stack, write_image_stack
from deepfake_kedro.models import create_model
from deepfake_kedro.training import IMAGENET_MEAN, IMAGENET_STD, Normalizer, batch_loader, select_device, train_step

AUG_DICT = {"hflip_p": 0.5, "rotation_degrees": 10, "brightness": 0.2, "contrast": 0.2, "saturation": 0.1, "hue": 0.02,
            "grayscale_p": 0.1, "blur_p": 0.1, "erase_p": 0.2, "noise_p": 0.3, "noise_std": 0.04}
DEMO_SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}


def build_cache(tree: ImageTree, sources: dict[str, str], size: int, limit: int, workdir: Path):
    images = usable(build_image_index(tree, sources)).head(limit)
    keys = images["path"].tolist()
    plan = ImageStackPlan(keys, [tree.signature(k) for k in keys], size, partial(decode_square, tree, size=size))
    started = time.perf_counter()
    write_image_stack(plan, workdir / f"square_{size}")
    print(f"cache: {len(keys)} images at {size}px rendered in {time.perf_counter() - started:.1f}s "
          f"({len(keys) / (time.perf_counter() - started):.0f} img/s)")
    return read_image_stack(workdir / f"square_{size}"), images["label"].to_numpy(np.float32)


def face_crop_rate(tree: ImageTree, keys: list[str], size: int, device: str, batch_size: int = 16) -> float:
    """MTCNN detection plus the enlarged square crop, images per second."""
    detector = FaceDetector(tree, device=device)
    detector(keys[:2])  # load the weights outside the timing
    started = time.perf_counter()
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        faces = dict(zip(chunk, detector(chunk)))
        for key in chunk:
            render_face_crop(tree, faces, key, margin=0.6, size=size)
    return len(keys) / (time.perf_counter() - started)


def throughput(model: nn.Module, batches, device: torch.device, steps: int, warmup: int = 2) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    seen, started = 0, None
    for step, (inputs, labels) in enumerate(batches):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, seen = time.perf_counter(), 0
        train_step(model, inputs(), labels.to(device, non_blocking=True), optimizer, loss_fn, device)
        seen += len(labels)
        if step + 1 >= steps + warmup:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def cycle(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, help="image tree (default: generate the synthetic demo)")
    parser.add_argument("--sources", nargs="*", default=None, help="folder=real|fake pairs")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=["simple_cnn", "resnet18"])
    parser.add_argument("--augmented", nargs="*", default=["resnet18"], help="models also run with the aug dict")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--face-crops", type=int, default=64, help="images to time MTCNN face crops on (0: skip)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    device = select_device(args.device)
    sources = dict(s.split("=") for s in args.sources) if args.sources else DEMO_SOURCES
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        if args.data_root:
            tree = ImageTree(args.data_root)
        else:
            tree = DemoImageTreeDataset(str(workdir / "demo"), {"n_identities": max(args.images // 4, 50)}).load()
        stack, labels = build_cache(tree, sources, args.size, args.images, workdir)
        if args.face_crops:
            rate = face_crop_rate(tree, stack.keys[: args.face_crops], args.size, str(device))
            print(f"face crops (MTCNN + crop, {device}): {rate:.1f} images/s "
                  f"over {min(args.face_crops, len(stack))} images")
        rows = np.arange(len(stack))
        normalizer = Normalizer(IMAGENET_MEAN, IMAGENET_STD)
        preloaded = normalizer(torch.from_numpy(np.array(stack.array)), device)
        preloaded_labels = torch.from_numpy(labels)
        print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.size}px, "
              f"num_workers {args.num_workers}")
        print(f"{'model':<16} {'loader img/s':>13} {'preloaded img/s':>16} {'ratio':>6}")
        augmenter = BatchAugmenter(AugmentConfig.model_validate(AUG_DICT), seed=0)
        runs = [(name, None) for name in args.models] + [(f"{name}+aug", augmenter) for name in args.augmented]
        for label, augment in runs:
            torch.manual_seed(0)
            model = create_model(label.split("+")[0], pretrained=False).to(device)
            if device.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
            loader = batch_loader(stack.array, rows, labels, args.batch_size, shuffle=True, seed=0,
                                  num_workers=args.num_workers, pin_memory=device.type == "cuda", augment=augment)
            generator = torch.Generator().manual_seed(0)

            def preloaded_batches(generator=generator):
                while True:
                    index = torch.randint(len(preloaded), (args.batch_size,), generator=generator)
                    yield (lambda i=index: preloaded[i.to(preloaded.device)]), preloaded_labels[index]

            def loader_batches(loader=loader):
                for pixels, y in cycle(loader):
                    yield partial(normalizer, pixels, device), y

            # Interleaved repeats, best of each: CPU timings drift, and the order must not favour either path.
            real, ideal = 0.0, 0.0
            for _ in range(args.repeats):
                ideal = max(ideal, throughput(model, preloaded_batches(), device, args.steps))
                real = max(real, throughput(model, loader_batches(), device, args.steps))
            print(f"{label:<16} {real:>13.1f} {ideal:>16.1f} {real / ideal:>6.2f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
