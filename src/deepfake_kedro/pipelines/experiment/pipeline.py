"""The experiment template: resolve config -> plan fold runs -> evaluate -> analyse errors, namespaced per experiment.

Training happens when the ``fold_runs`` dataset (``TrainedFoldsDataset``) saves the plan (docs/architecture.md).
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from .nodes import (
    analyse_errors,
    evaluate_folds,
    explain_predictions,
    plan_fold_runs,
    resolve_config,
    resolve_final_model,
    resolve_with_preprocessing,
    sweep_thresholds,
)

SHARED_INPUTS = {"fold_table", "image_cache", "face_cache", "face_boxes"}
SHARED_PARAMETERS = {"params:defaults", "params:data", "params:preprocessing", "params:evaluation"}
PREPROCESSING_CHOICE = "phase2.preprocessing_choice"
MODEL_SELECTION = "phase4.model_selection"
FINAL_TRAINING = "params:phase4.training"


def _bound(function, **kwargs):
    return update_wrapper(partial(function, **kwargs), function)


def _template(resolve: Node) -> list[Node]:
    return [
        resolve,
        Node(plan_fold_runs, ["resolved_config", "fold_table", "image_cache", "face_cache", "params:data"],
             "fold_runs", name="plan_fold_runs"),
        Node(evaluate_folds, ["resolved_config", "fold_runs", "fold_table", "params:data", "params:evaluation",
                              "image_cache", "face_cache"],
             ["oof_predictions", "fold_metrics", "metrics", "learning_curves"], name="evaluate_folds"),
        Node(sweep_thresholds, ["resolved_config", "oof_predictions"], "threshold_sweep", name="sweep_thresholds"),
        Node(analyse_errors, ["resolved_config", "oof_predictions", "image_cache", "face_cache", "params:evaluation"],
             ["hard_examples", "hard_examples_figure", "confidence_histograms", "reliability"], name="analyse_errors"),
        Node(explain_predictions,
             ["resolved_config", "fold_runs", "oof_predictions", "image_cache", "face_cache", "face_boxes",
              "params:evaluation"],
             ["gradcam_overlays", "gradcam_gallery", "gradcam_examples"], name="explain_predictions"),
    ]


def experiment_pipeline(phase: str, experiment: str, adopt_preprocessing: bool = False) -> Pipeline:
    """One experiment as a namespaced instance of the shared template.

    Args:
        phase: The phase (its parameters hold ``<phase>.experiments``).
        experiment: The experiment's name under ``<phase>.experiments``.
        adopt_preprocessing: Lay phase 2's chosen preprocessing over the experiment (phase 3).

    Returns:
        Nodes under the namespace ``<phase>.<experiment>``.
    """
    inputs = ["params:defaults", f"params:{phase}.experiments", "params:data", "params:preprocessing"]
    if adopt_preprocessing:
        resolve = Node(_bound(resolve_with_preprocessing, phase=phase, experiment=experiment),
                       [*inputs, PREPROCESSING_CHOICE], "resolved_config", name="resolve_with_preprocessing")
    else:
        resolve = Node(_bound(resolve_config, phase=phase, experiment=experiment), inputs, "resolved_config",
                       name="resolve_config")
    return Pipeline(
        _template(resolve), namespace=f"{phase}.{experiment}",
        inputs=SHARED_INPUTS | ({PREPROCESSING_CHOICE} if adopt_preprocessing else set()),
        parameters=SHARED_PARAMETERS | {f"params:{phase}.experiments"},
    )


def final_model_pipeline(slot: str, subsample: float) -> Pipeline:
    """A phase-4 slot (``top<k>_<suffix>``): whichever model the ranking put at rank k, at one data fraction.

    Args:
        slot: The slot, also the namespace ``phase4.<slot>``.
        subsample: Fraction of each fold's train and val groups (the test fold stays whole).

    Returns:
        Nodes under the namespace ``phase4.<slot>``.
    """
    resolve = Node(
        _bound(resolve_final_model, slot=slot, subsample=subsample),
        ["params:defaults", "params:data", "params:preprocessing", PREPROCESSING_CHOICE, MODEL_SELECTION,
         FINAL_TRAINING],
        "resolved_config", name="resolve_final_model",
    )
    return Pipeline(
        _template(resolve), namespace=f"phase4.{slot}",
        inputs=SHARED_INPUTS | {PREPROCESSING_CHOICE, MODEL_SELECTION}, parameters=SHARED_PARAMETERS | {FINAL_TRAINING},
    )
