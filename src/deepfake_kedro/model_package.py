"""A finished experiment as a usable detector: its fold models as an ensemble, preprocessing, threshold, card.

The package is a folder::

    package.json        resolved config, fingerprint, preprocessing, each fold's calibration, threshold (rule, per
                        fold, chosen)
    model_card.md       data, protocol, CV metrics with CIs, threshold rule, known shortcuts
    folds/fold_<k>.pt   each outer fold's checkpoint (a plain state dict, loaded with weights_only=True)

It is written under ``<folder>.partial`` and renamed at the end, so a half-written package never exists.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from deepfake_kedro.calibration import CALIBRATION_METHOD, calibrate
from deepfake_kedro.commands import kedro_run
from deepfake_kedro.data_index import square_resize
from deepfake_kedro.face_crops import face_crop
from deepfake_kedro.image_cache import swap_folder_in
from deepfake_kedro.models import create_model
from deepfake_kedro.run_store import FoldRunStore, StoredFold, run_key
from deepfake_kedro.study import ResolvedExperiment
from deepfake_kedro.training import Normalizer, predict, select_device

logger = logging.getLogger(__name__)

THRESHOLD_CHOICE = "mean of the fold thresholds on the calibrated scale"


def read_folds(resolved: ResolvedExperiment, store: FoldRunStore, n_folds: int) -> list[StoredFold]:
    """The experiment's stored fold runs, in fold order."""
    return [store.read(run_key(resolved.fingerprint, fold)) for fold in range(n_folds)]


def summary_calibrations(label: str, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each fold model's ``platt_calibration`` as the evaluation fitted it (``metrics.json``'s ``calibration``).

    Raises:
        ValueError: The summary has none (evaluated before calibration was recorded): re-run the evaluation.
    """
    if "calibration" not in metrics:
        raise ValueError(f"{label}: metrics.json has no 'calibration' (evaluated before each fold's calibration was "
                         "recorded); run its phase again: the evaluation reruns, the trained folds are reused")
    return [dict(c) for c in metrics["calibration"]]


def package_threshold(resolved: ResolvedExperiment, metrics: Mapping[str, Any], fold_metrics: pd.DataFrame
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each fold's calibration and the package threshold: the mean of the fold thresholds, each calibrated.

    Calibration is monotone, so a fold's threshold mapped through it is the one its rule picks on the fold's
    calibrated validation predictions: the folds' thresholds then sit on one scale and their mean means something.

    Args:
        resolved: The experiment's resolved config.
        metrics: Its metrics summary (``metrics.json``, with ``threshold_rule`` and each fold's ``calibration``).
        fold_metrics: Its per-fold metrics, with each fold's ``threshold`` on its raw p(fake).

    Returns:
        The per-fold calibrations, and the threshold (``rule``, ``choice``, ``fold_thresholds`` raw,
        ``calibrated_fold_thresholds``, ``value``).

    Raises:
        ValueError: The evaluation has no per-fold thresholds or calibrations (re-run the experiment's evaluation).
    """
    if "threshold" not in fold_metrics.columns:
        raise ValueError(f"{resolved.label}: fold_metrics.csv has no 'threshold' column; re-run its evaluate_folds "
                         "node (thresholds are chosen there, on validation predictions)")
    fold_thresholds = fold_metrics.sort_values("fold")["threshold"].astype(float).tolist()
    calibrations = summary_calibrations(resolved.label, metrics)
    calibrated = [float(calibrate(np.array([t]), c)[0]) for t, c in zip(fold_thresholds, calibrations, strict=True)]
    threshold = {"rule": metrics.get("threshold_rule", "youden"), "choice": THRESHOLD_CHOICE,
                 "fold_thresholds": fold_thresholds, "calibrated_fold_thresholds": calibrated,
                 "value": float(np.mean(calibrated))}
    return calibrations, threshold


