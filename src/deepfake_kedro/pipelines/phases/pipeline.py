"""Phase pipelines: namespaced experiments, the phase's comparison, and the choices between phases."""

from kedro.pipeline import Node, Pipeline

from deepfake_kedro.pipelines.experiment import experiment_pipeline, final_model_pipeline
from deepfake_kedro.pipelines.experiment.pipeline import PREPROCESSING_CHOICE
from deepfake_kedro.study import phase4_slots

from .nodes import (
    analyse_scaling,
    choose_final_models,
    choose_preprocessing,
    compare_costs,
    compare_experiments,
    compare_final_models,
    gather_explained,
    gather_metrics,
)

COMPARISON_OUTPUTS = ["comparison", "comparison_md", "paired_tests", "paired_tests_md", "comparison_figure",
                      "source_heatmap", "source_effects"]


def phase_pipeline(
    phase: str, experiments: list[str], external: list[str] | None = None, adopt_preprocessing: bool = False
) -> Pipeline:
    """Namespaced experiment instances and the node comparing them.

    Args:
        phase: The phase name (``phase1`` ...).
        experiments: Experiment names, as in ``<phase>.experiments`` of the parameters.
        external: Experiments of other phases its comparisons use, as ``<phase>.<experiment>``.
        adopt_preprocessing: Experiments take phase 2's chosen preprocessing (phase 3).

    Returns:
        The phase pipeline; phase 2 adds the preprocessing choice, phase 3 the cost table.
    """
    external = external or []
    instances = sum((experiment_pipeline(phase, name, adopt_preprocessing) for name in experiments), Pipeline([]))
    summaries = {**{name: f"{name}.metrics" for name in experiments}, **{name: f"{name}.metrics" for name in external}}
    nodes = [Node(compare_experiments, {"phase": f"params:{phase}", "data": "params:data", **summaries},
                  COMPARISON_OUTPUTS, name="compare_experiments")]
    nodes += gather_nodes(phase, experiments)
    if phase == "phase2":
        nodes.append(Node(choose_preprocessing, ["paired_tests", "params:phase2.selection"], "preprocessing_choice",
                          name="choose_preprocessing"))
    if phase == "phase3":
        nodes.append(Node(compare_costs, summaries, ["model_costs", "cost_figure"], name="compare_costs"))
    # Under the phase's namespace, "p1_x.metrics" resolves to the experiment's "phase1.p1_x.metrics".
    parameters = {f"params:{phase}", "params:data"} | ({"params:phase2.selection"} if phase == "phase2" else set())
    return instances + Pipeline(nodes, namespace=phase, parameters=parameters,
                                inputs={f"{name}.metrics" for name in external})


def gather_nodes(phase: str, experiments: list[str]) -> list[Node]:
    """The phase's metrics summaries and Grad-CAM tables, each gathered into one dataset for later readers.

    Args:
        phase: The phase's namespace.
        experiments: Its experiment (or slot) names, inside that namespace.

    Returns:
        Nodes writing ``experiment_metrics`` and ``explained_images`` (under the phase's namespace).
    """
    # Keys are the experiments' full names (what the report shows); values resolve inside the namespace.
    return [
        Node(gather_metrics, {f"{phase}.{name}": f"{name}.metrics" for name in experiments}, "experiment_metrics",
             name="gather_metrics"),
        Node(gather_explained, {f"{phase}.{name}": f"{name}.gradcam_examples" for name in experiments},
             "explained_images", name="gather_explained"),
    ]


def final_models_pipeline(candidate_phases: list[str], top_k: int, scaling: dict[str, float]) -> Pipeline:
    """Phase 4: rank the models of phases 1-3, retrain the top ``top_k`` at each data fraction, compare.

    Args:
        candidate_phases: The phases whose experiments are candidates (their ``experiment_metrics``).
        top_k: Number of model slots (``top1`` ...).
        scaling: Slot suffix -> fraction of each fold's train and val groups (tested on the whole fold),
            e.g. ``{20pct: 0.2, ...}``.

    Returns:
        The phase-4 pipeline.
    """
    bundles = {phase: f"{phase}.experiment_metrics" for phase in candidate_phases}
    rank = Node(choose_final_models,
                {"ranking": "params:phase4.ranking", "preprocessing_choice": PREPROCESSING_CHOICE, **bundles},
                ["model_selection", "candidates"], name="choose_final_models")
    full_fraction = max(scaling.values())
    slots = phase4_slots(top_k, scaling)
    instances = sum((final_model_pipeline(slot.name, scaling.get(slot.suffix, full_fraction)) for slot in slots),
                    Pipeline([]))
    # Under the namespace, "top1_20pct.metrics" resolves to the slot's "phase4.top1_20pct.metrics".
    slot_metrics = {slot.name: f"{slot.name}.metrics" for slot in slots}
    analysis = [
        Node(compare_final_models, {"phase": "params:phase4", "data": "params:data", **slot_metrics},
             COMPARISON_OUTPUTS, name="compare_final_models"),
        Node(analyse_scaling, {"selection": "model_selection", **slot_metrics}, ["scaling", "scaling_figure"],
             name="analyse_scaling"),
        *gather_nodes("phase4", [slot.name for slot in slots]),
    ]
    # The ranking node sits in the namespace too, so `kedro run --namespaces phase4` runs all of phase 4.
    ranked = Pipeline([rank, *analysis], namespace="phase4", inputs={*bundles.values(), PREPROCESSING_CHOICE},
                      parameters={"params:phase4", "params:phase4.ranking", "params:data"})
    return ranked + instances
