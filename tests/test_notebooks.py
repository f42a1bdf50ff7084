"""Notebooks execute headless against the catalog of a (tiny) demo run."""

from __future__ import annotations

import os
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import PROJECT_ROOT

NOTEBOOKS = sorted(p.name for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    from tests.conftest import KedroProject, TINY_DEMO

    path = tmp_path_factory.mktemp("nb") / "project"
    path.mkdir()
    for folder in ("conf", "src", "notebooks"):
        shutil.copytree(PROJECT_ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", path / "pyproject.toml")
    project = KedroProject(path)
    project.edit_yaml("conf/demo/catalog.yml", {"raw_images": {"generator_args": {"n_identities": 60}}})
    project.edit_yaml("conf/demo/parameters.yml", TINY_DEMO)
    cwd = os.getcwd()
    os.chdir(path)
    try:
        project.run("eda")
    finally:
        os.chdir(cwd)
    return project


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_headless(demo_project, name, monkeypatch):
    monkeypatch.setenv("KEDRO_ENV", "demo")
    notebook = nbformat.read(demo_project.path / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(demo_project.path)}}).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
