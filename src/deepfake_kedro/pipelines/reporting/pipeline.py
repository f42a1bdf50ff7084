"""The reporting pipeline: reads every phase's results from the catalog and writes the study's outputs."""

from kedro.pipeline import Node, Pipeline

from deepfake_kedro.study import FULL, PHASES, Slot

from .nodes import benchmark_backbones, build_report, collect_results, planted_effects, summarize_attention


def create_pipeline() -> Pipeline:
    """Reporting over every phase: its comparison, paired tests, and its experiments' gathered metrics and Grad-CAM.

    Returns:
        The reporting pipeline.
    """
    top_full = f"phase4.{Slot(1, FULL).name}"  # the top model on the full data: its Grad-CAM goes in the deck
    nodes = [
        Node(collect_results, {**{f"{p}_comparison": f"{p}.comparison" for p in PHASES},
                               **{f"{p}_metrics": f"{p}.experiment_metrics" for p in PHASES}},
             ["model_comparison", "detailed_results"], name="collect_results"),
        Node(benchmark_backbones, "params:reporting.benchmark", "model_benchmark", name="benchmark_backbones"),
        Node(summarize_attention, {**{p: f"{p}.explained_images" for p in PHASES},
                                   **{f"{p}_metrics": f"{p}.experiment_metrics" for p in PHASES}},
             ["attention_summary", "attention_figure"], name="summarize_attention"),
        # Before build_report (its demo_check input), so the deck carries the slide in the same run.
        Node(planted_effects, {
            "planted": "params:demo.planted_effects", "preprocessing_choice": "phase2.preprocessing_choice",
            "scaling": "phase4.scaling",
            **{f"{p}_comparison": f"{p}.comparison" for p in PHASES},
            **{f"{p}_tests": f"{p}.paired_tests" for p in PHASES},
        }, "demo_check", name="planted_effects"),
        Node(build_report, {
            "data": "params:data", "defaults": "params:defaults", "synthetic": "params:reporting.synthetic",
            "fold_table": "fold_table",
            "shortcut_audit": "eda.shortcut_audit", "near_duplicates": "near_duplicate_summary",
            "preprocessing_choice": "phase2.preprocessing_choice", "model_selection": "phase4.model_selection",
            "model_costs": "phase3.model_costs", "scaling": "phase4.scaling", "attention": "attention_summary",
            "benchmark": "model_benchmark", "gradcam_overlays": f"{top_full}.gradcam_overlays",
            "sections": "report_sections", "demo_check": "demo_check", "reporting_dir": "params:reporting.folder",
            **{f"{p}_comparison": f"{p}.comparison" for p in PHASES},
            **{f"{p}_tests": f"{p}.paired_tests" for p in PHASES},
        }, "report", name="build_report"),
    ]
    # One group in kedro viz; the datasets it reads and writes keep their plain names.
    flat = Pipeline(nodes)
    return Pipeline(nodes, namespace="reporting", outputs=flat.all_outputs(),
                    inputs={name for name in flat.inputs() if not name.startswith("params:")},
                    parameters={name for name in flat.inputs() if name.startswith("params:")})
