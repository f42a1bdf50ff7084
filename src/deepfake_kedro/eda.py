"""Data audit: what the images look like per source, and whether file metadata alone gives the label away."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from deepfake_kedro.metrics import safe_auc, summarize

logger = logging.getLogger(__name__)

METADATA_FEATURES = ["width", "height", "aspect", "megapixels", "bytes", "bytes_per_pixel", "jpeg_quality",
                     "exif_turned"]


def counts_per_source(index: pd.DataFrame) -> pd.DataFrame:
    """Files per source and label, with how many are usable."""
    table = index.groupby(["source", "label_name"]).agg(
        files=("path", "size"), usable=("status", lambda s: int((s == "ok").sum()))
    ).reset_index()
    table["excluded"] = table["files"] - table["usable"]
    return table


def data_quality_summary(index: pd.DataFrame, near_duplicates: Mapping[str, Any]) -> dict[str, Any]:
    """Files, usable and excluded counts (per source and status), the excluded and noted files.

    Args:
        index: The image index (``path``, ``source``, ``status``, ``reason``).
        near_duplicates: The near-duplicate grouping summary, passed through.

    Returns:
        A JSON-ready summary.
    """
    statuses = index.groupby(["source", "status"]).size().unstack(fill_value=0)
    notes = index[(index["status"] == "ok") & (index["reason"] != "")]
    return {
        "files": int(len(index)),
        "usable": int((index["status"] == "ok").sum()),
        "excluded": int((index["status"] != "ok").sum()),
        "status_per_source": {s: {k: int(v) for k, v in row.items()} for s, row in statuses.iterrows()},
        "excluded_files": index.loc[index["status"] != "ok", ["path", "status", "reason"]].to_dict(orient="records"),
        "converted_or_noted": notes[["path", "reason"]].to_dict(orient="records"),
        "near_duplicates": near_duplicates,
    }


def metadata_features(index: pd.DataFrame) -> pd.DataFrame:
    """Numeric file-metadata features per image plus one-hot mode and format."""
    features = pd.DataFrame(index=index.index)
    features["width"] = index["width"].astype(float)
    features["height"] = index["height"].astype(float)
    features["aspect"] = features["width"] / features["height"].replace(0, np.nan)
    features["megapixels"] = features["width"] * features["height"] / 1e6
    features["bytes"] = index["bytes"].astype(float)
    features["bytes_per_pixel"] = features["bytes"] / (features["width"] * features["height"]).replace(0, np.nan)
    features["jpeg_quality"] = index["jpeg_quality"].astype(float)
    # Camera photos carry an EXIF turn, generated images never do: a tag alone can give the label away.
    orientation = index["orientation"] if "orientation" in index else pd.Series(1, index=index.index)
    features["exif_turned"] = (orientation.fillna(1).astype(int) != 1).astype(float)
    for column in ("mode", "format"):
        for value in sorted(index[column].fillna("").unique()):
            features[f"{column}={value}"] = (index[column] == value).astype(float)
    return features


def image_statistics(index: pd.DataFrame) -> pd.DataFrame:
    """Per source: distribution of width, height, aspect, bytes and JPEG quality (describe())."""
    features = metadata_features(index)[["width", "height", "aspect", "bytes", "jpeg_quality"]]
    described = features.groupby(index["source"]).describe(percentiles=[0.05, 0.5, 0.95])
    described.columns = [f"{feature}_{stat}" for feature, stat in described.columns]
    return described.reset_index()


def shortcut_audit(
    images: pd.DataFrame, fold_table: pd.DataFrame, warn_above: float = 0.75, seed: int = 0
) -> tuple[dict, pd.DataFrame]:
    """How well file metadata alone separates real from fake, with the study's own grouped folds.

    Args:
        images: Usable rows of the image index.
        fold_table: The fold table (``path``, ``fold``).
        warn_above: AUC above which the label leaks through the file format.
        seed: Seed of the classifier.

    Returns:
        The audit (``auc``, ``auc_ci_low``, ``auc_ci_high``, per-fold AUCs, ``features``, ``warning``) and
        the out-of-fold scores.
    """
    data = images.merge(fold_table[["path", "fold"]], on="path")
    features = metadata_features(data)
    labels = data["label"].to_numpy()
    scores = np.full(len(data), np.nan)
    fold_aucs = []
    folds = sorted(data["fold"].unique())
    for number, fold in enumerate(folds, start=1):
        test = data["fold"].to_numpy() == fold
        # Every core: the trees are independent, and random_state fixes each tree whatever the cores.
        model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=-1)
        model.fit(features[~test], labels[~test])
        scores[test] = model.predict_proba(features[test])[:, 1]
        fold_aucs.append(safe_auc(labels[test], scores[test]))
        logger.info("Shortcut audit: fold %d/%d (%d train, %d test images) metadata-only AUC %.3f", number,
                    len(folds), int((~test).sum()), int(test.sum()), fold_aucs[-1])
    summary = summarize(fold_aucs, bounds=(0.0, 1.0))
    audit = {
        "auc": summary["mean"], "auc_std": summary["std"], "auc_ci_low": summary["ci_low"],
        "auc_ci_high": summary["ci_high"], "fold_aucs": fold_aucs,
        "pooled_auc": safe_auc(labels, scores), "features": list(features.columns),
        "classifier": "sklearn RandomForestClassifier (200 trees), grouped outer folds of the fold table",
        "warn_above": warn_above, "warning": bool(summary["mean"] > warn_above),
    }
    if audit["warning"]:
        logger.warning(
            "SHORTCUT: file metadata alone separates real from fake with AUC %.3f (95%% CI %.3f-%.3f). "
            "The label leaks through size / JPEG quality / file format; models may learn it instead of faces.",
            audit["auc"], audit["auc_ci_low"], audit["auc_ci_high"],
        )
    else:
        logger.info("Shortcut audit: metadata-only AUC %.3f (95%% CI %.3f-%.3f)", audit["auc"],
                    audit["auc_ci_low"], audit["auc_ci_high"])
    return audit, data[["path", "source", "label", "fold"]].assign(score=scores)


def colour_statistics(pixels_by_source: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per source and channel: mean and std of pixel values in [0, 1]."""
    rows = []
    for source, pixels in pixels_by_source.items():
        values = pixels.reshape(-1, 3).astype(np.float64) / 255.0
        for channel, name in enumerate("RGB"):
            rows.append({"source": source, "channel": name, "mean": values[:, channel].mean(),
                         "std": values[:, channel].std()})
    return pd.DataFrame(rows)


def sample_rows(images: pd.DataFrame, per_source: int, seed: int = 0) -> dict[str, Sequence[str]]:
    """A reproducible sample of image paths per source."""
    return {source: rows.sample(min(per_source, len(rows)), random_state=seed)["path"].tolist()
            for source, rows in images.groupby("source", sort=True)}
