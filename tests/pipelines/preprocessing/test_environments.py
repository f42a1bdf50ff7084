"""Two environments in one project folder: each keeps its own index, caches and reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from PIL import Image

from deepfake_kedro.config import ConfigError

NO_FACES = {"preprocessing": {"face_crop_sizes": []}}  # MTCNN is not what these tests are about
DEMO_SOURCES = {"wiki", "text2img", "inpainting", "insight"}


def write_user_tree(root: Path, per_source: int = 30) -> None:
    rng = np.random.default_rng(0)
    for source in ("real", "fake"):
        (root / source).mkdir(parents=True)
        for k in range(per_source):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / source / f"{source}_{k:03d}.png")


def add_user_env(project, tree: Path) -> None:
    """An environment as a user writes it: data.root in parameters.yml only, its own data_dir."""
    (project.path / "conf/mytree").mkdir()
    (project.path / "conf/mytree/globals.yml").write_text("data_dir: data/mytree\n")
    (project.path / "conf/mytree/parameters.yml").write_text(
        f"data:\n  root: {tree}\n  sources: {{real: real, fake: fake}}\n  families: {{fake: gan}}\n"
        "preprocessing: {image_sizes: [32], face_crop_sizes: []}\n")


def output_paths(project, env: str) -> dict[str, Path]:
    """Every output's file or folder, as the env's real Kedro catalog resolves it."""
    examples = ["phase1.p1_resnet18_baseline.metrics", "phase1.p1_resnet18_baseline.fold_runs", "eda.counts",
                "phase2.comparison", "phase4.model_selection", "phase4.top1_full.gradcam_overlays"]
    with KedroSession.create(project_path=project.path, env=env) as session:
        resolver = session.load_context().catalog.config_resolver
        names = [n for n in resolver.config if n not in {"raw_images", "raw_download", "project_path"}] + examples
        configs = {n: resolver.resolve_pattern(n) for n in names}
    return {n: Path(c.get("filepath") or c["path"]) for n, c in configs.items()}


def test_two_environments_keep_their_own_index_and_outputs(kedro_project, tmp_path):
    kedro_project.edit_yaml("conf/demo/catalog.yml", {"raw_images": {"generator_args": {"n_identities": 60}}})
    write_user_tree(tmp_path / "mytree")
    add_user_env(kedro_project, tmp_path / "mytree")
    kedro_project.run("preprocessing", env="demo", params=NO_FACES)
    demo_cache = kedro_project.path / "data/demo/03_primary/image_cache/square_32/manifest.json"
    built = demo_cache.stat().st_mtime_ns
    kedro_project.run("preprocessing", env="mytree")

    demo = pd.read_parquet(kedro_project.path / "data/demo/02_intermediate/image_index.parquet")
    mine = pd.read_parquet(kedro_project.path / "data/mytree/02_intermediate/image_index.parquet")
    assert set(demo["source"]) == DEMO_SOURCES and set(mine["source"]) == {"real", "fake"}
    assert len(mine) == 60 and not set(demo["path"]) & set(mine["path"])

    paths = {env: output_paths(kedro_project, env) for env in ("demo", "mytree")}
    assert paths["demo"].keys() == paths["mytree"].keys() and "model_comparison" in paths["demo"]
    for name in paths["demo"]:
        assert paths["demo"][name] != paths["mytree"][name], name
        assert paths["demo"][name].is_relative_to(kedro_project.path / "data/demo"), name
        assert paths["mytree"][name].is_relative_to(kedro_project.path / "data/mytree"), name

    # Back to the demo: its cache is still its own and up to date, so nothing is rendered again.
    kedro_project.run("preprocessing", env="demo", params=NO_FACES)
    assert demo_cache.stat().st_mtime_ns == built


def test_data_root_set_twice_to_different_folders_names_both(kedro_project, tmp_path):
    (kedro_project.path / "conf/clash").mkdir()
    (kedro_project.path / "conf/clash/globals.yml").write_text(f"data_root: {tmp_path / 'a'}\n")
    (kedro_project.path / "conf/clash/parameters.yml").write_text(f"data:\n  root: {tmp_path / 'b'}\n")
    with pytest.raises(ConfigError, match=r"conf/clash/globals.yml sets data_root .*data.root"):
        kedro_project.run("preprocessing", env="clash")
