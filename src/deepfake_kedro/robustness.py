"""Robustness: a final model's out-of-fold test images re-scored under image corruptions at fixed severities.

Each image is corrupted at its native resolution (where JPEG quality and blur σ mean what the DFF paper
means), then goes through the study's own preprocessing (``ModelPackage.render``: the square crop, or the
face crop around the stored MTCNN box) and is scored by the fold model that held it out. Severity 0 (clean)
takes the identical path without a corruption, so it reproduces the stored out-of-fold probabilities.
Face boxes are the clean image's, never re-detected: the figures measure the classifier, not MTCNN under
corruption (a face model in use would also lose or shift some boxes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from deepfake_kedro.calibration import calibrate
from deepfake_kedro.data_index import ImageTree, to_rgb8
from deepfake_kedro.metrics import grouped_bootstrap_ci, safe_auc, summarize
from deepfake_kedro.model_package import ModelPackage
from deepfake_kedro.resumable import Part
from deepfake_kedro.stats import holm_adjust, paired_comparison
from deepfake_kedro.training import predict, select_device

logger = logging.getLogger(__name__)

CLEAN = "clean"
KINDS = {
    "jpeg": "JPEG quality",
    "gaussian_blur": "Gaussian blur σ (px)",
    "downscale": "downscale factor, then back up",
    "gaussian_noise": "Gaussian noise σ (of 1.0)",
}
"""Corruption kind -> what its severity values mean."""
SCORE_COLUMNS = ["model", "corruption", "severity", "level", "path", "source", "label", "group", "fold", "prob"]


@dataclass(frozen=True)
class Corruption:
    """One corruption at one severity; ``level`` orders the severities of a kind (0 = clean, 1 = mildest)."""

    kind: str
    severity: float
    level: int

    @property
    def label(self) -> str:
        return CLEAN if self.kind == CLEAN else f"{self.kind} {self.severity:g}"

    def apply(self, image: Image.Image, seed: int = 0) -> Image.Image:
        """The corrupted raw image (RGB, same size); ``seed`` fixes the noise of ``gaussian_noise``."""
        if self.kind == CLEAN:
            return image
        pixels = tvf.pil_to_tensor(to_rgb8(image))  # uint8, CHW
        height, width = pixels.shape[-2:]
        if self.kind == "jpeg":
            pixels = v2.JPEG(quality=int(self.severity))(pixels)
        elif self.kind == "gaussian_blur":
            # A kernel of ±3σ holds 99.7% of the Gaussian's weight.
            kernel = 2 * math.ceil(3 * self.severity) + 1
            pixels = v2.GaussianBlur(kernel, sigma=(self.severity, self.severity))(pixels)
        elif self.kind == "downscale":
            small = (max(1, round(height * self.severity)), max(1, round(width * self.severity)))
            pixels = v2.Resize((height, width), antialias=True)(v2.Resize(small, antialias=True)(pixels))
        elif self.kind == "gaussian_noise":
            scaled = tvf.to_dtype(pixels, torch.float32, scale=True)
            # GaussianNoise draws from torch's global generator: seed it per image, restore it after.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                noisy = v2.GaussianNoise(mean=0.0, sigma=self.severity, clip=True)(scaled)
            pixels = tvf.to_dtype(noisy, torch.uint8, scale=True)
        return tvf.to_pil_image(pixels)


def corruption_grid(params: Mapping[str, Any], key: str = "robustness.corruptions") -> list[Corruption]:
    """Clean, then every kind at each of its severities, from a block like ``{jpeg: [90, 70], ...}``.

    Severities are listed mildest first (JPEG 90 before 30, blur σ 1 before 3, downscale 0.5 before 0.25).

    Raises:
        ValueError: Naming the unknown kind, a kind whose severities are not a list, or the severity out of its
            range.
    """
    unknown = sorted(set(params) - set(KINDS))
    if unknown:
        raise ValueError(f"{key}: unknown corruption(s) {unknown}; allowed: {sorted(KINDS)}")
    valid = {"jpeg": lambda s: 1 <= s <= 100 and float(s).is_integer(), "gaussian_blur": lambda s: s > 0,
             "downscale": lambda s: 0 < s < 1, "gaussian_noise": lambda s: s > 0}
    meaning = {"jpeg": "an integer quality in [1, 100]", "gaussian_blur": "a σ > 0 in pixels",
               "downscale": "a factor in (0, 1)", "gaussian_noise": "a σ > 0 (images scaled to [0, 1])"}
    grid = [Corruption(CLEAN, 0.0, 0)]
    for kind, severities in params.items():
        if severities is not None and not isinstance(severities, list | tuple):
            raise ValueError(f"{key}.{kind}: severities must be a list, mildest first; write [{severities}] "
                             f"for the one level {severities!r}")
        for level, severity in enumerate(severities or [], start=1):
            if isinstance(severity, bool) or not isinstance(severity, int | float) or not valid[kind](severity):
                raise ValueError(f"{key}.{kind}: severity {severity!r} must be {meaning[kind]}")
            grid.append(Corruption(kind, float(severity), level))
    return grid


def image_seed(seed: int, path: str) -> int:
    """A fixed seed per image (its noise is the same in every run and every model)."""
    return (seed * 1_000_003 + zlib.crc32(path.encode())) % 2**31


def sample_groups(predictions: pd.DataFrame, max_images: int | None, seed: int = 0) -> pd.DataFrame:
    """Whole groups drawn at random (seeded), stratified by fold and label, up to about ``max_images`` images.

    A stratum is a fold and its groups' labels (real only, fake only or both); each keeps its share of the
    images and at least one group, so every fold keeps both classes where it has them (a one-class fold has no
    AUC and would drop out of the paired tests). None keeps every image.

    Rows keep their order, so every fold's images stay in their stored order.
    """
    if max_images is None or len(predictions) <= max_images:
        return predictions
    groups = (predictions.assign(real=predictions["label"] == 0, fake=predictions["label"] == 1)
              .groupby("group", sort=False)
              .agg(fold=("fold", "first"), size=("label", "size"), real=("real", "any"), fake=("fake", "any")))
    groups = groups.iloc[np.random.default_rng(seed).permutation(len(groups))]
    kept = []
    for _, stratum in groups.groupby(["fold", "real", "fake"], sort=True):
        share = max_images * stratum["size"].sum() / len(predictions)
        # The stratum's first groups whose images reach its share (at least one group).
        kept.extend(stratum.index[: int(np.searchsorted(stratum["size"].cumsum().to_numpy(), share)) + 1])
    return predictions[predictions["group"].isin(kept)]


def plan_rescoring(
    package: ModelPackage, predictions: pd.DataFrame, tree: ImageTree, faces: Mapping[str, Mapping[str, Any]],
    corruptions: Sequence[Corruption], seed: int = 0, device: torch.device | str | None = None,
    chunk_size: int = 256, clean_tolerance: float = 1e-4, label: str = "",
) -> list[Part]:
    """Every out-of-fold test image re-scored under every corruption by the fold model that held it out, as parts.

    One part is a chunk of one fold's images under every corruption, the clean pass first: a clean pass that
    does not reproduce the stored probabilities stops the run at its chunk (``check_clean``). A part is keyed by
    everything its scores depend on (the model's fingerprint, the images' files and stored probabilities, their
    face boxes, the corruptions, the seed), so ``resumable.write_parts`` reuses it until one of them changes.

    Args:
        package: The final model (its fold models, ``render`` and normalizations).
        predictions: Its stored out-of-fold predictions (``path``, ``source``, ``label``, ``group``, ``fold``,
            ``prob``), in each fold's stored order.
        tree: The raw images.
        faces: ``path`` -> stored MTCNN box (used when the package crops faces; never re-detected).
        corruptions: ``corruption_grid``'s list; it must hold the clean entry.
        seed: Seed of the per-image noise.
        device: Where to predict (default: CUDA if present).
        chunk_size: Images decoded at once (a multiple of 128 keeps training's prediction batches).
        clean_tolerance: Largest allowed difference between clean re-scores and the stored probabilities.
        label: The model's name, for the table, the parts' names and errors.

    Returns:
        The parts, fold by fold; each computes ``SCORE_COLUMNS`` rows, one per image and corruption.

    Raises:
        ValueError: No clean entry, or a face-crop model without stored boxes for some images (before any part).
    """
    if not any(c.kind == CLEAN for c in corruptions):
        raise ValueError("the corruption list needs the clean entry (severity 0): it is the baseline every "
                         "corruption is compared with")
    device = torch.device(device) if device is not None else select_device()
    missing = sorted(set(predictions["path"]) - set(faces)) if package.needs_faces else []
    if missing:
        raise ValueError(f"{label}: no stored face box for {len(missing)} test images (first {missing[0]!r}); "
                         "re-run the preprocessing pipeline (face_boxes) before robustness")
    # Clean first: a chunk whose clean pass does not reproduce stops before any corruption of it is scored.
    ordered = sorted(corruptions, key=lambda c: c.kind != CLEAN)
    settings = {"model": package.fingerprint, "label": label, "preprocessing": package.preprocessing,
                "corruptions": [[c.kind, c.severity, c.level] for c in ordered], "seed": seed,
                "clean_tolerance": clean_tolerance}
    parts = []
    for fold, rows in predictions.groupby("fold", sort=True):
        rows = rows.reset_index(drop=True)
        for start in range(0, len(rows), chunk_size):
            chunk = rows.iloc[start:start + chunk_size]
            paths = chunk["path"].tolist()
            inputs = {"fold": int(fold), "paths": paths, "files": [tree.signature(path) for path in paths],
                      "probs": [repr(float(prob)) for prob in chunk["prob"]],
                      "faces": [faces.get(path) for path in paths] if package.needs_faces else None}
            blob = json.dumps({**settings, **inputs}, sort_keys=True, default=str).encode()
            parts.append(Part(f"{label}/fold_{int(fold)}/chunk_{start // chunk_size:05d}",
                              hashlib.sha256(blob).hexdigest(),
                              partial(_score_chunk, package, int(fold), chunk, tree, faces, ordered, seed, device,
                                      clean_tolerance, label, last=start + chunk_size >= len(rows))))
    return parts


def _score_chunk(package: ModelPackage, fold: int, chunk: pd.DataFrame, tree: ImageTree,
                 faces: Mapping[str, Mapping[str, Any]], corruptions: Sequence[Corruption], seed: int,
                 device: torch.device, clean_tolerance: float, label: str, last: bool = False) -> pd.DataFrame:
    """One part of ``plan_rescoring``: the chunk's images under every corruption, the clean pass checked first.

    The fold model is built once for all of its fold's chunks, and dropped after the ``last`` one: a run over
    every final model otherwise holds all their fold models at once.
    """
    model, normalizer = package.built_fold_model(fold, device), package.normalizer(fold)
    raws = [tree.open_image(path) for path in chunk["path"]]
    parts = []
    for corruption in corruptions:
        pixels = np.stack([package.render(corruption.apply(raw, image_seed(seed, path)), faces.get(path))
                           for raw, path in zip(raws, chunk["path"], strict=True)])
        probs = predict(model, pixels, np.arange(len(pixels)), normalizer, device,
                        description=f"{label} fold {fold} {corruption.label}")
        parts.append(chunk[["path", "source", "label", "group", "fold"]].assign(
            model=label, corruption=corruption.kind, severity=corruption.severity, level=corruption.level,
            prob=probs))
        if corruption.kind == CLEAN:
            check_clean(parts[-1], chunk, clean_tolerance, label)
    if last:
        package.release_fold_model(fold, device)
    return pd.concat(parts, ignore_index=True)[SCORE_COLUMNS]


def rescore_out_of_fold(
    package: ModelPackage, predictions: pd.DataFrame, tree: ImageTree, faces: Mapping[str, Mapping[str, Any]],
    corruptions: Sequence[Corruption], seed: int = 0, device: torch.device | str | None = None,
    chunk_size: int = 256, clean_tolerance: float = 1e-4, label: str = "",
) -> pd.DataFrame:
    """``plan_rescoring``'s parts computed at once, in memory (the pipeline saves them one by one instead).

    Returns:
        One row per image and corruption: ``SCORE_COLUMNS``.

    Raises:
        ValueError: No clean entry, or the clean path does not reproduce the stored probabilities.
    """
    parts = plan_rescoring(package, predictions, tree, faces, corruptions, seed, device, chunk_size,
                           clean_tolerance, label)
    scores = pd.concat([part.compute() for part in parts], ignore_index=True)
    check_clean(scores, predictions, clean_tolerance, label)
    return scores


def check_clean(scores: pd.DataFrame, predictions: pd.DataFrame, tolerance: float, label: str = "") -> None:
    """Asserts that the clean re-scores reproduce the stored out-of-fold probabilities (and so the clean AUC).

    Raises:
        ValueError: Naming the model, the image and both probabilities.
    """
    clean = scores[scores["corruption"] == CLEAN].set_index("path")["prob"]
    stored = predictions.set_index("path")["prob"].reindex(clean.index)
    gap = (clean - stored).abs()
    if gap.isna().any() or gap.max() > tolerance:
        worst = gap.fillna(np.inf).idxmax()
        raise ValueError(
            f"{label}: re-scoring the clean image {worst!r} gives p={clean[worst]:.6f}, but its stored out-of-fold "
            f"probability is {stored[worst]:.6f} (tolerance {tolerance:g}): the raw image, its face box or the "
            "fold model changed since training; re-run the experiment (or raise robustness.clean_tolerance "
            "for nondeterministic GPU kernels)")


def robustness_table(
    scores: pd.DataFrame, n_train: Mapping[str, Sequence[float]], n_test: Mapping[str, Sequence[float]],
    n_bootstrap: int = 1000, seed: int = 0, calibrations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> pd.DataFrame:
    """AUC per model × corruption × severity with CIs, and paired tests against the clean AUC.

    Args:
        scores: ``rescore_out_of_fold``'s rows (any number of models).
        n_train: Model -> each fold's training-set size (for the Nadeau-Bengio correction).
        n_test: Model -> each fold's test-set size in the study, not the number of images scored: the
            correction is for the cross-validation design, which a subsample (``sample_groups``) does not change.
        n_bootstrap: Grouped bootstrap resamples for the pooled AUC's CI.
        seed: Bootstrap seed.
        calibrations: Model -> each fold's ``platt_calibration`` (fitted on its clean validation rows): the pooled
            AUC pools calibrated p(fake), as the study's pooled AUC does; fold AUCs and tests are unchanged by it.
            None pools the raw probabilities.

    Returns:
        One row per model and corruption: ``auc`` (pooled out-of-fold) with ``auc_ci_low`` / ``auc_ci_high``
        (grouped bootstrap), the fold AUCs' ``fold_auc_mean`` and t-interval, ``delta_auc`` (fold mean minus
        clean), ``p_nadeau_bengio`` and ``p_holm`` (Holm across the model's corruptions × severities).
        Clean rows have no test.
    """
    rows = []
    for (model, kind, severity, level), part in scores.groupby(["model", "corruption", "severity", "level"],
                                                                 sort=False):
        folds = part.groupby("fold")
        fold_auc = pd.Series({fold: safe_auc(f["label"], f["prob"]) for fold, f in folds})
        pooled = part["prob"].to_numpy(dtype=float)
        if calibrations is not None:  # each row through its own fold model's calibration, rows kept in place
            fits = calibrations[model]
            pooled = folds["prob"].transform(
                lambda probs, fits=fits: calibrate(probs.to_numpy(), fits[int(probs.name)])).to_numpy()
        low, high = grouped_bootstrap_ci(part["label"], pooled, part["group"], n_boot=n_bootstrap, seed=seed)
        fold_summary = summarize(fold_auc.to_numpy(), bounds=(0.0, 1.0))
        rows.append({"model": model, "corruption": kind, "severity": severity, "level": level,
                     "n_images": len(part), "auc": safe_auc(part["label"], pooled),
                     "auc_ci_low": low, "auc_ci_high": high, "fold_auc_mean": fold_summary["mean"],
                     "fold_auc_ci_low": fold_summary["ci_low"], "fold_auc_ci_high": fold_summary["ci_high"],
                     "_fold_auc": fold_auc})
    table = pd.DataFrame(rows)
    table["delta_auc"] = np.nan
    table["p_nadeau_bengio"] = np.nan
    table["p_holm"] = np.nan
    for model, part in table.groupby("model", sort=False):
        clean = part[part["corruption"] == CLEAN]
        if clean.empty:
            raise ValueError(f"{model}: the scores hold no clean rows; re-score with the clean entry")
        base = clean.iloc[0]["_fold_auc"]
        for index, row in part[part["corruption"] != CLEAN].iterrows():
            treated = row["_fold_auc"].reindex(base.index)
            test = paired_comparison(base.to_numpy(), treated.to_numpy(), n_train[model], n_test[model])
            table.loc[index, ["delta_auc", "p_nadeau_bengio"]] = test["diff_mean"], test["p_nadeau_bengio"]
        tested = part.index[part["corruption"] != CLEAN]
        table.loc[tested, "p_holm"] = holm_adjust(table.loc[tested, "p_nadeau_bengio"].to_numpy())
    return table.drop(columns=["_fold_auc"])


def degradation_figure(table: pd.DataFrame) -> Figure:
    """AUC (pooled, grouped-bootstrap 95% CI) against severity level, one panel per corruption, a line per model."""
    kinds = [k for k in table["corruption"].unique() if k != CLEAN]
    figure = plt.figure(figsize=(3.6 * max(len(kinds), 1), 3.4), layout="constrained")
    axes = figure.subplots(1, max(len(kinds), 1), sharey=True, squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=False):
        for model, part in table.groupby("model", sort=False):
            curve = pd.concat([part[part["corruption"] == CLEAN], part[part["corruption"] == kind]])
            curve = curve.sort_values("level")
            errors = np.vstack([curve["auc"] - curve["auc_ci_low"], curve["auc_ci_high"] - curve["auc"]])
            ax.errorbar(curve["level"], curve["auc"], yerr=np.clip(errors, 0, None), marker="o", capsize=3,
                        label=model)
            ax.set_xticks(curve["level"], ["clean", *(f"{s:g}" for s in curve["severity"].iloc[1:])])
        ax.set_title(kind.replace("_", " "))
        ax.set_xlabel(KINDS[kind])
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    axes[0].set_ylabel("pooled AUC (95% CI)\nfolds calibrated, then pooled")
    axes[0].legend(fontsize=7, loc="lower left")
    return figure


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The report's table: one row per corruption × severity (``jpeg 30``), per model ``AUC [CI]`` and Holm p."""
    cells = table.assign(
        corruption=[CLEAN if k == CLEAN else f"{k} {s:g}" for k, s in zip(table["corruption"], table["severity"],
                                                                        strict=True)],
        value=[f"{r.auc:.3f} [{r.auc_ci_low:.3f}, {r.auc_ci_high:.3f}]"
               + ("" if r.corruption == CLEAN else f" p={r.p_holm:.3g}") for r in table.itertuples()])
    shown = cells.pivot_table(index=["corruption", "level"], columns="model", values="value", aggfunc="first",
                              sort=False)
    shown = shown.reset_index().drop(columns="level")
    shown.columns.name = None
    return shown


def full_models(models: Iterable[str] | str | None, full_slots: Iterable[str], key: str = "robustness.models",
                extra: Iterable[str] | str | None = None, extra_key: str = "robustness.extra_models") -> list[str]:
    """The models to test: the ones named (one label, e.g. from ``--params``, or a list), or else every
    phase-4 full run (``phase4.top<k>_full``); then ``extra`` ones not already listed (e.g. a phase-2 variant
    whose preprocessing was not adopted, to see whether it changes robustness).

    Raises:
        ValueError: Naming ``key`` (or ``extra_key``) when it is empty without a full run, or names a model
            other than as ``<phase>.<experiment>``.
    """
    models = [models] if isinstance(models, str) else models
    extra = [extra] if isinstance(extra, str) else list(extra or [])
    chosen = list(models) if models else [f"phase4.{slot}" for slot in full_slots]
    if not chosen:
        raise ValueError(f"{key} is empty and phase 4 has no full run; name models as <phase>.<experiment>")
    for where, labels in ((key, chosen), (extra_key, extra)):
        for label in labels:
            phase, _, experiment = str(label).partition(".")
            if not phase or not experiment:
                raise ValueError(f"{where}: {label!r} is not <phase>.<experiment>; write it e.g. as "
                                 f"phase4.top1_full or phase2.{label}")
    return chosen + [label for label in dict.fromkeys(extra) if label not in chosen]