@dataclass
class ModelPackage:
    """Everything needed to score new images the way the experiment's folds scored their test images."""

    resolved: ResolvedExperiment
    preprocessing: dict[str, Any]
    threshold: dict[str, Any]
    fold_states: list[dict[str, torch.Tensor]]
    model_card: str
    calibration: list[dict[str, Any]]
    """Each fold model's ``platt_calibration``: ``predict_folds`` returns calibrated probabilities."""
    # Fold models built once per device by predict_folds: a set scored in chunks does not rebuild them per chunk.
    _built: dict[tuple[int, str], nn.Module] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        return self.resolved.fingerprint

    @property
    def needs_faces(self) -> bool:
        """Whether inputs must be face-cropped (MTCNN boxes) before ``render``."""
        return self.preprocessing["crop"] == "face"

    def render(self, image: Image.Image, face: Mapping[str, Any] | None = None) -> np.ndarray:
        """One raw image as the model's input: the study's own square or face crop at the package's size.

        Args:
            image: The raw image (any mode; converted as the caches convert it).
            face: Its MTCNN box (``detected``, ``x0``..``y1``) when ``needs_faces``; no face -> the square crop,
                exactly as the face-crop caches fall back.

        Returns:
            ``(size, size, 3)`` uint8 RGB, bit-identical to the study's cache for the same image.
        """
        size = self.preprocessing["image_size"]
        if not self.needs_faces:
            return square_resize(image, size)
        return face_crop(image, dict(face or {"detected": False}), self.preprocessing["face_crop_margin"], size)

    def normalizer(self, fold: int) -> Normalizer:
        """The normalization fold ``fold`` was trained with (ImageNet, or its own real-image statistics)."""
        stats = self.preprocessing["fold_normalization"][fold]
        return Normalizer(tuple(stats["mean"]), tuple(stats["std"]))

    def fold_model(self, fold: int, device: torch.device | str | None = None) -> nn.Module:
        """Fold ``fold``'s trained model, in eval mode."""
        config = self.resolved.config
        # pretrained=False: the trained weights come from the checkpoint, not from ImageNet.
        model = create_model(config.backbone, False, config.cnn_preset, config.dropout)
        model.load_state_dict(self.fold_states[fold])
        return model.to(torch.device(device) if device is not None else select_device()).eval()

    def predict_folds(self, pixels: np.ndarray, device: torch.device | str | None = None,
                      calibrated: bool = True) -> np.ndarray:
        """Every fold model's p(fake) for preprocessed ``(N, size, size, 3)`` uint8 images: ``(folds, N)``.

        Calibrated (each fold's ``platt_calibration``) unless ``calibrated`` is False, which gives the raw
        probabilities the fold's own evaluation saw.
        """
        size = self.preprocessing["image_size"]
        if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(f"the package expects ({size}, {size}, 3) uint8 images "
                             f"({self.preprocessing['crop']} crops), got shape {pixels.shape[1:]}")
        device = torch.device(device) if device is not None else select_device()
        rows = np.arange(len(pixels))
        raw = np.stack([predict(self.built_fold_model(k, device), pixels, rows, self.normalizer(k), device,
                                description=f"fold {k}") for k in range(len(self.fold_states))])
        return self.calibrate(raw) if calibrated else raw

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw per-fold p(fake) ``(folds, N)`` mapped through each fold's calibration."""
        return np.stack([calibrate(p, c) for p, c in zip(raw, self.calibration, strict=True)])

    def built_fold_model(self, fold: int, device: torch.device) -> nn.Module:
        """``fold_model``, built once per device: a set scored in chunks does not rebuild it per chunk."""
        if (fold, str(device)) not in self._built:
            self._built[fold, str(device)] = self.fold_model(fold, device)
        return self._built[fold, str(device)]

    def release_fold_model(self, fold: int, device: torch.device) -> None:
        """Drops ``built_fold_model``'s model of ``fold``: its last chunk is scored, its memory goes back."""
        self._built.pop((fold, str(device)), None)

    def predict(self, pixels: np.ndarray, device: torch.device | str | None = None) -> pd.DataFrame:
        """Ensemble scores: ``p_fake`` (mean of the calibrated folds), ``spread`` (their std), ``fake`` (at the
        threshold)."""
        per_fold = self.predict_folds(pixels, device)
        p_fake = per_fold.mean(axis=0)
        return pd.DataFrame({"p_fake": p_fake, "spread": per_fold.std(axis=0),
                             "fake": p_fake >= self.threshold["value"]})


