import pytest

from deepfake_kedro.config import ConfigError, config_fingerprint, resolve_experiment

DEFAULTS = {"epochs": 15, "optimizer": {"type": "adamw", "lr": 1e-4, "weight_decay": 1e-4}, "pretrained": False}
SOURCES = {"wiki": "real", "text2img": "fake", "inpainting": "fake", "insight": "fake"}
DATA = {"root": "data/01_raw/dff", "sources": SOURCES}


PREPROCESSING = {"image_sizes": [128, 224], "face_crop_sizes": [224], "face_crop_margin": 0.6}


def resolve(experiments, name="e"):
    return resolve_experiment(name, experiments, DEFAULTS, SOURCES, PREPROCESSING, label=f"phase9.{name}")


def test_extends_and_nested_merge():
    experiments = {
        "base": {"backbone": "resnet18", "image_size": 224, "optimizer": {"lr": 3e-4}},
        "child": {"extends": "base", "normalization": "real_norm", "optimizer": {"weight_decay": 0.05}},
    }
    config = resolve(experiments, "child")
    assert config.image_size == 224 and config.normalization == "real_norm"
    assert config.optimizer.lr == 3e-4 and config.optimizer.weight_decay == 0.05
    assert config.epochs == 15


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"epochs": "ten"}, "'epochs'"),
        ({"optimizer": {"learning_rate": 0.1}}, "'optimizer.learning_rate'"),
        ({"optimizer": {"lr": -1.0}}, "'optimizer.lr'"),
        ({"augment": {"hflip_p": 1.5}}, "'augment.hflip_p'"),
        ({"backbone": "vgg16"}, "'backbone'"),
        ({"image_sz": 224}, "'image_sz'"),
        ({"dropout": 1.0}, "'dropout'"),
        ({"train_sources": ["wiki", "midjourney"]}, "'train_sources'"),
        ({"train_sources": ["text2img", "insight"]}, "'train_sources'"),
        ({"image_size": 96}, "'image_size'"),
        ({"image_size": 128, "face_crop": True}, "'image_size'"),
        ({"image_size": 224, "face_crop": True, "face_crop_margin": 0.3}, "'face_crop_margin'"),
        ({"backbone": "simple_cnn", "pretrained": True}, "'pretrained'"),
        ({"cv_folds": 3}, "'cv_folds'"),
        ({"extends": "missing"}, "'extends'"),
    ],
)
def test_bad_config_error_names_experiment_and_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        resolve({"e": overrides})
    assert "phase9.e" in str(error.value)
    assert key in str(error.value)


def test_extends_cycle_is_reported():
    with pytest.raises(ConfigError, match="cycle"):
        resolve({"a": {"extends": "b"}, "b": {"extends": "a"}}, "a")


def test_fingerprint_ignores_description_but_not_settings():
    one = resolve({"e": {"image_size": 224, "description": "first"}})
    same = resolve({"e": {"image_size": 224, "description": "another text"}})
    other = resolve({"e": {"image_size": 128}})
    assert config_fingerprint(one, DATA) == config_fingerprint(same, DATA)
    assert config_fingerprint(one, DATA) != config_fingerprint(other, DATA)
    assert config_fingerprint(one, DATA) != config_fingerprint(one, {**DATA, "root": "elsewhere"})
