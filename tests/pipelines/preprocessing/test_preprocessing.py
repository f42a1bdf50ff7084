"""The preprocessing pipeline through KedroSession: bad layouts and bad study-wide settings fail first."""

from __future__ import annotations

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
