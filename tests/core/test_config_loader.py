"""The config loader: an environment's parameters list only what they change (soft merge)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from deepfake_kedro.config_loader import StudyConfigLoader
from deepfake_kedro.settings import CONFIG_LOADER_ARGS
from tests.conftest import PROJECT_ROOT


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    return tmp_path / "conf"


def parameters(conf: Path, env: str | None = None, runtime: dict | None = None) -> dict:
    return StudyConfigLoader(str(conf), env=env, runtime_params=runtime, **CONFIG_LOADER_ARGS)["parameters"]


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def test_local_file_with_one_key_changes_only_that_key(conf):
    before = flatten(parameters(conf))
    (conf / "local" / "parameters.yml").write_text("defaults: {epochs: 1}\n")
    after = flatten(parameters(conf))
    assert before["defaults.epochs"] == 15
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == {"defaults.epochs"}
    assert after["defaults.epochs"] == 1


def test_runtime_params_change_only_the_keys_they_name(conf):
    before = flatten(parameters(conf, "demo"))
    after = flatten(parameters(conf, "demo", {"defaults": {"epochs": 1}}))
    assert {k for k in before if before[k] != after[k]} == {"defaults.epochs"}
    assert before["defaults.pretrained"] is False and before["preprocessing.image_sizes"] == [16, 32]


def test_demo_lists_only_what_it_changes_and_keeps_base_for_the_rest(conf):
    base, demo = parameters(conf), parameters(conf, "demo")
    files = {}
    for file in (conf / "demo").glob("parameters*.yml"):
        files.update(flatten(yaml.safe_load(file.read_text())))
    for key, value in files.items():
        assert flatten(base).get(key) != value, f"conf/demo repeats base's {key}"
    # An experiment the demo does not list is base's, with the demo's defaults underneath.
    unlisted = "p2c_resnet18_facecrop"
    assert demo["phase2"]["experiments"][unlisted] == base["phase2"]["experiments"][unlisted]
    demo_defaults = yaml.safe_load((conf / "demo" / "parameters.yml").read_text())["defaults"]
    assert demo["defaults"]["epochs"] == demo_defaults["epochs"] != base["defaults"]["epochs"]
    assert demo["defaults"]["seed"] == base["defaults"]["seed"]


def test_an_environments_sources_replace_bases_whole(conf):
    assert parameters(conf, "faces140k")["data"]["sources"] == {"real": "real", "fake": "fake"}
    runtime = {"data": {"sources": {"a": "real", "b": "fake"}}}
    assert parameters(conf, "demo", runtime)["data"]["sources"] == {"a": "real", "b": "fake"}
    assert set(parameters(conf, "demo")["data"]["sources"]) == {"wiki", "text2img", "inpainting", "insight"}


def test_the_reports_folder_follows_the_environments_data_dir(conf):
    assert parameters(conf)["reporting"]["folder"] == "data/08_reporting"
    assert parameters(conf, "demo")["reporting"]["folder"] == "data/demo/08_reporting"
