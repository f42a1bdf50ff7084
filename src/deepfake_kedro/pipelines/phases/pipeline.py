"""A phase: every experiment named under ``<phase>.experiments`` plus the phase comparison."""

from kedro.pipeline import Node, Pipeline

from deepfake_kedro.pipelines.experiment import experiment_pipeline

from .nodes import compare_experiments


def phase_pipeline(phase: str, experiments: list[str], external: list[str] | None = None) -> Pipeline:
    """Namespaced experiment instances and the node comparing them.

    Args:
        phase: The phase name (``phase1`` ...).
        experiments: Experiment names, as in ``<phase>.experiments`` of the parameters.
        external: Experiments of other phases its comparisons use, as ``<phase>.<experiment>``.

    Returns:
        The phase pipeline.
    """
    external = external or []
    instances = sum((experiment_pipeline(phase, name) for name in experiments), Pipeline([]))
    compare = Node(
        compare_experiments,
        {"phase": f"params:{phase}", **{name: f"{name}.metrics" for name in experiments},
         **{name: f"{name}.metrics" for name in external}},
        ["comparison", "comparison_md", "paired_tests", "paired_tests_md", "comparison_figure"],
        name="compare_experiments",
    )
    # Under the phase's namespace, "p1_x.metrics" resolves to the experiment's "phase1.p1_x.metrics".
    return instances + Pipeline([compare], namespace=phase, parameters={f"params:{phase}"},
                                inputs={f"{name}.metrics" for name in external})
