"""Tests for benchmarks/demo_power.py: each power run studies its own seed and size in its own folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _demo_power():
    spec = importlib.util.spec_from_file_location("demo_power", PROJECT_ROOT / "benchmarks/demo_power.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_power_run_generates_its_own_seed_and_size_in_its_own_folders(tmp_path: Path) -> None:
    demo_power = _demo_power()
    conf = demo_power.seeded_conf(PROJECT_ROOT / "conf", 2, tmp_path / "conf", identities=640)
    demo = conf / "demo"
    assert yaml.safe_load((demo / "globals.yml").read_text()) == {
        "data_root": "data/01_raw/demo_seed2_n640", "data_dir": "data/demo_seed2_n640"}
    generator = yaml.safe_load((demo / "catalog.yml").read_text())["raw_images"]["generator_args"]
    assert generator["seed"] == 2 and generator["n_identities"] == 640
    assert yaml.safe_load((demo / "parameters.yml").read_text())["defaults"]["seed"] == 44
    # Without a size the demo's own identities are kept, under the plain seed folder.
    plain = demo_power.seeded_conf(PROJECT_ROOT / "conf", 1, tmp_path / "plain")
    shipped = yaml.safe_load((PROJECT_ROOT / "conf/demo/catalog.yml").read_text())["raw_images"]["generator_args"]
    kept = yaml.safe_load((plain / "demo/catalog.yml").read_text())["raw_images"]["generator_args"]
    assert kept["n_identities"] == shipped["n_identities"]
    assert yaml.safe_load((plain / "demo/globals.yml").read_text())["data_dir"] == "data/demo_seed1"
