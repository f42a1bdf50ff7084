"""Nodes of the eda pipeline: thin adapters over ``deepfake_kedro.eda`` and the figures module."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro import eda
from deepfake_kedro.data_index import ImageTree, decode_squares, usable
from deepfake_kedro.figures import colour_histograms, metadata_distributions, sample_grid

logger = logging.getLogger(__name__)


def describe_images(image_index: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, Figure]:
    """Counts per source and label, metadata statistics per source, and their histograms."""
    images = usable(image_index)
    return (eda.counts_per_source(image_index), eda.image_statistics(images),
            metadata_distributions(images, eda.metadata_features(images)))


def data_quality(image_index: pd.DataFrame, near_duplicate_summary: dict[str, Any]) -> dict[str, Any]:
    """A summary of the integrity report and of the near-duplicate merging."""
    return eda.data_quality_summary(image_index, near_duplicate_summary)


def audit_metadata_shortcut(
    image_index: pd.DataFrame, fold_table: pd.DataFrame, eda_params: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metadata-only classifier under the study's grouped folds; warns loudly when its AUC is high."""
    return eda.shortcut_audit(usable(image_index), fold_table, eda_params["shortcut_warn_above"])


def colour_and_samples(
    image_index: pd.DataFrame, raw_images: ImageTree, eda_params: dict[str, Any], preprocessing: dict[str, Any],
) -> tuple[pd.DataFrame, Figure, Figure]:
    """Colour statistics and histograms per source, and a sample grid, from square crops at the largest size.

    The few sampled images are decoded from the raw tree (the pixels the square cache holds), so the audit
    renders no cache.
    """
    size = max(preprocessing["image_sizes"])
    images = usable(image_index)
    position = {path: row for row, path in enumerate(images["path"])}
    colour_paths = eda.sample_rows(images, eda_params["colour_images_per_source"])
    # Index order, as the cache rows were read before: the statistics sum in the same order.
    pixels = {s: decode_squares(raw_images, sorted(paths, key=position.__getitem__), size)
              for s, paths in colour_paths.items()}
    grid_paths = eda.sample_rows(images, eda_params["grid_images_per_source"], seed=1)
    grid = {s: decode_squares(raw_images, paths, size) for s, paths in grid_paths.items()}
    return (eda.colour_statistics(pixels), colour_histograms(pixels),
            sample_grid(grid, f"Samples per source ({size} px square crops)"))