def package_preprocessing(resolved: ResolvedExperiment, fold_meta: list[Mapping[str, Any]],
                          face_detection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The exact preprocessing: crop, size, margin, MTCNN's threshold, cache and each fold's normalization."""
    config = resolved.config
    preprocessing: dict[str, Any] = {
        "crop": "face" if config.face_crop else "square",
        "image_size": config.image_size,
        "cache": resolved.cache_name,
        "normalization": config.normalization,
        "fold_normalization": [{"mean": list(m["normalization_mean"]), "std": list(m["normalization_std"])}
                               for m in fold_meta],
        "input": "uint8 RGB, HWC; p(fake) = sigmoid(model((x / 255 - mean) / std))",
    }
    if config.face_crop:
        preprocessing["face_crop_margin"] = config.face_crop_margin
        preprocessing["face_detector"] = "MTCNN (facenet-pytorch), as in the preprocessing pipeline"
        if face_detection is not None:
            # The training crops came from boxes at this confidence; predict must keep to it.
            preprocessing["face_min_confidence"] = float(face_detection["min_confidence"])
    return preprocessing


def build_package(
    resolved: ResolvedExperiment, store: FoldRunStore, n_folds: int, metrics: Mapping[str, Any],
    fold_metrics: pd.DataFrame, shortcut_audit: Mapping[str, Any] | None = None,
    face_detection: Mapping[str, Any] | None = None,
) -> ModelPackage:
    """Assembles a finished experiment's package from its fold runs and evaluation.

    Args:
        resolved: The experiment's resolved config.
        store: Its trained folds.
        n_folds: Number of outer folds.
        metrics: Its metrics summary (``metrics.json``, with ``threshold_rule``).
        fold_metrics: Its per-fold metrics (with each fold's ``threshold``).
        shortcut_audit: eda's metadata-only shortcut audit, for the card's "known shortcuts".
        face_detection: ``preprocessing.face_detection``, whose ``min_confidence`` made the training crops.

    Returns:
        The package (write it with ``save_package``).

    Raises:
        ValueError: The evaluation has no per-fold thresholds or calibrations (re-run the experiment's evaluation).
    """
    folds = read_folds(resolved, store, n_folds)
    calibration, threshold = package_threshold(resolved, metrics, fold_metrics)
    preprocessing = package_preprocessing(resolved, [f.meta for f in folds], face_detection)
    card = model_card(resolved, preprocessing, threshold, metrics, shortcut_audit, calibration)
    return ModelPackage(resolved, preprocessing, threshold, [f.load_state_dict() for f in folds], card, calibration)


def _metric_line(metrics: Mapping[str, Any], name: str, label: str) -> str:
    stats = metrics.get("metrics", {}).get(name)
    if not stats or stats.get("mean") is None:
        return f"| {label} | n/a |"
    if stats.get("std") is None or stats.get("ci_low") is None:  # one fold with a value: no spread to give
        return f"| {label} | {stats['mean']:.3f} (1 fold) |"
    return f"| {label} | {stats['mean']:.3f} ± {stats['std']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}] |"


def model_card(
    resolved: ResolvedExperiment, preprocessing: Mapping[str, Any], threshold: Mapping[str, Any],
    metrics: Mapping[str, Any], shortcut_audit: Mapping[str, Any] | None,
    calibration: list[Mapping[str, Any]] | None = None,
) -> str:
    """A short ``model_card.md``: data, protocol, CV metrics with CIs, calibration, threshold rule, shortcuts."""
    config = resolved.config
    crop = (f"face crop (MTCNN, margin {preprocessing['face_crop_margin']})" if preprocessing["crop"] == "face"
            else "square centre crop")
    folds = metrics.get("folds", [])
    n_test = sum(int(f.get("n_test", 0)) for f in folds)
    pooled = metrics.get("pooled", {})
    lines = [
        f"# Model card: {resolved.label}",
        "",
        f"Fingerprint `{resolved.fingerprint}`; {config.backbone} at {config.image_size} px, {crop}, "
        f"{preprocessing['normalization']} normalization; an ensemble of {len(folds)} fold models "
        "(p(fake) = mean of their calibrated probabilities, spread = their std).",
        "",
        "## Data and protocol",
        f"- Trained on sources: {config.train_sources}; evaluated on: {config.eval_sources}; "
        f"{config.subsample:.0%} of each fold's "
        + ("train, val and test groups." if config.subsample_test else "train and val groups, tested on the whole "
           "test fold."),
        f"- Grouped {len(folds)}-fold cross-validation (near-duplicates and identities kept in one fold), "
        f"an inner validation split per fold for early stopping and the threshold; {n_test} out-of-fold test images.",
        "",
        "## Cross-validated metrics (mean ± std [95% t-interval] over folds)",
        "| metric | value |",
        "|---|---|",
        _metric_line(metrics, "auc", "ROC AUC"),
        _metric_line(metrics, "accuracy", "accuracy at 0.5"),
        _metric_line(metrics, "accuracy_at_threshold", "accuracy at the fold threshold"),
        _metric_line(metrics, "tpr_at_threshold", "detection rate (TPR) at the fold threshold"),
        _metric_line(metrics, "fpr_at_threshold", "false-alarm rate (FPR) at the fold threshold"),
    ]
    for name in metrics.get("metrics", {}):
        kind, _, source = name.partition(":")
        if kind in ("detection_rate_at_threshold", "false_alarm_rate_at_threshold"):
            what = "detection rate" if kind.startswith("detection") else "false-alarm rate"
            lines.append(_metric_line(metrics, name, f"{what} of {source} at the fold threshold"))
    if pooled:
        resamples = f", {metrics['bootstrap_resamples']} resamples" if "bootstrap_resamples" in metrics else ""
        lines.append(f"| pooled out-of-fold AUC, fold-calibrated p(fake) [grouped bootstrap 95% CI{resamples}] | "
                     f"{pooled['auc']:.3f} "
                     f"[{pooled['auc_boot_ci_low']:.3f}, {pooled['auc_boot_ci_high']:.3f}] |")
    lines += [
        "",
        "Phase 4 ranked this model among others on its folds' inner validation images, not on these test "
        "figures, so they are not inflated by that choice; they come from the study's own data, and "
        "`kedro run --pipelines external` scores the model on another labelled set.",
        "",
        "## Calibration and decision threshold",
        f"- Each fold model's p(fake) is calibrated by {CALIBRATION_METHOD} (sigmoid(slope * logit(p) + intercept), "
        "scikit-learn's logistic regression): fold models come out on different scales, and the ensemble "
        "averages probabilities.",
        *[f"  - fold {k}: slope {c['slope']:.3f}, intercept {c['intercept']:+.3f} ({c['n_val']} validation images)"
          + (f"; {c['note']}" if c["note"] else "") for k, c in enumerate(calibration or [])],
        f"- Threshold {threshold['value']:.4f}: the {threshold['choice']}. Each fold's was chosen by "
        f"`{threshold['rule']}` on its inner validation predictions, never on test "
        f"({', '.join(f'{t:.3f}' for t in threshold['fold_thresholds'])} raw; "
        f"{', '.join(f'{t:.3f}' for t in threshold.get('calibrated_fold_thresholds', []))} calibrated).",
        "- The package applies it to the ensemble's p(fake). The rates at the fold threshold above are each fold "
        "model's at its own threshold, so the ensemble's can differ: `kedro run --pipelines external` measures "
        "the ensemble's on other data.",
        "",
        "## Known shortcuts",
    ]
    if shortcut_audit:
        verdict = ("WARNING: file metadata alone separates real from fake; the model may use it"
                   if shortcut_audit.get("warning") else "below the warning level")
        lines.append(f"- Metadata-only classifier ({', '.join(shortcut_audit.get('features', []))}): AUC "
                     f"{shortcut_audit['auc']:.3f} [{shortcut_audit['auc_ci_low']:.3f}, "
                     f"{shortcut_audit['auc_ci_high']:.3f}], {verdict}.")
    else:
        lines.append("- No shortcut audit was available (run the eda pipeline).")
    return "\n".join(lines) + "\n"


def save_package(package: ModelPackage, directory: Path) -> None:
    """Writes the package folder atomically (staged under ``<name>.partial``, then renamed over the old one)."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "folds").mkdir(parents=True)
    for fold, state in enumerate(package.fold_states):
        torch.save(state, staging / "folds" / f"fold_{fold}.pt")
    manifest = {"resolved": package.resolved.to_json(), "preprocessing": package.preprocessing,
                "calibration": package.calibration, "threshold": package.threshold,
                "n_folds": len(package.fold_states)}
    (staging / "model_card.md").write_text(package.model_card)
    (staging / "package.json").write_text(json.dumps(manifest, indent=2))
    swap_folder_in(staging, directory, directory.with_name(directory.name + ".replaced"))


def load_package(directory: Path) -> ModelPackage:
    """Reads a package folder; checkpoints are loaded with ``weights_only=True``.

    Raises:
        FileNotFoundError: No ``package.json`` (or a fold checkpoint) under ``directory``.
        ValueError: The package predates fold calibration (rebuild it).
    """
    directory = Path(directory)
    manifest_path = directory / "package.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} does not exist; build the package first "
                                f"({kedro_run('--pipelines package')})")
    manifest = json.loads(manifest_path.read_text())
    if "calibration" not in manifest:
        raise ValueError(f"{directory} was packaged before fold models were calibrated: its threshold sits on "
                         f"uncalibrated probabilities; rebuild it ({kedro_run('--pipelines package')})")
    states = []
    for fold in range(manifest["n_folds"]):
        path = directory / "folds" / f"fold_{fold}.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the package at {directory} is incomplete; rebuild it")
        states.append(torch.load(path, map_location="cpu", weights_only=True))
    resolved = ResolvedExperiment.from_json(manifest["resolved"], where=str(manifest_path))
    return ModelPackage(resolved, manifest["preprocessing"], manifest["threshold"], states,
                        (directory / "model_card.md").read_text(), manifest["calibration"])
