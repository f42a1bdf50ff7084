"""The GPU check's scripts agree on names and file formats (run here on the CPU at toy sizes)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake_kedro.models import BACKBONES

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GPU_LIMIT = PROJECT_ROOT.parent / "shared" / "tools" / "gpu_limit.py"


def _gpu_tables():
    spec = importlib.util.spec_from_file_location("gpu_tables", PROJECT_ROOT / "benchmarks/gpu_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script_list(name: str) -> list[str]:
    script = (PROJECT_ROOT / "benchmarks/gpu_check.sh").read_text()
    return re.search(rf"^{name}=(\S+)", script, re.MULTILINE).group(1).split(",")


def test_the_gpu_check_names_project_backbones_and_their_timm_models():
    models, timm_models = _script_list("MODELS"), _script_list("TIMM_MODELS")
    assert all(model in BACKBONES for model in models), models
    assert timm_models == [_gpu_tables().timm_name(model) for model in models]


@pytest.mark.skipif(not GPU_LIMIT.exists(), reason="../shared/tools/gpu_limit.py is not beside the checkout")
def test_gpu_tables_divides_the_pipeline_by_gpu_limit_for_each_backbone(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}
    models = "resnet18,mobilenetv3_small"
    tables = _gpu_tables()
    run = dict(check=True, env=env, capture_output=True, text=True)
    subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks/train_throughput.py"), "--models", models,
                    "--size", "32", "--batch", "16", "--images", "32", "--steps", "2", "--warmup", "1",
                    "--csv", str(tmp_path / "train_throughput.csv")], **run)
    limit = subprocess.run([sys.executable, str(GPU_LIMIT), "--size", "32", "--batch", "16", "--steps", "2",
                            "--warmup", "1", "--models", ",".join(tables.timm_name(m) for m in models.split(","))],
                           **run).stdout
    (tmp_path / "gpu_limit.csv").write_text(limit)
    table = tables.training_table(tmp_path).set_index("model")
    assert list(table.index) == models.split(",")
    for model, row in table.iterrows():
        assert row["gpu_limit.py img/s"] > 0, model
        assert row["pipeline / gpu_limit.py"] == pytest.approx(row["pipeline img/s"] / row["gpu_limit.py img/s"])
