"""The attribution pipeline: ``attribution.flat`` and ``attribution.hierarchical`` (resolve -> train -> evaluate),
then their comparison, confusion matrices, Grad-CAM and report section under ``attribution``."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from deepfake_kedro.attribution import APPROACHES

from .nodes import compare, evaluate, explain, plan_runs, plot_confusion, report_section, resolve_models

SHARED_INPUTS = {"fold_table", "image_cache", "face_cache"}
PARAMETERS = {"params:defaults", "params:data", "params:preprocessing", "params:attribution"}


def _bound(function, **kwargs):
    return update_wrapper(partial(function, **kwargs), function)


def approach_pipeline(approach: str) -> Pipeline:
    """One approach's models trained on the study's folds, evaluated out of fold, as ``attribution.<approach>``."""
    nodes = [
        Node(_bound(resolve_models, approach=approach),
             ["params:defaults", "params:data", "params:preprocessing", "params:attribution"], "models",
             name="resolve_models"),
        Node(plan_runs, ["models", "fold_table", "image_cache", "face_cache", "params:data"], "fold_runs",
             name="plan_runs"),
        Node(_bound(evaluate, approach=approach),
             ["models", "fold_runs", "fold_table", "image_cache", "face_cache", "params:data"],
             ["oof_predictions", "fold_metrics", "metrics", "confusion_matrix"], name="evaluate"),
    ]
    return Pipeline(nodes, namespace=f"attribution.{approach}", inputs=SHARED_INPUTS, parameters=PARAMETERS)


def create_pipeline(**kwargs) -> Pipeline:
    """Both approaches, then the paired comparison, the confusion figure, Grad-CAM and the report section."""
    approaches = sum((approach_pipeline(a) for a in APPROACHES), Pipeline([]))
    # Under the namespace, "flat.metrics" resolves to "attribution.flat.metrics".
    nodes = [
        Node(compare, ["flat.fold_metrics", "hierarchical.fold_metrics"], "paired_tests", name="compare"),
        Node(plot_confusion, ["flat.metrics", "hierarchical.metrics"], "confusion_figure", name="plot_confusion"),
        Node(explain, ["flat.models", "flat.fold_runs", "flat.oof_predictions", "image_cache", "face_cache",
                       "params:attribution"], "gradcam_gallery", name="explain"),
        Node(report_section, ["flat.metrics", "hierarchical.metrics", "paired_tests"], "attribution_report_section",
             name="report_section"),
    ]
    comparison = Pipeline(nodes, namespace="attribution", inputs={"image_cache", "face_cache"},
                          outputs={"attribution_report_section"}, parameters={"params:attribution"})
    return approaches + comparison
