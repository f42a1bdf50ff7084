"""The preprocessing pipeline: raw images -> index -> fold table (the audit), then square and face-crop caches.

The audit part (index, hashes, near-duplicate groups, folds) is all ``eda`` needs: it decodes each new or
changed image once (integrity, metadata and pHash together) and renders nothing. The cache part is what
training reads. ``audit_images`` and the ``plan_*`` nodes return plans; their datasets execute them on save
(decode new files, render cache images, run MTCNN), doing only the work not done yet (docs/architecture.md).
"""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    audit_images,
    augmentation_figure,
    build_folds,
    face_crop_figure,
    group_near_duplicates,
    hash_images,
    index_images,
    plan_face_caches,
    plan_face_detection,
    plan_square_caches,
    summarize_face_detection,
)


def _grouped(nodes: list[Node]) -> Pipeline:
    """The nodes under the ``preprocessing`` namespace (a group in kedro viz); every dataset keeps its name."""
    plain = Pipeline(nodes)
    parameters = {name for name in plain.inputs() if name.startswith("params:")}
    return Pipeline(nodes, namespace="preprocessing", inputs=plain.inputs() - parameters,
                    outputs=plain.all_outputs(), parameters=parameters)


def audit_pipeline() -> Pipeline:
    """Audit table, index, integrity report, perceptual hashes, near-duplicate groups and folds: no cache, no faces."""
    return _grouped([
        Node(audit_images, ["raw_images", "params:data", "params:preprocessing", "params:defaults"], "image_audit",
             name="audit_images"),
        Node(index_images, ["image_audit", "raw_images", "params:data", "params:defaults"],
             ["image_index", "integrity_report"], name="index_images"),
        Node(hash_images, ["image_index", "image_audit"], "perceptual_hashes", name="hash_images"),
        Node(group_near_duplicates, ["image_index", "perceptual_hashes", "params:preprocessing"],
             ["image_groups", "near_duplicate_pairs", "near_duplicate_summary"], name="group_near_duplicates"),
        Node(build_folds, ["image_index", "image_groups", "params:defaults"], "fold_table", name="build_folds"),
    ])


def cache_pipeline() -> Pipeline:
    """Square-crop caches, MTCNN face boxes, face-crop caches and their figures: what training reads."""
    return _grouped([
        Node(plan_square_caches, ["image_index", "raw_images", "params:preprocessing"], "image_cache",
             name="plan_square_caches"),
        Node(plan_face_detection, ["image_index", "raw_images", "params:preprocessing"], "face_boxes",
             name="plan_face_detection"),
        Node(plan_face_caches, ["image_index", "raw_images", "face_boxes", "params:preprocessing"], "face_cache",
             name="plan_face_caches"),
        Node(summarize_face_detection, ["face_boxes", "image_index"], "face_detection",
             name="summarize_face_detection"),
        Node(face_crop_figure, ["face_boxes", "image_index", "raw_images", "params:preprocessing"],
             "face_crop_figure", name="face_crop_figure"),
        Node(augmentation_figure, ["image_cache", "params:preprocessing"], "augmentation_figure",
             name="augmentation_figure"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    """The whole preprocessing: the audit and the caches."""
    return audit_pipeline() + cache_pipeline()
