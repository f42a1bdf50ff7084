"""The pipeline registry builds each phase from the run's own configuration: environment, conf folder, cwd."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from deepfake_kedro import pipeline_registry
from deepfake_kedro.config import ConfigError
from tests.conftest import PROJECT_ROOT


@pytest.fixture(autouse=True)
def no_running_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another test's session would otherwise leave its parameters as the registry's.
    monkeypatch.setattr(pipeline_registry, "_run_parameters", None)
    monkeypatch.setattr(pipeline_registry, "_run_conf_source", None)


def trained(pipeline, phase: str) -> set[str]:
    """The experiments a phase's pipeline trains (their nodes' namespace is <phase>.<experiment>)."""
    return {n.namespace.split(".")[1] for n in pipeline.nodes
            if n.namespace and n.namespace.startswith(f"{phase}.") and n.namespace.count(".") == 1}


def base_experiments(phase: str) -> set[str]:
    return set(yaml.safe_load((PROJECT_ROOT / f"conf/base/parameters_{phase}.yml").read_text())[phase]["experiments"])


def session_pipeline(project, env: str, name: str):
    """``name``'s pipeline as a session of ``env`` sees it (the context exists before the pipelines are read)."""
    bootstrap_project(project.path)
    with KedroSession.create(project_path=project.path, env=env) as session:
        session.load_context()
        return pipelines[name]


def test_registry_finds_the_project_conf_from_a_subfolder(kedro_project, monkeypatch):
    # `kedro run` from notebooks/ (or any subfolder) used to read conf/base relative to the cwd and crash.
    monkeypatch.chdir(kedro_project.path / "conf" / "base")
    registered = pipeline_registry.register_pipelines()
    for phase in ("phase1", "phase2", "phase3"):
        assert trained(registered[phase], phase) == base_experiments(phase)


def test_a_session_opened_from_outside_the_project_reads_its_conf(kedro_project, tmp_path, monkeypatch):
    # A script or scheduler elsewhere: Kedro builds every pipeline before any run parameters are handed over.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert trained(session_pipeline(kedro_project, "demo", "phase1"), "phase1") == base_experiments("phase1")


def test_an_environment_adds_and_drops_experiments_and_the_next_session_sees_its_own(kedro_project):
    (kedro_project.path / "conf/mydata").mkdir()
    kedro_project.edit_yaml("conf/mydata/parameters_phase1.yml", {"phase1": {"experiments": {
        "p1_resnet18_baseline": None, "p1_tiny_cnn": {"backbone": "simple_cnn", "cnn_preset": "small"}}}})
    assert trained(session_pipeline(kedro_project, "mydata", "phase1"), "phase1") == {
        "p1_simplecnn_baseline", "p1_tiny_cnn"}
    # Kedro keeps the pipelines it built; a session of another environment gets its own.
    assert trained(session_pipeline(kedro_project, "demo", "phase1"), "phase1") == base_experiments("phase1")


def test_a_comparison_naming_a_dropped_experiment_stops_before_training(kedro_project):
    kedro_project.edit_yaml("conf/demo/parameters_phase1.yml", {"phase1": {"experiments": {
        "p1_resnet18_baseline": None}}})
    with pytest.raises(ConfigError, match=r"phase1.comparisons\[0\]: key 'treatment' names 'p1_resnet18_baseline'"):
        kedro_project.run("phase1")
    assert not (kedro_project.path / "data/demo/06_models").exists()


def test_a_run_without_a_dropped_experiment_trains_the_rest(tiny_demo):
    tiny_demo.edit_yaml("conf/demo/parameters_phase1.yml", {"phase1": {
        "experiments": {"p1_resnet18_baseline": None}, "comparisons": []}})
    tiny_demo.run("phase1")
    comparison = pd.read_csv(tiny_demo.path / "data/demo/08_reporting/phase1/comparison.csv")
    assert list(comparison["experiment"]) == ["p1_simplecnn_baseline"]
