"""The eda pipeline: everything under data/08_reporting/eda/."""

from kedro.pipeline import Node, Pipeline

from .nodes import audit_metadata_shortcut, colour_and_samples, data_quality, describe_images


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(describe_images, "image_index", ["eda.counts", "eda.image_statistics", "eda.metadata_figure"],
             name="describe_images"),
        Node(data_quality, ["image_index", "near_duplicate_summary"], "eda.data_quality", name="data_quality"),
        Node(audit_metadata_shortcut, ["image_index", "fold_table", "params:eda"],
             ["eda.shortcut_audit", "eda.shortcut_scores"], name="audit_metadata_shortcut"),
        Node(colour_and_samples, ["image_index", "image_cache", "params:eda"],
             ["eda.colour_statistics", "eda.colour_figure", "eda.sample_grid"], name="colour_and_samples"),
    ])
