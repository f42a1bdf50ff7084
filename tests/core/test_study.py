import json

import numpy as np
import pytest

from deepfake_kedro.config import ConfigError, config_fingerprint
from deepfake_kedro.image_cache import ImageStack
from deepfake_kedro.study import ResolvedExperiment, Slot, config_changes, parse_slot, phase4_slots, resolve

DATA = {"root": "data/01_raw/demo", "sources": {"wiki": "real", "insight": "fake"}}
PREPROCESSING = {"image_sizes": [64, 128], "face_crop_sizes": [64], "face_crop_margin": 0.6}
DEFAULTS = {"image_size": 128, "backbone": "simple_cnn", "pretrained": False, "epochs": 2}


def resolved_face_crop() -> ResolvedExperiment:
    experiments = {"p2_base": {}, "p2_face": {"extends": "p2_base", "face_crop": True, "image_size": 64}}
    return resolve("phase2", "p2_face", experiments, DEFAULTS, DATA, PREPROCESSING, preprocessing_source="ranking")


def stack(size: int) -> ImageStack:
    return ImageStack(["a.jpg"], ["sig"], np.zeros((1, size, size, 3), dtype=np.uint8))


def test_resolve_merges_extends_and_fingerprints_once():
    resolved = resolved_face_crop()
    assert resolved.label == "phase2.p2_face"
    assert (resolved.config.image_size, resolved.config.face_crop, resolved.config.epochs) == (64, True, 2)
    assert resolved.fingerprint == config_fingerprint(resolved.config, DATA)
    assert resolved.cache_name == "face_64"
    assert (resolved.slot, resolved.model, resolved.preprocessing_source) == (None, None, "ranking")


def test_resolve_names_phase_experiment_and_key_of_a_bad_config():
    with pytest.raises(ConfigError, match=r"phase1\.p1_x.*'epochs'"):
        resolve("phase1", "p1_x", {"p1_x": {"epochs": 0}}, DEFAULTS, DATA, PREPROCESSING)


def test_cache_comes_from_the_face_or_square_caches_and_a_missing_one_is_named():
    resolved = resolved_face_crop()
    face, square = {"face_64": stack(64)}, {"square_64": stack(64), "square_128": stack(128)}
    assert resolved.cache(square, face) is face["face_64"]
    square_run = resolve("phase1", "p1", {"p1": {}}, DEFAULTS, DATA, PREPROCESSING)
    assert square_run.cache(square, face) is square["square_128"]
    with pytest.raises(KeyError, match=r"phase1\.p1: no image cache 'square_128' \(have \['square_64'\]\)"):
        square_run.cache({"square_64": stack(64)}, face)


def test_json_round_trip_keeps_every_field_and_the_keys_readers_expect():
    resolved = resolve("phase4", "p4a_resnet18_20pct", {"p4a_resnet18_20pct": {"subsample": 0.2}}, DEFAULTS, DATA,
                       PREPROCESSING, slot="top1_20pct", model="resnet18", preprocessing_source="ranking")
    data = resolved.to_json()
    assert list(data) == ["experiment", "phase", "fingerprint", "config", "slot", "model", "preprocessing_source"]
    assert data["experiment"] == "p4a_resnet18_20pct" and data["config"]["subsample"] == 0.2
    assert ResolvedExperiment.from_json(json.loads(json.dumps(data))) == resolved



def test_json_of_phases_1_to_3_has_no_phase4_keys():
    plain = resolve("phase1", "p1", {"p1": {}}, DEFAULTS, DATA, PREPROCESSING).to_json()
    assert set(plain) == {"experiment", "phase", "fingerprint", "config"}


def test_from_json_names_the_source_and_the_missing_or_invalid_key():
    data = {"experiment": "p1", "phase": "phase1", "config": {}}
    with pytest.raises(ConfigError, match=r"x/resolved_config\.json: missing key 'fingerprint'"):
        ResolvedExperiment.from_json(data, where="x/resolved_config.json")
    with pytest.raises(ConfigError, match=r"resolved experiment: key 'config.epochs': Input should be greater than"):
        ResolvedExperiment.from_json({**data, "fingerprint": "0", "config": {"epochs": 0}})


@pytest.mark.parametrize(("slot", "rank", "suffix", "full", "experiment"), [
    ("top1_20pct", 1, "20pct", False, "p4a_resnet18_20pct"),
    ("top12_100pct", 12, "100pct", False, "p4a_resnet18_100pct"),
    ("top2_full", 2, "full", True, "p4b_resnet18_full"),
])
def test_parse_slot(slot, rank, suffix, full, experiment):
    parsed = parse_slot(slot)
    assert (parsed.rank, parsed.suffix, parsed.full, parsed.name) == (rank, suffix, full, slot)
    assert parsed.experiment_name("resnet18") == experiment


@pytest.mark.parametrize("slot", ["top0_20pct", "top1", "first_20pct", "top1_20_pct", "top1_", "phase4.top1_full"])
def test_a_bad_slot_is_an_error_naming_it(slot):
    with pytest.raises(ConfigError, match=f"phase4 slot '{slot}': expected top<rank>_<suffix>"):
        parse_slot(slot)


def test_slots_cover_every_rank_and_fraction_plus_the_full_run():
    names = [slot.name for slot in phase4_slots(2, {"20pct": 0.2, "100pct": 1.0})]
    assert names == ["top1_20pct", "top1_100pct", "top1_full", "top2_20pct", "top2_100pct", "top2_full"]
    with pytest.raises(ConfigError, match="'top1_20_pct'"):
        phase4_slots(1, ["20_pct"])


def test_a_slot_beyond_the_selection_says_how_to_fix_it():
    selected = [{"model": "resnet18"}, {"model": "simple_cnn"}]
    assert Slot(2, "full").chosen_model(selected)["model"] == "simple_cnn"
    with pytest.raises(ConfigError, match=r"'top3_20pct'.*only 2 models.*top_k.*3 or more"):
        Slot(3, "20pct").chosen_model(selected)


def test_config_changes_name_each_changed_key_and_ignore_what_does_not_change_training():
    stored = resolve("phase1", "p1_x", {"p1_x": {}}, DEFAULTS, DATA, PREPROCESSING)
    same = resolve("phase1", "p1_x", {"p1_x": {"num_workers": 4, "description": "other words"}}, DEFAULTS, DATA,
                   PREPROCESSING)
    assert config_changes(stored, same) == []
    changed = resolve("phase1", "p1_x", {"p1_x": {"epochs": 5, "optimizer": {"lr": 0.01}}}, DEFAULTS, DATA,
                      PREPROCESSING)
    lr = stored.config.optimizer.lr
    assert config_changes(stored, changed) == ["epochs: 2 -> 5", f"optimizer.lr: {lr!r} -> 0.01"]
    moved = resolve("phase1", "p1_x", {"p1_x": {}}, DEFAULTS, {**DATA, "root": "data/01_raw/other"}, PREPROCESSING)
    assert config_changes(stored, moved) == ["data.root or data.sources"]
    renamed = ResolvedExperiment("phase4", "p4b_resnet18_full", stored.config, "another", slot="top1_full")
    assert config_changes(ResolvedExperiment("phase4", "p4b_simple_cnn_full", stored.config, "one"),
                          renamed) == ["experiment: p4b_simple_cnn_full -> p4b_resnet18_full"]
