import json

import pytest
from kedro.io import DatasetError

from deepfake_kedro.datasets import ResolvedExperimentDataset
from deepfake_kedro.study import resolve

DATA = {"root": "data/01_raw/demo", "sources": {"wiki": "real", "insight": "fake"}}
PREPROCESSING = {"image_sizes": [128], "face_crop_sizes": [], "face_crop_margin": 0.6}
DEFAULTS = {"image_size": 128, "backbone": "simple_cnn", "pretrained": False}


def test_resolved_experiment_saves_as_the_json_readers_expect_and_loads_back(tmp_path):
    resolved = resolve("phase3", "p3_resnet34", {"p3_resnet34": {"backbone": "resnet34"}}, DEFAULTS, DATA,
                       PREPROCESSING, preprocessing_source="ranking")
    path = tmp_path / "phase3/p3_resnet34/resolved_config.json"
    dataset = ResolvedExperimentDataset(str(path))
    dataset.save(resolved)
    written = json.loads(path.read_text())
    assert written == resolved.to_json()
    assert (written["experiment"], written["phase"], written["config"]["backbone"]) == ("p3_resnet34", "phase3",
                                                                                         "resnet34")
    assert written["preprocessing_source"] == "ranking" and written["fingerprint"] == resolved.fingerprint
    assert dataset.load() == resolved
    assert not list(tmp_path.rglob("*.partial"))


def test_a_broken_resolved_config_file_is_named_with_the_missing_key(tmp_path):
    path = tmp_path / "resolved_config.json"
    path.write_text(json.dumps({"experiment": "p1", "phase": "phase1", "config": {}}))
    with pytest.raises(DatasetError, match=r"resolved_config\.json: missing key 'fingerprint'"):
        ResolvedExperimentDataset(str(path)).load()
