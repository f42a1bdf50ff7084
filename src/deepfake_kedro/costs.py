"""What a backbone costs: parameters, GFLOPs from torch's own flop counter, inference throughput."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepfake_kedro.models import count_parameters, create_model
from deepfake_kedro.selection import model_name
from deepfake_kedro.training import select_device


@lru_cache(maxsize=64)
def model_cost(backbone: str, image_size: int, cnn_preset: str = "medium") -> dict[str, float]:
    """Parameter count and forward GFLOPs of one image at ``image_size``.

    Args:
        backbone: A key of the model registry.
        image_size: Square input side in pixels.
        cnn_preset: SimpleCNN width preset (ignored by timm backbones).

    Returns:
        ``params`` (count), ``params_m`` (millions) and ``gflops`` (1e9 multiply-adds x 2, one image).
    """
    model = create_model(backbone, pretrained=False, cnn_preset=cnn_preset).eval()
    params = count_parameters(model)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, image_size, image_size))
    return {"params": params, "params_m": params / 1e6, "gflops": counter.get_total_flops() / 1e9}


def inference_throughput(
    backbone: str, image_size: int, batch_size: int = 64, device: torch.device | None = None,
    cnn_preset: str = "medium", warmup: int = 2, repeats: int = 5,
) -> dict[str, float | str]:
    """Images per second of a forward pass at ``batch_size``, on ``device`` (bf16 autocast on CUDA).

    Args:
        backbone: A key of the model registry.
        image_size: Square input side in pixels.
        batch_size: Images per forward pass.
        device: Where to run (default: CUDA when present, else CPU).
        cnn_preset: SimpleCNN width preset.
        warmup: Untimed passes first (kernel selection, allocator).
        repeats: Timed passes.

    Returns:
        ``images_per_s``, ``device``, ``device_name`` (the GPU's name, or the CPU's thread count) and ``precision``.
    """
    device = device or select_device()
    model = create_model(backbone, pretrained=False, cnn_preset=cnn_preset).eval().to(device)
    inputs = torch.randn(batch_size, 3, image_size, image_size, device=device)
    use_bf16 = device.type == "cuda"
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        for step in range(warmup + repeats):
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
            model(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return {"images_per_s": batch_size * repeats / elapsed, "device": str(device), "device_name": name,
            "precision": "bf16" if use_bf16 else "fp32"}


def experiment_costs(summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Each experiment's model cost at its own image size beside its mean AUC and interval.

    Args:
        summaries: Experiment name -> metrics summary (``config``: backbone, image_size, cnn_preset).

    Returns:
        One row per experiment: ``experiment``, ``model``, ``image_size``, ``params_m``, ``gflops``,
        ``auc_mean``, ``auc_ci_low``, ``auc_ci_high``.
    """
    rows = []
    for name, summary in summaries.items():
        config, auc = summary["config"], summary["metrics"]["auc"]
        cost = model_cost(config["backbone"], config["image_size"], config["cnn_preset"])
        rows.append({"experiment": name, "model": model_name(config), "image_size": config["image_size"],
                     "params_m": cost["params_m"], "gflops": cost["gflops"], "auc_mean": auc["mean"],
                     "auc_ci_low": auc["ci_low"], "auc_ci_high": auc["ci_high"]})
    return pd.DataFrame(rows)
