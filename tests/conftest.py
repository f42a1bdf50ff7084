"""Shared fixtures: a throw-away copy of the Kedro project, and helpers to run its pipelines."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FACES140K_ENV = "DEEPFAKE_KEDRO_FACES140K"

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# MLflow tracking off in tests (settings.py reads it), except where a test turns it on in a `kedro run`.
os.environ.setdefault("DEEPFAKE_KEDRO_TRACKING", "off")


def faces140k_root() -> Path | None:
    """The shared real-face sample, from the environment variable .ci/run sets (or beside the checkout)."""
    candidates = [os.environ.get(FACES140K_ENV), PROJECT_ROOT.parent / "shared" / "data" / "faces140k"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "real").is_dir():
            return Path(candidate)
    return None


class KedroProject:
    """A copy of the project's conf in a temporary folder, so runs never touch the real data/."""

    def __init__(self, path: Path):
        self.path = path

    def edit_yaml(self, relative: str, update: dict[str, Any]) -> None:
        """Deep-updates one YAML file of the copy."""
        file = self.path / relative
        content = yaml.safe_load(file.read_text()) if file.exists() else {}

        def merge(target: dict, changes: dict) -> None:
            for key, value in changes.items():
                if isinstance(value, dict) and isinstance(target.get(key), dict):
                    merge(target[key], value)
                else:
                    target[key] = value

        merge(content, update)
        file.write_text(yaml.safe_dump(content, sort_keys=False))

    def run(self, pipeline: str | None = None, env: str = "demo", params: dict[str, Any] | None = None, **kwargs):
        """Runs a pipeline through KedroSession (the real runner and catalog)."""
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        bootstrap_project(self.path)
        with KedroSession.create(project_path=self.path, env=env, runtime_params=params or {}) as session:
            return session.run(pipeline_name=pipeline, **kwargs)


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KedroProject:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    monkeypatch.chdir(project)
    return KedroProject(project)


def full_blocks(overrides: dict[str, Any], *files: str) -> dict[str, Any]:
    """Runtime params for the given top-level blocks: base values deep-updated with ``overrides``.

    Kedro may replace a whole top-level block with a runtime one, so each block is passed complete.
    """
    base: dict[str, Any] = {}
    for name in files or ("parameters.yml", "parameters_phase1.yml"):
        base.update(yaml.safe_load((PROJECT_ROOT / "conf" / "base" / name).read_text()))

    def merge(target: dict, changes: dict) -> dict:
        for key, value in changes.items():
            target[key] = merge(dict(target.get(key) or {}), value) if isinstance(value, dict) else value
        return target

    return {key: merge(dict(base.get(key) or {}), value) if isinstance(value, dict) else value
            for key, value in overrides.items()}


TINY_DEMO = {
    "defaults": {"epochs": 2, "scheduler": {"type": "cosine_annealing", "T_max": 2}, "batch_size": 32},
    "evaluation": {"n_bootstrap": 50},
}


@pytest.fixture
def tiny_demo(kedro_project: KedroProject) -> KedroProject:
    """The demo environment shrunk to 60 identities and 2 epochs (about a minute per phase-1 run)."""
    kedro_project.edit_yaml("conf/demo/catalog.yml", {"raw_images": {"generator_args": {"n_identities": 60}}})
    kedro_project.edit_yaml("conf/demo/parameters.yml", TINY_DEMO)
    return kedro_project


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> KedroProject:
    """The whole demo study (eda, preprocessing, phases 1-4, reporting), then generalisation and attribution,
    shrunk to 60 identities and 1 epoch (6 in phase 1).

    Run once per test session (about 8 minutes on 2 cores); the notebooks and the study tests read it.
    """
    path = tmp_path_factory.mktemp("study") / "project"
    path.mkdir()
    for folder in ("conf", "src", "notebooks"):
        shutil.copytree(PROJECT_ROOT / folder, path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", path / "pyproject.toml")
    project = KedroProject(path)
    project.edit_yaml("conf/demo/catalog.yml", {"raw_images": {"generator_args": {"n_identities": 60}}})
    project.edit_yaml("conf/demo/parameters.yml", {
        **TINY_DEMO, "defaults": {"epochs": 1, "scheduler": {"type": "cosine_annealing", "T_max": 1}}})
    # Phase 1 keeps enough epochs to learn the planted sources (test_study checks it).
    learn = {"epochs": 6, "scheduler": {"T_max": 6}}
    project.edit_yaml("conf/demo/parameters_phase1.yml", {"phase1": {"experiments": {
        "p1_simplecnn_baseline": learn, "p1_resnet18_baseline": learn}}})
    # The demo's final models train 4 epochs (phase4.training); one is enough here.
    project.edit_yaml("conf/demo/parameters_phase4.yml", {
        "phase4": {"training": {"epochs": 1, "scheduler": {"T_max": 1}}}})
    # Attribution's demo models train 8 epochs; one is enough to exercise the pipeline and notebook 09.
    project.edit_yaml("conf/demo/parameters_attribution.yml", {
        "attribution": {"model": {"epochs": 1, "scheduler": {"T_max": 1}}}})
    cwd = os.getcwd()
    os.chdir(path)
    try:
        project.run()
        # Outside the default run; notebook 09 reads them.
        project.run(pipeline="generalisation")
        project.run(pipeline="attribution")
    finally:
        os.chdir(cwd)
    return project
