"""Training images/s of the pipeline's own loop against the device's limit, per backbone (docs/benchmarks.md).

pipeline: ``training._epochs`` as ``train_fold`` runs it: a memory-mapped uint8 cache -> DataLoader (workers,
pinned memory) -> normalise on the device -> bf16 step, one host sync per epoch; the second epoch is timed.
limit: the same model and step on random tensors already on the device, timed like timm's
``benchmark.py --bench train`` and /work/shared/tools/gpu_limit.py (warm-up, then timed steps).

    python benchmarks/train_throughput.py                                   # small CPU smoke run
    python benchmarks/train_throughput.py --size 224 --batch 64 --images 8192 --workers 8 --models resnet18,resnet50
    python benchmarks/train_throughput.py ... --compile                      # the same with torch.compile
    python benchmarks/train_throughput.py ... --augment                      # with phase 2's augmentation dict
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from deepfake_kedro.augmentation import BatchAugmenter
from deepfake_kedro.config import AugmentConfig
from deepfake_kedro.models import create_model
from deepfake_kedro.training import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalizer,
    _epochs,
    batch_loader,
    select_device,
    train_step,
)


def synthetic_cache(folder: Path, images: int, size: int) -> np.ndarray:
    """A memory-mapped uint8 stack like the image cache (random pixels: throughput does not look at them)."""
    array = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(images, size, size, 3))
    rng = np.random.default_rng(0)
    for start in range(0, images, 1024):
        stop = min(start + 1024, images)
        array[start:stop] = rng.integers(0, 256, (stop - start, size, size, 3), dtype=np.uint8)
    array.flush()
    return np.load(folder / "images.npy", mmap_mode="r")


def prepare(model: torch.nn.Module, device: torch.device, compile_model: bool) -> torch.nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile_model else model


PHASE2 = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_phase2.yml"


def study_augmenter() -> BatchAugmenter:
    """The augmentation dict phase 2 trains with (p2d_resnet18_aug), as the DataLoader workers apply it."""
    settings = yaml.safe_load(PHASE2.read_text())["phase2"]["experiments"]["p2d_resnet18_aug"]["augment"]
    return BatchAugmenter(AugmentConfig.model_validate(settings), seed=0)


def pipeline_rate(backbone: str, cache: np.ndarray, args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of the second epoch through the pipeline's loader and epoch loop."""
    torch.manual_seed(0)
    model = prepare(create_model(backbone, False, "medium", 0.0), device, args.compile)
    labels = (np.arange(len(cache)) % 2).astype(np.float32)
    loader = batch_loader(cache, np.arange(len(cache)), labels, args.batch, shuffle=True, seed=0,
                          num_workers=args.workers, pin_memory=device.type == "cuda",
                          augment=study_augmenter() if args.augment else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rates = [rate for *_, rate in _epochs(model, loader, Normalizer(IMAGENET_MEAN, IMAGENET_STD), device,
                                          optimizer, epochs=2)]
    return rates[-1]  # the first epoch pays for worker start-up, cuDNN autotuning and compilation


def limit_rate(backbone: str, args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of the same step on tensors already on the device (no loader, no host sync while timed)."""
    torch.manual_seed(0)
    model = prepare(create_model(backbone, False, "medium", 0.0), device, args.compile)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (args.batch,), device=device).float()
    optimizer, loss_fn = torch.optim.AdamW(model.parameters(), lr=1e-4), torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(args.warmup):
        train_step(model, x, y, optimizer, loss_fn, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, x, y, optimizer, loss_fn, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="simple_cnn,resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=512, help="images per epoch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (the `compile` flag)")
    parser.add_argument("--augment", action="store_true", help="phase 2's augmentation dict, in the loader's workers")
    parser.add_argument("--device", default=None)
    parser.add_argument("--csv", type=Path, help="also write the figures here")
    args = parser.parse_args()
    device = select_device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}, {args.size} px, batch {args.batch}, {args.images} images/epoch, "
          f"{args.workers} workers, compile={args.compile}, augment={args.augment}")
    print("| model | pipeline img/s | limit img/s | pipeline / limit |")
    print("|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        cache = synthetic_cache(Path(folder), args.images, args.size)
        for backbone in args.models.split(","):
            ours, limit = pipeline_rate(backbone, cache, args, device), limit_rate(backbone, args, device)
            print(f"| {backbone} | {ours:.0f} | {limit:.0f} | {ours / limit:.2f} |", flush=True)
            rows.append([name, backbone, args.size, args.batch, args.workers, args.compile, args.augment, f"{ours:.1f}",
                         f"{limit:.1f}", f"{ours / limit:.3f}"])
            if args.csv:  # written after each model, so a run stopped at its time limit keeps what it measured
                with args.csv.open("w", newline="") as out:
                    writer = csv.writer(out)
                    writer.writerow(["device", "backbone", "image_size", "batch", "workers", "compile", "augment",
                                     "pipeline_images_per_s", "limit_images_per_s", "pipeline_over_limit"])
                    writer.writerows(rows)


if __name__ == "__main__":
    main()
