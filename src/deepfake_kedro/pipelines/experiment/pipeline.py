"""The experiment template: resolve config -> train folds -> evaluate, namespaced per experiment."""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_folds, resolve_config, train_folds

SHARED_INPUTS = {"fold_table", "image_cache", "face_cache"}
SHARED_PARAMETERS = {"params:defaults", "params:data", "params:preprocessing", "params:evaluation"}


def _bound(function, **kwargs):
    return update_wrapper(partial(function, **kwargs), function)


def experiment_pipeline(phase: str, experiment: str) -> Pipeline:
    """One experiment as a namespaced instance of the shared template.

    Args:
        phase: The phase (its parameters hold ``<phase>.experiments``).
        experiment: The experiment's name under ``<phase>.experiments``.

    Returns:
        Nodes under the namespace ``<phase>.<experiment>``.
    """
    template = Pipeline([
        Node(_bound(resolve_config, phase=phase, experiment=experiment),
             ["params:defaults", f"params:{phase}.experiments", "params:data", "params:preprocessing"],
             "resolved_config", name="resolve_config"),
        Node(train_folds, ["resolved_config", "fold_table", "image_cache", "face_cache", "params:data"], "fold_runs",
             name="train_folds"),
        Node(evaluate_folds, ["resolved_config", "fold_runs", "fold_table", "params:data", "params:evaluation"],
             ["oof_predictions", "fold_metrics", "metrics", "learning_curves"], name="evaluate_folds"),
    ])
    return Pipeline(
        template, namespace=f"{phase}.{experiment}", inputs=SHARED_INPUTS,
        parameters=SHARED_PARAMETERS | {f"params:{phase}.experiments"},
    )
