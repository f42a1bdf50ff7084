"""The preprocessing pipeline: raw images -> index -> fold table and square-crop caches."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_folds, index_images, plan_square_caches


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(index_images, ["raw_images", "params:data", "params:preprocessing"],
             ["image_index", "integrity_report"], name="index_images"),
        Node(build_folds, ["image_index", "params:defaults"], "fold_table", name="build_fold_table"),
        Node(plan_square_caches, ["image_index", "raw_images", "params:preprocessing"], "image_cache",
             name="build_square_caches"),
    ])
