"""Training-time augmentation from the ``augment`` dict, built from torchvision transforms v2.

Applied per image inside the data loader (so workers overlap it with training), seeded per batch
so a run is reproducible whatever the number of workers. Evaluation never augments.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torchvision.transforms import v2

from deepfake_kedro.config import AugmentConfig


def build_augmentation(config: AugmentConfig) -> v2.Compose:
    """The transform for one float CHW image in [0, 1], in the order of the experiments table."""
    steps: list[v2.Transform] = []
    if config.hflip_p > 0:
        steps.append(v2.RandomHorizontalFlip(config.hflip_p))
    if config.rotation_degrees > 0:
        steps.append(v2.RandomRotation(config.rotation_degrees))
    if any((config.brightness, config.contrast, config.saturation, config.hue)):
        steps.append(v2.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue))
    if config.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(config.grayscale_p))
    if config.blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.5))], p=config.blur_p))
    if config.erase_p > 0:
        steps.append(v2.RandomErasing(p=config.erase_p, scale=(0.02, 0.15)))
    if config.noise_p > 0 and config.noise_std > 0:
        steps.append(v2.RandomApply([v2.GaussianNoise(sigma=config.noise_std, clip=True)], p=config.noise_p))
    # Every probability at 0 (or `augment: {}`) augments nothing; Compose refuses an empty list.
    return v2.Compose(steps) if steps else v2.Identity()


class BatchAugmenter:
    """Augments a uint8 NHWC batch image by image, seeded by the batch's content positions."""

    def __init__(self, config: AugmentConfig, seed: int):
        self.transform = build_augmentation(config)
        self.seed = seed

    def __call__(self, pixels: np.ndarray, positions: np.ndarray) -> np.ndarray:
        batch_seed = zlib.crc32(np.asarray(positions, dtype=np.int64).tobytes(), self.seed & 0xFFFFFFFF)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed)
            augmented = torch.stack([self.transform(image) for image in images])
        return augmented.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
