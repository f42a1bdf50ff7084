"""External test sets: labelled image trees the study never saw, scored by each final model's fold ensemble.

An external set is a tree like the study's data (``root/<source>/**/<image>``) with its own ``sources`` map
(folder -> real / fake). Every usable image goes through the package's preprocessing (square crop, or the face
crop around a freshly detected MTCNN box for face-crop models) and is scored by the mean calibrated p(fake) of the
fold models, at the package's threshold. Metrics carry grouped bootstrap CIs (a group = an identity's basename joined
with its near-duplicates, as in the study), so they can be set beside the cross-validated AUC. A set's file
byte-identical to one of the study's own images (same content digest) is left out and listed: a final model may
have trained on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, f1_score

from deepfake_kedro.data_index import DataLayoutError, ImageTree, build_image_index, usable
from deepfake_kedro.face_crops import FaceDetector
from deepfake_kedro.metrics import grouped_bootstrap_ci, per_source_metrics, safe_auc
from deepfake_kedro.model_package import ModelPackage
from deepfake_kedro.near_duplicates import merge_groups

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ["set", "model", "path", "source", "label", "group", "p_fake", "spread", "fake"]
COPY_COLUMNS = ["set", "path", "study_path"]
_ENTRY_KEYS = {"name", "root", "sources", "generate"}


@dataclass(frozen=True)
class ExternalSet:
    """One external test set.

    Attributes:
        name: Its key (``data/08_reporting/external/sets/<name>/``).
        root: The image tree.
        sources: Folder -> ``real`` / ``fake``.
        generate: Arguments of ``demo_data.generate_demo_dataset`` when the tree is synthetic and generated on
            first use (the demo's entry); None for real data.
        own_sources: Whether the entry gave ``sources``; otherwise they are ``data.sources``.
    """

    name: str
    root: Path
    sources: dict[str, str]
    generate: dict[str, Any] | None = field(default=None)
    own_sources: bool = True

    @property
    def real_sources(self) -> list[str]:
        return [s for s, kind in self.sources.items() if kind == "real"]


def external_sets(entries: Sequence[Mapping[str, Any]] | None, data_sources: Mapping[str, str],
                  key: str = "evaluation.external") -> list[ExternalSet]:
    """Validates ``evaluation.external``: a list of ``{name, root, sources?, generate?}`` entries.

    Args:
        entries: The list (None or empty: no external set).
        data_sources: ``data.sources``, the default ``sources`` of an entry.
        key: Where the list lives, named in errors.

    Returns:
        The sets, in order.

    Raises:
        ValueError: Naming the entry and the missing, unknown or invalid key, or a repeated name.
    """
    sets = []
    for position, entry in enumerate(entries or []):
        where = f"{key}[{position}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a mapping with name, root and optionally sources, got {entry!r}")
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_ENTRY_KEYS)}")
        for required in ("name", "root"):
            if not entry.get(required):
                raise ValueError(f"{where}: missing {required!r} (each external set needs a name and a root folder)")
        sources = dict(entry.get("sources") or data_sources)
        kinds = set(sources.values())
        if not kinds <= {"real", "fake"} or kinds != {"real", "fake"}:
            raise ValueError(f"{where} ({entry['name']}): sources must map folders to 'real' / 'fake' with at least "
                             f"one of each, got {sources}")
        sets.append(ExternalSet(str(entry["name"]), Path(entry["root"]), sources, entry.get("generate"),
                                own_sources=bool(entry.get("sources"))))
    names = [s.name for s in sets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{key}: the set names {repeated} repeat; give every external set its own name")
    return sets


def open_tree(external: ExternalSet) -> ImageTree:
    """The set's image tree; a synthetic set (``generate``) is generated first, and again when its settings change.

    Raises:
        FileNotFoundError: A real set's root does not exist.
    """
    if external.generate is not None:
        from deepfake_kedro.demo_data import ensure_generated_tree

        ensure_generated_tree(external.root, {"sources": dict(external.sources), **external.generate},
                              what=f"synthetic external set {external.name!r}")
    elif not external.root.is_dir():
        raise FileNotFoundError(f"external set {external.name!r}: {external.root} does not exist; put the images "
                                "there as <root>/<source>/**/<image> or fix evaluation.external's root")
    return ImageTree(external.root)


def external_index(tree: ImageTree, external: ExternalSet, min_size: int = 32, hash_size: int | None = None,
                   max_distance: int | None = None) -> pd.DataFrame:
    """The set's usable images (``path``, ``source``, ``label``, ``group``, ``content`` digest), indexed and
    grouped as the study's are.

    Args:
        tree: The set's images.
        external: The set.
        min_size: Images with a smaller side are left out (``preprocessing.min_image_size``).
        hash_size: The square crop whose pHash finds near-duplicates (the study's largest ``image_sizes``).
        max_distance: pHash bits within which images join one group (``preprocessing.near_duplicates``); with
            ``hash_size``, a face swap carrying another identity's photo shares that identity's group, so the
            bootstrap resamples them together. None: groups are basenames alone.
    """
    grouped = hash_size is not None and max_distance is not None
    try:
        index = usable(build_image_index(tree, external.sources, min_size, key=f"evaluation.external[{external.name}]",
                                         hash_size=hash_size if grouped else None))
    except DataLayoutError as error:
        if external.own_sources:
            raise
        raise DataLayoutError(f"{error}; this entry sets no sources of its own, so these are data.sources: give "
                              f"it its own sources (folder: real / fake)") from error
    if index.empty:
        raise ValueError(f"external set {external.name!r}: no usable image under {external.root}")
    index = index.reset_index(drop=True)
    if grouped:
        merged, pairs = merge_groups(index, index["phash"].to_numpy().view(np.uint64), max_distance)
        if len(pairs):
            logger.info("external set %r: %d near-duplicate pairs join %d basename groups into %d", external.name,
                        len(pairs), index["group"].nunique(), merged.nunique())
        index["group"] = merged
    return index[["path", "source", "label", "group", "content"]]


def leave_out_study_copies(index: pd.DataFrame, study_index: pd.DataFrame, name: str
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The set's index without its files whose bytes are one of the study's own images, and those files.

    Byte-identical copies only (a re-encoded or resized copy has other bytes): what a set shares with the study
    through a copied folder or a subset of the same download. The study's models may have trained on them, so
    scoring them would flatter figures meant for images the study never saw.

    Args:
        index: ``external_index``'s rows (with ``content``).
        study_index: The study's image index (``path``, ``content``).
        name: The set's name, for the table and messages.

    Returns:
        The remaining rows, and the copies (``COPY_COLUMNS``: ``set``, ``path``, the study's ``study_path``).

    Raises:
        ValueError: Every image of the set is such a copy.
    """
    known = study_index.loc[study_index["content"].fillna("").astype(str) != "", ["content", "path"]]
    known = known.drop_duplicates("content").rename(columns={"path": "study_path"})
    copies = index[["path", "content"]].merge(known, on="content").assign(set=name)[COPY_COLUMNS]
    if len(copies):
        first = copies.iloc[0]
        if len(copies) == len(index):
            raise ValueError(f"external set {name!r}: every one of its {len(index)} images is a copy of one of the "
                             f"study's (first: {first['path']} = {first['study_path']}); an external set must hold "
                             "images the study never saw")
        logger.warning("external set %r: %d of %d images are byte-identical to the study's own (first: %s = %s); "
                       "they are left out and listed in external/study_copies.csv", name, len(copies), len(index),
                       first["path"], first["study_path"])
    return index[~index["path"].isin(copies["path"])].reset_index(drop=True), copies


def score_images(
    package: ModelPackage, index: pd.DataFrame, tree: ImageTree, faces: Mapping[str, Mapping[str, Any]],
    device: torch.device | str | None = None, chunk_size: int = 256,
) -> pd.DataFrame:
    """Ensemble scores of the set's images: ``p_fake`` (mean of the calibrated folds), ``spread``, ``fake`` (at the
    threshold).

    Args:
        package: The model.
        index: ``external_index``'s rows.
        tree: The set's images.
        faces: ``path`` -> MTCNN box (``detect_faces``) when the package crops faces; ignored otherwise.
        device: Where to predict (default: CUDA if present).
        chunk_size: Images rendered at once.

    Returns:
        ``index`` with ``p_fake``, ``spread`` and ``fake`` added.
    """
    parts = []
    for start in range(0, len(index), chunk_size):
        chunk = index.iloc[start:start + chunk_size]
        pixels = np.stack([package.render(tree.open_image(path), faces.get(path)) for path in chunk["path"]])
        parts.append(package.predict(pixels, device))
    scores = pd.concat(parts, ignore_index=True)
    return pd.concat([index.reset_index(drop=True), scores], axis=1)


def detect_faces(tree: ImageTree, paths: Sequence[str], detector: Callable[[Sequence[str]], list[dict]],
                 batch_size: int = 16) -> dict[str, dict]:
    """MTCNN boxes of ``paths`` (``face_crops.FaceDetector``), in batches; path -> box."""
    boxes: dict[str, dict] = {}
    for start in range(0, len(paths), batch_size):
        batch = list(paths[start:start + batch_size])
        boxes.update(zip(batch, detector(batch), strict=True))
    return boxes


def detect_set_faces(tree: ImageTree, paths: Sequence[str], detection: Mapping[str, Any]) -> dict[str, dict]:
    """MTCNN boxes of a set's images with the study's ``preprocessing.face_detection`` settings; path -> box.

    ``batch_size: null`` means the device's default, as in preprocessing.
    """
    detector = FaceDetector(tree, detection["min_confidence"], detection.get("device"))
    return detect_faces(tree, paths, detector, detector.batch_size(detection.get("batch_size")))


def _rate_ci(hits: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile 95% CI of a rate, resampling whole groups (an identity's images together)."""
    _, inverse = np.unique(groups, return_inverse=True)
    sums, counts = np.bincount(inverse, weights=hits), np.bincount(inverse)
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, counts.size, size=(n_boot, counts.size))
    rates = sums[picked].sum(axis=1) / counts[picked].sum(axis=1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def set_metrics(scores: pd.DataFrame, real_sources: Sequence[str], threshold: float, n_bootstrap: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """AUC, accuracy and F1 at ``threshold``, per-source detection / false-alarm rates, each with a grouped CI.

    Args:
        scores: One model's ``score_images`` rows on one set.
        real_sources: The set's real folders.
        threshold: The package's threshold (images with ``p_fake >= threshold`` are called fake).
        n_bootstrap: Group resamples per interval.
        seed: Bootstrap seed.

    Returns:
        ``n_images``, ``threshold``, ``auc`` / ``accuracy`` / ``f1`` with ``<metric>_ci_low`` / ``_ci_high``,
        and per source ``detection_rate:<fake>`` or ``false_alarm_rate:<real>`` with their CIs and ``n:<source>``.
    """
    y, p, groups = scores["label"].to_numpy(int), scores["p_fake"].to_numpy(float), scores["group"].to_numpy()
    metrics: dict[str, Any] = {"n_images": len(scores), "threshold": float(threshold)}
    measures = {
        "auc": safe_auc,
        "accuracy": lambda t, q: accuracy_score(t, q >= threshold),
        "f1": lambda t, q: f1_score(t, q >= threshold, labels=[0, 1], zero_division=0.0),
    }
    for name, measure in measures.items():
        metrics[name] = float(measure(y, p))
        low, high = grouped_bootstrap_ci(y, p, groups, metric=measure, n_boot=n_bootstrap, seed=seed)
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high
    per_source = per_source_metrics(y, p, scores["source"], real_sources, threshold)
    for key, value in per_source.items():
        kind, _, source = key.partition(":")
        if kind in {"detection_rate", "false_alarm_rate", "n"}:
            metrics[key] = value
        if kind in {"detection_rate", "false_alarm_rate"}:
            rows = (scores["source"] == source).to_numpy()
            low, high = _rate_ci((p[rows] >= threshold).astype(float), groups[rows], n_bootstrap, seed)
            metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = low, high
    return metrics


def cv_auc(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A model's cross-validated AUC from its metrics.json: the fold mean with its t-interval, and pooled."""
    folds = metrics.get("metrics", {}).get("auc", {})
    pooled = metrics.get("pooled", {})
    return {"cv_auc": folds.get("mean", np.nan), "cv_auc_ci_low": folds.get("ci_low", np.nan),
            "cv_auc_ci_high": folds.get("ci_high", np.nan), "cv_pooled_auc": pooled.get("auc", np.nan)}


def external_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]],
                   cv: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per external set × model: AUC / accuracy / F1 with CIs beside the model's CV AUC and its CI.

    Args:
        results: Set -> model -> ``set_metrics``.
        cv: Model -> its metrics.json.

    Returns:
        The table; ``within_cv_ci`` says whether the external AUC lies in the CV AUC's 95% t-interval.
    """
    rows = []
    for name, models in results.items():
        for model, metrics in models.items():
            row = {"set": name, "model": model, **{k: metrics[k] for k in (
                "n_images", "auc", "auc_ci_low", "auc_ci_high", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                "f1", "f1_ci_low", "f1_ci_high", "threshold")}, **cv_auc(cv[model])}
            row["within_cv_ci"] = bool(row["cv_auc_ci_low"] <= row["auc"] <= row["cv_auc_ci_high"])
            rows.append(row)
    return pd.DataFrame(rows)


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The report's table: per set and model, the external AUC [CI], accuracy and F1, beside the CV AUC [CI]."""

    def with_ci(row: pd.Series, prefix: str) -> str:
        return f"{row[prefix]:.3f} [{row[prefix + '_ci_low']:.3f}, {row[prefix + '_ci_high']:.3f}]"

    return pd.DataFrame({
        "set": table["set"], "model": table["model"], "images": table["n_images"],
        "external AUC": [with_ci(r, "auc") for _, r in table.iterrows()],
        "accuracy": [with_ci(r, "accuracy") for _, r in table.iterrows()],
        "F1": [with_ci(r, "f1") for _, r in table.iterrows()],
        "CV AUC": [with_ci(r, "cv_auc") for _, r in table.iterrows()],
        "in CV CI": table["within_cv_ci"].map({True: "yes", False: "no"}),
    })


def external_figure(table: pd.DataFrame) -> Figure:
    """External AUC (grouped bootstrap 95% CI) per set and model, beside the CV AUC's 95% interval."""
    figure = plt.figure(figsize=(max(6.0, 1.6 * len(table) + 2), 3.6), layout="constrained")
    ax = figure.subplots()
    if table.empty:
        ax.text(0.5, 0.5, "no external set (evaluation.external is empty)", ha="center", va="center")
        ax.axis("off")
        return figure
    positions = np.arange(len(table))
    ax.bar(positions, table["cv_auc_ci_high"] - table["cv_auc_ci_low"], bottom=table["cv_auc_ci_low"], width=0.6,
           color="lightgrey", label="cross-validated AUC, 95% CI")
    ax.hlines(table["cv_auc"], positions - 0.3, positions + 0.3, color="grey")
    errors = np.vstack([table["auc"] - table["auc_ci_low"], table["auc_ci_high"] - table["auc"]])
    ax.errorbar(positions, table["auc"], yerr=np.clip(errors, 0, None), fmt="o", color="C3", capsize=4,
                label="external AUC, grouped bootstrap 95% CI")
    ax.set_xticks(positions, [f"{s}\n{m}" for s, m in zip(table["set"], table["model"], strict=True)], fontsize=7)
    ax.set_ylabel("ROC AUC")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Cross-dataset: external test sets vs cross-validation", fontsize=10)
    return figure
