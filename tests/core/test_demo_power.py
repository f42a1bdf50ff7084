"""Tests for benchmarks/demo_power.py: each power run studies its own seed and size in its own folders."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepfake_kedro.stats import nadeau_bengio_power, nadeau_bengio_required_gain

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


def _paired_tests(folder: Path, dz: dict[str, float]) -> Path:
    rows = [{"baseline": "phase1.p1_a", "treatment": "p2b_a", "metric": "auc", "effect_size_dz": dz["p2b_a"],
             "p_nadeau_bengio": 0.01},
            {"baseline": "p2b_a", "treatment": "p2c_a", "metric": "auc", "effect_size_dz": dz["p2c_a"],
             "p_nadeau_bengio": 0.02},
            {"baseline": "p2b_a", "treatment": "p2d_a", "metric": "auc", "effect_size_dz": 0.1, "p_nadeau_bengio": 0.5},
            # A comparison without a p (every fold equal) is not part of Holm's family.
            {"baseline": "p2c_a", "treatment": "p2e_a", "metric": "auc", "effect_size_dz": float("nan"),
             "p_nadeau_bengio": float("nan")},
            {"baseline": "phase1.p1_a", "treatment": "p2b_a", "metric": "accuracy", "effect_size_dz": 9.0,
             "p_nadeau_bengio": 0.001}]
    (folder / "phase2").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "phase2/paired_tests.csv", index=False)
    return folder


def test_power_table_reads_each_seeds_gain_and_holms_family(tmp_path: Path) -> None:
    demo_power = _demo_power()
    runs = {"seed 0": _paired_tests(tmp_path / "s0", {"p2b_a": 2.0, "p2c_a": 5.0}),
            "seed 1": _paired_tests(tmp_path / "s1", {"p2b_a": 4.0, "p2c_a": 7.0})}
    planted = [{"effect": "resolution", "check": "significant_gain", "phase": "phase2", "baseline": "phase1.p1_a",
                "treatment": "p2b_a"},
               {"effect": "crops", "check": "adopted", "treatment": "p2c_a"},
               {"effect": "null", "check": "not_adopted", "treatment": "p2d_a"}]
    table, every = demo_power.power_table(runs, planted, identities=100)
    assert list(table.index) == ["resolution", "crops"]  # the null is not a Holm-tested gain
    assert table.loc["resolution", "seed 1"] == 4.0 and table.loc["crops", "mean gain/SD"] == 6.0
    # Three AUC comparisons carry a p, two of them planted: Holm's first step alpha/3, the lenient one alpha/2.
    assert table.loc["crops", "power (p < a/3)"] == pytest.approx(nadeau_bengio_power(6.0, alpha=0.05 / 3))
    assert table.loc["resolution", "power (p < a/2)"] == pytest.approx(nadeau_bengio_power(3.0, alpha=0.05 / 2))
    needed = 100 * (nadeau_bengio_required_gain(0.95, alpha=0.05 / 3) / 3.0) ** 2
    assert table.loc["resolution", "identities for 95%"] == round(needed)
    assert every == pytest.approx((table["power (p < a/2)"] ** 2).prod())


def test_a_finished_seed_is_read_and_rerun_only_on_refresh(tmp_path: Path, monkeypatch, capsys) -> None:
    demo_power = _demo_power()
    monkeypatch.setattr(demo_power, "PROJECT_ROOT", tmp_path)
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf")
    for folder in ("demo", "demo_seed1"):
        (tmp_path / f"data/{folder}/08_reporting").mkdir(parents=True)
        pd.DataFrame({"effect": ["e"], "recovered": [True]}).to_csv(
            tmp_path / f"data/{folder}/08_reporting/demo_check.csv", index=False)
    commands = []
    # The kedro CLI is the edge: the study itself is tested through Kedro elsewhere.
    monkeypatch.setattr(demo_power.subprocess, "run", lambda command, **kwargs: commands.append(command))

    table, minutes = demo_power.run_seed(1, "kedro")
    assert commands == [] and minutes != minutes and table["recovered"].tolist() == [True]
    assert "data/demo_seed1/08_reporting/demo_check.csv, written" in capsys.readouterr().out

    demo_power.run_seed(1, "kedro", refresh=True)
    demo_power.run_seed(0, "kedro", refresh=True)
    seed1, seed0 = commands
    assert seed1[:4] == ["kedro", "run", "--env", "demo"] and seed1[4] == "--conf-source"
    # Seed 0 is make demo's own study: refreshed in data/demo through the demo environment as it stands.
    assert seed0 == ["kedro", "run", "--env", "demo"]
