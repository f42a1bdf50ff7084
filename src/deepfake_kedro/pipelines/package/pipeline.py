"""The package pipeline: ``kedro run --pipelines package [--params predict.model=<phase>.<experiment>]``."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_model_package


def create_pipeline() -> Pipeline:
    """One node reading a finished experiment's results and writing its ``model_package`` folder."""
    return Pipeline([Node(build_model_package, ["finished_experiments", "params:predict", "params:preprocessing"],
                          "model_package", name="build_model_package")])
