"""The external pipeline: ``kedro run --pipelines external`` after the study (outside ``__default__``)."""

from kedro.pipeline import Node, Pipeline

from .nodes import score_external_sets, summarize_external


def create_pipeline() -> Pipeline:
    """Scores every ``evaluation.external`` set with every final model, then tabulates, plots and reports."""
    nodes = [
        Node(score_external_sets, ["finished_experiments", "image_index", "params:evaluation", "params:data",
                                   "params:preprocessing", "params:phase4"], ["scores", "study_copies"],
             name="score_external_sets"),
        Node(summarize_external, ["scores", "study_copies", "finished_experiments", "params:evaluation",
                                  "params:data"],
             ["metrics", "table", "figure", "external_report_section"], name="summarize_external"),
    ]
    # One group in kedro viz; its own datasets are external.scores / .metrics / .table / .figure.
    return Pipeline(nodes, namespace="external", inputs={"finished_experiments", "image_index"},
                    outputs={"external_report_section"},
                    parameters={"params:evaluation", "params:data", "params:preprocessing", "params:phase4"})
