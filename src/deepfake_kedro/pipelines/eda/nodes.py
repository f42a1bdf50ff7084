"""Nodes of the eda pipeline: thin adapters over ``deepfake_kedro.eda`` and the figures module."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from deepfake_kedro import eda
from deepfake_kedro.data_index import usable
from deepfake_kedro.figures import colour_histograms, metadata_distributions, sample_grid
from deepfake_kedro.image_cache import ImageStack

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
    image_index: pd.DataFrame, image_cache: Mapping[str, ImageStack], eda_params: dict[str, Any],
    preprocessing: dict[str, Any],
) -> tuple[pd.DataFrame, Figure, Figure]:
    """Colour statistics and histograms per source, and a sample grid, from the largest configured square cache."""
    stack = image_cache[f"square_{max(preprocessing['image_sizes'])}"]
    images = usable(image_index)
    colour_paths = eda.sample_rows(images, eda_params["colour_images_per_source"])
    pixels = {s: np.asarray(stack.array[np.sort(stack.rows(paths))]) for s, paths in colour_paths.items()}
    grid_paths = eda.sample_rows(images, eda_params["grid_images_per_source"], seed=1)
    grid = {s: np.asarray(stack.array[stack.rows(paths)]) for s, paths in grid_paths.items()}
    return (eda.colour_statistics(pixels), colour_histograms(pixels),
            sample_grid(grid, f"Samples per source ({stack.size} px square crops)"))
