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

from deepfake_kedro.data_index import ImageTree, build_image_index, decode_square, usable
from deepfake_kedro.datasets import DemoImageTreeDataset
from deepfake_kedro.image_cache import ImageStackPlan, read_image_stack, write_image_stack
from deepfake_kedro.models import create_model
from deepfake_kedro.training import IMAGENET_MEAN, IMAGENET_STD, Normalizer, batch_loader, select_device, train_step

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
        rows = np.arange(len(stack))
        normalizer = Normalizer(IMAGENET_MEAN, IMAGENET_STD)
        preloaded = normalizer(torch.from_numpy(np.asarray(stack.array)), device)
        preloaded_labels = torch.from_numpy(labels)
        print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.size}px, "
              f"num_workers {args.num_workers}")
        print(f"{'model':<12} {'loader img/s':>13} {'preloaded img/s':>16} {'ratio':>6}")
        for name in args.models:
            torch.manual_seed(0)
            model = create_model(name, pretrained=False).to(device)
            if device.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
            loader = batch_loader(stack.array, rows, labels, args.batch_size, shuffle=True, seed=0,
                                  num_workers=args.num_workers, pin_memory=device.type == "cuda")
            real = throughput(model, ((partial(normalizer, p, device), y) for p, y in cycle(loader)), device, args.steps)
            generator = torch.Generator().manual_seed(0)

            def preloaded_batches():
                while True:
                    index = torch.randint(len(preloaded), (args.batch_size,), generator=generator)
                    yield (lambda i=index: preloaded[i.to(preloaded.device)]), preloaded_labels[index]

            ideal = throughput(model, preloaded_batches(), device, args.steps)
            print(f"{name:<12} {real:>13.1f} {ideal:>16.1f} {real / ideal:>6.2f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
