import logging
import math
from types import SimpleNamespace

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from deepfake_kedro.config import ExperimentConfig
from deepfake_kedro.tracking import (
    ExperimentTrackingHook,
    experiment_metrics,
    flatten,
    mlflow_metric_names,
    project_sqlite_uri,
    tracked_experiments,
    tracking_enabled,
)


def test_nested_config_keys_become_dotted_param_names():
    config = {"optimizer": {"type": "adamw", "lr": 1e-4}, "augment": False, "train_sources": ["wiki", "insight"],
              "empty": {}}
    assert dict(flatten(config)) == {"optimizer.type": "adamw", "optimizer.lr": 1e-4, "augment": False,
                                     "train_sources": ["wiki", "insight"], "empty": {}}


def test_summary_and_per_fold_metrics_of_a_metrics_json():
    summary = {
        "metrics": {"auc": {"mean": 0.8, "std": 0.1, "ci_low": 0.7, "ci_high": 0.9, "n": 2},
                    "heldout_auc": {"mean": 0.6, "std": None, "ci_low": None, "ci_high": None, "n": 1}},
        "folds": [{"fold": 1, "auc": 0.9, "heldout_auc": math.nan}, {"fold": 0, "auc": 0.7, "heldout_auc": 0.6}],
        "pooled": {"auc": 0.79, "auc_boot_ci_low": 0.71, "auc_boot_ci_high": 0.86},
    }
    values, per_fold = experiment_metrics(summary)
    assert values == {"auc": 0.8, "auc_std": 0.1, "auc_ci_low": 0.7, "auc_ci_high": 0.9, "heldout_auc": 0.6,
                      "pooled_auc": 0.79, "pooled_auc_boot_ci_low": 0.71, "pooled_auc_boot_ci_high": 0.86}
    # Ordered by fold (the step); a metric missing in a fold is not logged per fold.
    assert per_fold == {"fold_auc": [0.7, 0.9]}


def test_tracking_switch(monkeypatch):
    for value, expected in (("off", False), ("OFF", False), ("0", False), ("on", True), ("1", True)):
        monkeypatch.setenv("DEEPFAKE_KEDRO_TRACKING", value)
        assert tracking_enabled() is expected
    monkeypatch.delenv("DEEPFAKE_KEDRO_TRACKING")
    assert tracking_enabled()


def test_only_experiments_with_metrics_and_a_resolved_config_are_logged():
    outputs = {"phase1.p1_a.metrics", "phase1.p1_a.resolved_config", "phase1.p1_a.oof_predictions",
               "attribution.flat.metrics", "attribution.flat.models", "phase2.comparison", "model_comparison"}
    # attribution.flat has metrics but no resolved config (a multi-class model set): logging it failed the run.
    assert tracked_experiments(outputs, outputs) == ["phase1.p1_a"]


def test_a_run_resumed_after_the_config_was_resolved_still_logs_the_experiments_it_evaluates():
    from deepfake_kedro.pipelines.experiment.pipeline import experiment_pipeline

    pipeline = experiment_pipeline("phase1", "p1_a") + experiment_pipeline("phase1", "p1_b")
    # What Kedro's resume hint gives after plan_fold_runs failed: the config is read from disk, not written.
    resumed = pipeline.from_nodes("phase1.p1_a.plan_fold_runs", "phase1.p1_b.evaluate_folds")
    assert not any(name.endswith(".resolved_config") for name in resumed.all_outputs())
    assert tracked_experiments(resumed.all_outputs(), resumed.datasets()) == ["phase1.p1_a", "phase1.p1_b"]


def test_a_relative_sqlite_store_is_placed_in_the_project():
    assert project_sqlite_uri("sqlite:///mlflow.db", "/work/study") == "sqlite:////work/study/mlflow.db"
    assert project_sqlite_uri("sqlite:///runs/m.db", "/work/study") == "sqlite:////work/study/runs/m.db"
    for unchanged in ("sqlite:////srv/mlflow.db", "http://tracking:5000", "databricks", "sqlite://",
                      "sqlite:///:memory:"):
        assert project_sqlite_uri(unchanged, "/work/study") == unchanged


def test_metric_names_mlflow_rejects_are_mapped_to_names_it_accepts_without_clashes():
    names = mlflow_metric_names(["auc", "pairwise_auc:fake (sd)", "pairwise_auc:fake _sd_", "pairwise_auc:fake [sd]"])
    # A name MLflow accepts keeps itself; the others are made valid, the clashing ones numbered in sorted order.
    assert names == {"auc": "auc", "pairwise_auc:fake _sd_": "pairwise_auc:fake _sd_",
                     "pairwise_auc:fake (sd)": "pairwise_auc:fake _sd__2",
                     "pairwise_auc:fake [sd]": "pairwise_auc:fake _sd__3"}


def outputs_of(*names: str) -> Pipeline:
    return Pipeline([Node(lambda x: [x] * len(names), "x", list(names), name="make")])


def test_an_experiment_mlflow_cannot_log_is_skipped_with_a_warning_and_the_others_are_logged(tmp_path, caplog):
    import mlflow

    resolved = SimpleNamespace(config=ExperimentConfig(backbone="simple_cnn", pretrained=False), phase="phase1",
                               name="p1_a", fingerprint="abc")
    # A per-source metric carries the user's folder name, "fake (sd)": MLflow rejects the brackets.
    summary = {"metrics": {"auc": {"mean": 0.8}, "pairwise_auc:fake (sd)": {"mean": 0.7}},
               "folds": [{"fold": 0, "auc": 0.8, "pairwise_auc:fake (sd)": 0.7}]}
    catalog = DataCatalog({"phase1.p1_a.resolved_config": MemoryDataset(resolved),
                           "phase1.p1_a.metrics": MemoryDataset(summary),
                           "phase1.p1_b.resolved_config": MemoryDataset(),  # its load fails
                           "phase1.p1_b.metrics": MemoryDataset(summary)})
    pipeline = outputs_of(*catalog.keys())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        # The parent in an experiment of its own (a run started before `kedro run`): its children go beside it.
        study = mlflow.create_experiment("study", artifact_location=(tmp_path / "mlruns").as_uri())
        with caplog.at_level(logging.WARNING), mlflow.start_run(run_name="kedro run", experiment_id=study):
            ExperimentTrackingHook().after_pipeline_run({"env": "demo"}, pipeline, catalog)
        runs = mlflow.search_runs(search_all_experiments=True).set_index("tags.mlflow.runName")
    finally:
        mlflow.set_tracking_uri(previous)
    assert sorted(runs.index) == ["kedro run", "phase1.p1_a"]
    assert runs.loc["phase1.p1_a", "experiment_id"] == study
    assert runs.loc["phase1.p1_a", "tags.mlflow.parentRunId"] == runs.loc["kedro run", "run_id"]
    assert runs.loc["phase1.p1_a", "status"] == "FINISHED"
    assert runs.loc["phase1.p1_a", "metrics.pairwise_auc:fake _sd_"] == 0.7
    assert "phase1.p1_b not logged (DatasetError" in caplog.text
