"""The preprocessing scale benchmark measures the tree it asks for (run here at a toy size)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCALE = PROJECT_ROOT / "benchmarks/scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale", SCALE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale"] = module  # its generating processes receive its functions by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["scale"]


def files(root: Path) -> dict[str, int]:
    return {path.relative_to(root).as_posix(): path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def test_a_tree_cut_short_is_generated_again_and_a_complete_one_is_reused(scale, tmp_path):
    root = tmp_path / "dff_8"
    (root / "wiki" / "00").mkdir(parents=True)
    (root / "wiki" / "00" / "left_by_a_killed_run.jpg").write_bytes(b"")
    assert scale.prepare_tree(root, 8, workers=1) == 8
    made = files(root)
    assert len(made) == 8 and "wiki/00/left_by_a_killed_run.jpg" not in made
    assert scale.prepare_tree(root, 8, workers=1) == 8
    assert files(root) == made, "a complete tree is reused as it is"
    (root / next(iter(made))).unlink()
    assert scale.prepare_tree(root, 8, workers=1) == 8
    assert len(files(root)) == 8


def test_a_number_of_images_not_a_multiple_of_4_is_refused_naming_it():
    done = subprocess.run([sys.executable, str(SCALE), "6"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "N = 6: the number of images must be a positive multiple of 4" in done.stderr
