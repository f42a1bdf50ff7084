import numpy as np
import pandas as pd
import pytest
import torch

from deepfake_kedro.config import ExperimentConfig
from deepfake_kedro.folds import build_fold_table, select_fold_rows
from deepfake_kedro.training import Normalizer, channel_statistics, train_fold
from tests.core.test_folds import dff_like_images


@pytest.fixture(scope="module")
def study():
    images = dff_like_images(60)
    table = build_fold_table(images, 5, 0.1, seed=1)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 200, (len(table), 16, 16, 3), dtype=np.uint8)
    fake = table["label"].to_numpy() == 1
    pixels[fake, 4:12, 4:12, 0] = 255  # a red square: the "artefact" a model can learn
    return table, pixels


def test_real_norm_uses_only_the_real_training_images_of_the_fold(study):
    table, pixels = study
    rows = select_fold_rows(table, 2, 1.0)
    real_train = rows.train[table["label"].to_numpy()[rows.train] == 0]
    stats = channel_statistics(pixels, real_train, chunk=7)
    direct = pixels[real_train].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(stats.mean, direct.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.std, direct.std(axis=0), rtol=1e-8)
    everything = channel_statistics(pixels, np.arange(len(pixels)))
    assert not np.allclose(stats.mean, everything.mean)


def test_normalizer_matches_the_formula():
    pixels = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    out = Normalizer((0.5, 0.4, 0.3), (0.2, 0.25, 0.1))(pixels, torch.device("cpu"))
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.1]).view(1, 3, 1, 1)
    expected = (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(out, expected, atol=1e-6)


def tiny_config(**overrides) -> ExperimentConfig:
    settings = {"backbone": "simple_cnn", "cnn_preset": "micro", "pretrained": False, "image_size": 16, "epochs": 3,
                "batch_size": 16, "num_workers": 0, "optimizer": {"type": "adamw", "lr": 3e-3, "weight_decay": 0.0},
                "scheduler": {"type": "cosine_annealing", "T_max": 3}}
    return ExperimentConfig.model_validate({**settings, **overrides})


def fold_rows(table, fold=0):
    rows = select_fold_rows(table, fold, 1.0)
    return {"train": rows.train, "val": rows.val, "test": rows.test}


def test_training_is_deterministic_on_cpu_and_learns_the_artefact(study):
    table, pixels = study
    labels = table["label"].to_numpy(np.float32)
    first = train_fold(tiny_config(), pixels, fold_rows(table), labels, fold=0, device=torch.device("cpu"))
    again = train_fold(tiny_config(), pixels, fold_rows(table), labels, fold=0, device=torch.device("cpu"))
    pd.testing.assert_frame_equal(first[1].drop(columns="images_per_s"), again[1].drop(columns="images_per_s"))
    np.testing.assert_array_equal(first[2], again[2])
    test_labels = labels[fold_rows(table)["test"]]
    assert first[2][test_labels == 1].mean() > first[2][test_labels == 0].mean()


def test_real_norm_statistics_are_stored_with_the_fold(study):
    table, pixels = study
    labels = table["label"].to_numpy(np.float32)
    rows = fold_rows(table, 1)
    *_, summary = train_fold(tiny_config(normalization="real_norm", epochs=1), pixels, rows, labels, fold=1,
                             device=torch.device("cpu"))
    expected = channel_statistics(pixels, rows["train"][labels[rows["train"]] == 0])
    assert summary["normalization_mean"] == pytest.approx(list(expected.mean))
    assert summary["normalization_std"] == pytest.approx(list(expected.std))


def test_multiclass_training_uses_class_indices_and_returns_softmax_rows(study):
    table, pixels = study
    pixels = pixels.copy()
    sources = ["wiki", "text2img", "inpainting", "insight"]
    classes = table["source"].map(sources.index).to_numpy(np.int64)
    for index in range(1, 4):  # each fake source's own colour square: the classes are learnable
        pixels[classes == index, 4:12, 4:12] = 0
        pixels[classes == index, 4:12, 4:12, index - 1] = 255
    rows = fold_rows(table)
    state, history, test_probs, val_probs, _ = train_fold(tiny_config(num_classes=4, epochs=4), pixels, rows,
                                                          classes, fold=0, device=torch.device("cpu"))
    assert state["head.weight"].shape[0] == 4
    assert test_probs.shape == (len(rows["test"]), 4) and val_probs.shape == (len(rows["val"]), 4)
    np.testing.assert_allclose(test_probs.sum(axis=1), 1.0, rtol=1e-5)
    # Validation loss is the cross-entropy of the stored validation probabilities.
    top = history[history["val_auc"] == history["val_auc"].max()]  # early stopping: best AUC, then lowest loss
    best = top.loc[top["val_loss"].idxmin()]
    assert best["val_loss"] == pytest.approx(-np.mean(np.log(val_probs[np.arange(len(val_probs)),
                                                                       classes[rows["val"]]])), rel=1e-4)
    assert (test_probs.argmax(axis=1) == classes[rows["test"]]).mean() > 0.5
