"""The eda pipeline: everything under <data_dir>/08_reporting/eda/, its datasets named ``eda.*`` by the namespace."""

from kedro.pipeline import Node, Pipeline

from .nodes import audit_metadata_shortcut, colour_and_samples, data_quality, describe_images


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        Node(describe_images, "image_index", ["counts", "image_statistics", "metadata_figure"],
             name="describe_images"),
        Node(data_quality, ["image_index", "near_duplicate_summary"], "data_quality", name="data_quality"),
        Node(audit_metadata_shortcut, ["image_index", "fold_table", "params:eda"],
             ["shortcut_audit", "shortcut_scores"], name="audit_metadata_shortcut"),
        Node(colour_and_samples, ["image_index", "raw_images", "params:eda", "params:preprocessing"],
             ["colour_statistics", "colour_figure", "sample_grid"], name="colour_and_samples"),
    ]
    # The namespace prefixes outputs and node names with "eda."; the shared study data keeps its name.
    return Pipeline(nodes, namespace="eda",
                    inputs={"image_index", "near_duplicate_summary", "fold_table", "raw_images"},
                    parameters={"params:eda", "params:preprocessing"})
