"""The robustness pipeline: ``kedro run --pipelines robustness`` after the study (outside ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import score_corruptions, summarize_robustness


def create_pipeline() -> Pipeline:
    """Re-scores every final model's out-of-fold images under corruptions, then tabulates, plots and reports."""
    nodes = [
        Node(score_corruptions, ["finished_experiments", "raw_images", "face_boxes", "params:robustness",
                                 "params:phase4"], "scores", name="score_corruptions"),
        Node(summarize_robustness, ["scores", "finished_experiments", "params:evaluation.n_bootstrap"],
             ["table", "figure", "robustness_report_section"], name="summarize_robustness"),
    ]
    shared = {"finished_experiments", "raw_images", "face_boxes"}
    # One group in kedro viz; its own datasets are robustness.scores / .table / .figure.
    return Pipeline(nodes, namespace="robustness", inputs=shared, outputs={"robustness_report_section"},
                    parameters={"params:robustness", "params:phase4", "params:evaluation.n_bootstrap"})
