"""`kedro viz` draws the study in layer bands, in the study's order: no pipeline's layers form a cycle.

Kedro-Viz orders layers by lineage and turns layer bands off for a pipeline whose layers form a cycle. Each
phase trains, evaluates and chooses for the next, so the phases are layers of their own (conf/base/catalog.yml).
"""

from __future__ import annotations

import logging

import pytest
from kedro_viz.data_access.managers import DataAccessManager
from kedro_viz.integrations.kedro.data_loader import load_data
from kedro_viz.server import populate_data

from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def viz():
    catalog, pipelines, node_extras = load_data(PROJECT_ROOT, env="demo")
    manager = DataAccessManager()
    populate_data(manager, catalog, pipelines, node_extras)
    return manager, pipelines


def _drawn_layers(manager: DataAccessManager, name: str) -> list[str]:
    # Kedro-Viz sorts the layers of every dataset it knows; a pipeline's view shows only those of its own.
    dependencies = manager.get_node_dependencies_for_registered_pipeline(name)
    node_ids = set(dependencies).union(*dependencies.values())
    own = {getattr(manager.nodes.get_node_by_id(node_id), "layer", None) for node_id in node_ids}
    return [layer for layer in manager.get_sorted_layers_for_registered_pipeline(name) if layer in own]


def test_every_pipeline_is_drawn_in_layer_bands(viz, caplog: pytest.LogCaptureFixture) -> None:
    manager, pipelines = viz
    with caplog.at_level(logging.WARNING, logger="kedro_viz"):
        drawn = {name: _drawn_layers(manager, name) for name in pipelines}
    assert "circular dependency" not in caplog.text
    assert [name for name, layers in drawn.items() if not layers] == []


def test_the_whole_study_reads_top_down_from_raw_images_to_the_report(viz) -> None:
    manager, _ = viz
    layers = _drawn_layers(manager, "__default__")
    stages = ["raw", "intermediate", "eda", "phase1", "phase2", "phase3", "phase4", "reporting"]
    assert [layer for layer in layers if layer in stages] == stages
    assert layers[-1] == "reporting"
