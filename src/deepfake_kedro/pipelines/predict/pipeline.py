"""The predict pipeline: ``kedro run --pipelines predict --params predict.input=PATH``."""

from kedro.pipeline import Node, Pipeline

from .nodes import draw_prediction_gallery, predict_inputs


def create_pipeline() -> Pipeline:
    """Scores ``predict.input`` with ``model_package``: predictions, frame scores and a Grad-CAM gallery."""
    nodes = [
        Node(predict_inputs, ["model_package", "params:predict", "params:preprocessing"],
             ["predictions", "frame_scores"], name="predict_inputs"),
        Node(draw_prediction_gallery, ["model_package", "predictions", "frame_scores", "params:predict",
                                       "params:preprocessing"], "prediction_gallery", name="draw_prediction_gallery"),
    ]
    # One group in kedro viz; catalog entries are predict.<name>, the package and parameters stay shared.
    return Pipeline(nodes, namespace="predict", inputs={"model_package"},
                    parameters={"params:predict", "params:preprocessing"})
