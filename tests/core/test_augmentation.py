import numpy as np
import torch

from deepfake_kedro.augmentation import BatchAugmenter
from deepfake_kedro.config import AugmentConfig
from deepfake_kedro.training import batch_loader

AUG_DICT = AugmentConfig(hflip_p=0.5, rotation_degrees=10, brightness=0.2, contrast=0.2, saturation=0.1, hue=0.02,
                         grayscale_p=0.1, blur_p=0.1, erase_p=0.2, noise_p=0.3, noise_std=0.04)


def cache(n: int = 24, size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def first_batches(images, augment, seed=3):
    rows = np.arange(len(images))
    loader = batch_loader(images, rows, np.zeros(len(rows)), 8, shuffle=True, seed=seed, augment=augment)
    return [(pixels.numpy().copy(), labels.numpy()) for pixels, labels in loader]


def test_without_augmentation_training_batches_equal_the_cached_images():
    images = cache()
    for pixels, _ in first_batches(images, None):
        matches = [np.flatnonzero((images == image).all(axis=(1, 2, 3))) for image in pixels]
        assert all(len(m) == 1 for m in matches)


def test_augmentation_changes_batches_and_is_reproducible_under_the_seed():
    images = cache()
    plain = first_batches(images, None)
    one = first_batches(images, BatchAugmenter(AUG_DICT, seed=11))
    two = first_batches(images, BatchAugmenter(AUG_DICT, seed=11))
    other = first_batches(images, BatchAugmenter(AUG_DICT, seed=12))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(one, two))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(one, plain))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(one, other))
    assert one[0][0].dtype == np.uint8 and one[0][0].shape == plain[0][0].shape


def test_flip_only_augmentation_mirrors_images():
    images = cache(8)
    augmenter = BatchAugmenter(AugmentConfig(hflip_p=1.0), seed=0)
    assert np.array_equal(augmenter(images, np.arange(8)), images[:, :, ::-1, :])


def test_augmentation_does_not_touch_the_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    BatchAugmenter(AUG_DICT, seed=1)(cache(4), np.arange(4))
    assert torch.equal(torch.rand(3), expected)
