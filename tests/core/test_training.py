import multiprocessing

import numpy as np
import pandas as pd
import pytest
import torch

from deepfake_kedro.config import ExperimentConfig
from deepfake_kedro.folds import build_fold_table, select_fold_rows
from deepfake_kedro.metrics import safe_auc
from deepfake_kedro.models import create_model
from deepfake_kedro.training import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalizer,
    _epochs,
    batch_loader,
    channel_statistics,
    train_fold,
    train_step,
)
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
    stats = channel_statistics(pixels, real_train, chunk_bytes=7 * 16 * 16 * 3)  # chunks of 7 images
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


def test_loader_processes_change_nothing_a_fold_learns_even_with_dropout(study):
    # num_workers is no part of the fingerprint: runs that differ in it share one stored fold.
    table, pixels = study
    labels = table["label"].to_numpy(np.float32)
    runs = [train_fold(tiny_config(dropout=0.3, num_workers=workers, epochs=2, scheduler={"T_max": 2}), pixels,
                       fold_rows(table), labels, fold=0, device=torch.device("cpu")) for workers in (0, 2)]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    pd.testing.assert_series_equal(runs[0][1]["train_loss"], runs[1][1]["train_loss"])


def _batches_in_a_daemon(pixels, labels, queue):
    loader = batch_loader(pixels, np.arange(len(pixels)), labels, 16, shuffle=True, seed=3, num_workers=2)
    queue.put([batch.numpy() for batch, _ in loader])


def test_a_daemon_process_such_as_a_dask_worker_loads_the_same_batches_itself(study):
    _, pixels = study
    labels = np.zeros(len(pixels), np.float32)
    queue = multiprocessing.get_context("fork").Queue()
    worker = multiprocessing.get_context("fork").Process(target=_batches_in_a_daemon, args=(pixels, labels, queue),
                                                         daemon=True)
    worker.start()
    in_daemon = queue.get(timeout=60)
    worker.join(timeout=60)
    expected = [batch.numpy() for batch, _ in batch_loader(pixels, np.arange(len(pixels)), labels, 16, shuffle=True,
                                                           seed=3)]
    assert len(in_daemon) == len(expected) and all(np.array_equal(a, b) for a, b in zip(in_daemon, expected))


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


def test_epoch_loop_without_per_step_syncs_matches_a_loop_that_reads_every_step(study):
    """The loop keeps loss and logits on the device; a per-step ``.item()`` / ``.cpu()`` loop gives the same."""
    table, pixels = study
    labels = table["label"].to_numpy(np.float32)
    rows = fold_rows(table)["train"]
    cpu, normalizer = torch.device("cpu"), Normalizer(IMAGENET_MEAN, IMAGENET_STD)

    def fresh():
        torch.manual_seed(7)
        model = create_model("simple_cnn", False, "micro", 0.0)
        return model, torch.optim.AdamW(model.parameters(), lr=3e-3), batch_loader(pixels, rows, labels[rows], 16,
                                                                                    shuffle=True, seed=7)

    model, optimizer, loader = fresh()
    ours = [(loss, auc) for _, loss, auc, _ in _epochs(model, loader, normalizer, cpu, optimizer, 2)]
    reference_model, optimizer, loader = fresh()
    reference = []
    for _ in range(2):
        reference_model.train()
        losses, scores, targets = [], [], []
        for batch, batch_labels in loader:
            loss, logits = train_step(reference_model, normalizer(batch, cpu), batch_labels, optimizer,
                                      torch.nn.BCEWithLogitsLoss(), cpu)
            losses.append(loss.item() * len(batch_labels))
            scores.append(logits.cpu().numpy())
            targets.append(batch_labels.numpy())
        seen = sum(len(t) for t in targets)
        reference.append((np.sum(losses) / seen, safe_auc(np.concatenate(targets), np.concatenate(scores))))
    for (loss, auc), (reference_loss, reference_auc) in zip(ours, reference, strict=True):
        assert loss == pytest.approx(reference_loss, rel=1e-12)
        assert auc == reference_auc
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference_model.state_dict()[name]), name


def test_compile_flag_trains_through_torch_compile_and_stores_plain_checkpoints(study, monkeypatch):
    """``compile: true`` wraps the model in ``torch.compile``; weights and predictions stay those of the model.

    The eager backend stands in for inductor (whose C++ build takes minutes on a CPU); what is checked
    is the wiring: the compiled module trains and predicts, the checkpoint has the model's own keys.
    """
    table, pixels = study
    labels = table["label"].to_numpy(np.float32)
    compiled_calls = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        compiled_calls.append(type(model).__name__)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    plain = train_fold(tiny_config(epochs=1), pixels, fold_rows(table), labels, fold=0, device=torch.device("cpu"))
    compiled = train_fold(tiny_config(epochs=1, compile=True), pixels, fold_rows(table), labels, fold=0,
                          device=torch.device("cpu"))
    assert len(compiled_calls) == 1
    assert compiled[0].keys() == plain[0].keys()
    for name in plain[0]:
        torch.testing.assert_close(compiled[0][name], plain[0][name])
    np.testing.assert_allclose(compiled[2], plain[2], rtol=1e-5)


def test_a_spawned_loader_worker_gets_the_cache_as_its_file_not_its_pixels(tmp_path):
    import pickle

    from deepfake_kedro.training import CachedBatches

    pixels = np.random.default_rng(0).integers(0, 255, (200, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", pixels)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    dataset = CachedBatches(mapped, np.arange(200), np.zeros(200))
    blob = pickle.dumps(dataset)  # what spawn / forkserver send to each DataLoader worker
    assert len(blob) < pixels.nbytes / 10
    again = pickle.loads(blob)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again[[3, 7]][0].numpy(), pixels[[3, 7]])


def test_an_augment_dict_that_augments_nothing_trains_like_no_augmentation(study):
    table, pixels = study
    rows = select_fold_rows(table, 0, 1.0)
    fold = {"train": rows.train, "val": rows.val, "test": rows.test}
    labels, cpu = table["label"].to_numpy(np.float32), torch.device("cpu")
    settings = {"backbone": "simple_cnn", "cnn_preset": "micro", "pretrained": False, "image_size": 16, "epochs": 1,
                "batch_size": 16, "num_workers": 0}
    nothing = train_fold(ExperimentConfig.model_validate({**settings, "augment": {"hflip_p": 0.0, "erase_p": 0.0}}),
                         pixels, fold, labels, fold=0, device=cpu)
    plain = train_fold(ExperimentConfig.model_validate(settings), pixels, fold, labels, fold=0, device=cpu)
    np.testing.assert_allclose(nothing[2], plain[2], rtol=1e-6)  # the same test probabilities
