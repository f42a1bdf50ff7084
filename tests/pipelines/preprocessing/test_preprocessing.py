"""The preprocessing pipeline through KedroSession: bad layouts and bad study-wide settings fail first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepfake_kedro.config import ConfigError
from deepfake_kedro.data_index import DataLayoutError


def one_class_tree(root, n_real: int = 12):
    """``real/`` with ``n_real`` images; ``fake/`` with only a text file and an empty .jpg."""
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    for i in range(n_real):
        Image.new("RGB", (40, 40), (i * 20 % 255, 100, 50)).save(root / "real" / f"person_{i}.jpg")
    (root / "fake" / "readme.txt").write_text("no fakes yet")
    (root / "fake" / "empty.jpg").write_bytes(b"")


def test_one_class_data_fails_before_training(kedro_project, tmp_path):
    root = tmp_path / "images"
    one_class_tree(root)
    params = {"data": {"root": str(root), "sources": {"real": "real", "fake": "fake"}}}
    with pytest.raises(DataLayoutError, match=r"data.sources names 'fake', but '.*images/fake' holds no usable image "
                                              r"\(2 files: 1 not_image, 1 zero_byte\)"):
        kedro_project.run("phase1", env="demo", params=params)
    data = kedro_project.path / "data/demo"  # the demo environment's data_dir
    # Nothing past the index ran: no cache, no hashes, no face detection, no training.
    assert not (data / "03_primary").exists() and not (data / "06_models").exists()
    assert not list(data.rglob("*.npy")) and not list(data.rglob("perceptual_hashes*"))


@pytest.mark.parametrize(("val_ratio", "message"), [(0, "greater than 0"), (1.5, "less than 0.5")])
def test_bad_study_wide_val_ratio_fails_before_preprocessing(kedro_project, val_ratio, message):
    kedro_project.edit_yaml("conf/demo/parameters.yml", {"defaults": {"val_ratio": val_ratio}})
    with pytest.raises(ConfigError, match=rf"defaults \(parameters.yml\): key 'val_ratio': Input should be {message}"):
        kedro_project.run("preprocessing", env="demo")
    assert not (kedro_project.path / "data/demo").exists()  # rejected before any node wrote anything


def test_rerun_on_an_unchanged_tree_decodes_nothing_and_follows_changes(kedro_project, tmp_path):
    root = tmp_path / "images"
    for source in ("real", "fake"):
        (root / source).mkdir(parents=True)
        for k in range(60):  # 60 groups: enough for the demo's cv_folds and val_ratio
            pixels = np.random.default_rng(k + 100 * (source == "fake")).integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / source / f"person_{k:02d}.png")
    params = {"data": {"root": str(root), "sources": {"real": "real", "fake": "fake"}, "families": {"fake": "gan"}}}
    audit_only = {"to_nodes": ["preprocessing.build_folds"]}
    kedro_project.run("preprocessing", env="demo", params=params, **audit_only)
    intermediate = kedro_project.path / "data/demo/02_intermediate"
    written = (intermediate / "image_audit.parquet").stat().st_mtime_ns
    folds = pd.read_parquet(kedro_project.path / "data/demo/05_model_input/fold_table.parquet")

    kedro_project.run("preprocessing", env="demo", params=params, **audit_only)
    assert (intermediate / "image_audit.parquet").stat().st_mtime_ns == written  # nothing decoded, nothing rewritten
    pd.testing.assert_frame_equal(pd.read_parquet(kedro_project.path / "data/demo/05_model_input/fold_table.parquet"),
                                  folds)

    (root / "fake/person_03.png").unlink()
    Image.new("RGB", (40, 40), (9, 9, 9)).save(root / "fake/person_99.png")
    kedro_project.run("preprocessing", env="demo", params=params, **audit_only)
    index = pd.read_parquet(intermediate / "image_index.parquet")
    hashes = pd.read_parquet(intermediate / "perceptual_hashes.parquet")
    assert "fake/person_03.png" not in set(index["path"]) | set(hashes["path"])
    assert "fake/person_99.png" in set(index["path"]) & set(hashes["path"]) and len(index) == 120
