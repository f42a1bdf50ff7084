"""The generalisation pipeline: one experiment per fake source (real + that source), then the transfer matrix."""

from kedro.pipeline import Node, Pipeline

from deepfake_kedro.pipelines.experiment import experiment_pipeline

from .nodes import analyse_transfer

PHASE = "generalisation"


def create_pipeline(experiments: list[str]) -> Pipeline:
    """Namespaced experiment instances (``generalisation.<experiment>``) and the node comparing them.

    Args:
        experiments: The experiments of ``generalisation.experiments``, one per fake source.

    Returns:
        The pipeline; its analysis writes ``generalisation.transfer_*`` and ``generalisation_report_section``.
    """
    instances = sum((experiment_pipeline(PHASE, name) for name in experiments), Pipeline([]))
    # Under the namespace, "gen_x.metrics" resolves to the experiment's "generalisation.gen_x.metrics".
    analysis = Node(analyse_transfer, {"generalisation": f"params:{PHASE}", "data": "params:data",
                                       "finished_experiments": "finished_experiments",
                                       **{name: f"{name}.metrics" for name in experiments}},
                    ["transfer_matrix", "transfer_tests", "transfer_md", "transfer_heatmap",
                     "generalisation_report_section"], name="analyse_transfer")
    return instances + Pipeline([analysis], namespace=PHASE, inputs={"finished_experiments"},
                                outputs={"generalisation_report_section"},
                                parameters={f"params:{PHASE}", "params:data"})
