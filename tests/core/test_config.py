import pytest

from deepfake_kedro.config import (
    ConfigError,
    ExperimentConfig,
    active_experiments,
    check_name,
    check_references,
    config_fingerprint,
    resolve_experiment,
    validate_data,
    validate_defaults,
    validate_download,
    validate_eda,
    validate_families,
    validate_preprocessing,
)
from deepfake_kedro.config_loader import StudyConfigLoader
from deepfake_kedro.settings import CONFIG_LOADER_ARGS
from tests.conftest import PROJECT_ROOT

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


def test_extending_an_experiment_the_environment_dropped_names_both():
    experiments = {"p2a_t1_original": {"backbone": "resnet18"}, "p2a_t3_holdout_text2img": None,
                   "child": {"extends": "p2a_t3_holdout_text2img"}}
    with pytest.raises(ConfigError, match=r"'phase9.child': 'p2a_t3_holdout_text2img' is set to null \(dropped"):
        resolve(experiments, "child")
    assert list(active_experiments(experiments)) == ["p2a_t1_original", "child"]


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


@pytest.mark.parametrize("name", ["x/../../../../tmp/pwn", "P1_Upper", "has space", "dotted.name", ""])
def test_experiment_names_that_are_not_plain_folder_names_are_rejected(name):
    with pytest.raises(ConfigError, match=r"may hold only lower-case letters, digits and '_'"):
        resolve({name: {}}, name=name)
    with pytest.raises(ConfigError, match=r"phase4.scaling: name"):
        check_name(name, "phase4.scaling")
    check_name("p4a_resnet18_20pct", "phase4")


@pytest.mark.parametrize(("val_ratio", "message"), [(0, "greater than 0"), (1.5, "less than 0.5")])
def test_study_wide_defaults_are_validated_with_the_experiment_schema(val_ratio, message):
    with pytest.raises(ConfigError, match=rf"defaults \(parameters.yml\): key 'val_ratio': Input should be {message}"):
        validate_defaults({**DEFAULTS, "val_ratio": val_ratio})
    assert validate_defaults({**DEFAULTS, "val_ratio": 0.25}).val_ratio == 0.25


def test_comparisons_naming_missing_experiments_are_caught_before_training():
    parameters = {
        "phase1": {"experiments": {"a": {}, "b": {}}, "comparisons": [{"baseline": "a", "treatment": "b"}]},
        "phase2": {"experiments": {"c": {}}, "holdout_reference": "c",
                   "comparisons": [{"baseline": "phase1.a", "treatment": "c"}],
                   "selection": {"steps": [{"set": {}, "baseline": "c", "treatment": "c"}]}},
    }
    check_references(parameters, ["phase1", "phase2"])
    cases = [
        ("phase1", "comparisons", [{"baseline": "a", "treatment": "missing"}],
         r"phase1.comparisons\[0\]: key 'treatment' names 'missing', which is not an experiment"),
        ("phase2", "comparisons", [{"baseline": "phase1.zz", "treatment": "c"}],
         r"phase2.comparisons\[0\]: key 'baseline' names 'phase1.zz'"),
        ("phase2", "holdout_reference", "phase3.c", r"phase2.holdout_reference names 'phase3.c'"),
        ("phase2", "selection", {"steps": [{"baseline": "c", "treatment": "d"}]},
         r"phase2.selection.steps\[0\]: key 'treatment' names 'd'"),
    ]
    for phase, key, value, message in cases:
        broken = {**parameters, phase: {**parameters[phase], key: value}}
        with pytest.raises(ConfigError, match=message):
            check_references(broken, ["phase1", "phase2"])


FAMILIES = {"text2img": "diffusion", "inpainting": "diffusion", "insight": "face_swap"}


def test_families_map_every_fake_source_in_source_order():
    shuffled = {"insight": "face_swap", "inpainting": "diffusion", "text2img": "diffusion"}
    assert list(validate_families({**DATA, "families": shuffled})) == ["text2img", "inpainting", "insight"]


@pytest.mark.parametrize(("families", "message"), [
    ({**FAMILIES, "midjourney": "diffusion"}, r"data.families.midjourney: 'midjourney' is not a source of data"),
    ({**FAMILIES, "wiki": "camera"}, r"data.families.wiki: 'wiki' is a real source; .* remove it"),
    ({"text2img": "diffusion", "insight": "face_swap"}, r"data.families.inpainting: fake source 'inpainting' has no "
                                                        r"family; add 'inpainting: <family>' under data.families"),
    ({**FAMILIES, "insight": "Face Swap"}, r"data.families.insight: name 'Face Swap' may hold only lower-case"),
    ({**FAMILIES, "insight": None}, r"data.families.insight: name None"),
    (None, r"data.families: expected a mapping .* set data.families: \{text2img: <family>, inpainting: <family>"),
])
def test_bad_families_are_rejected_naming_the_key(families, message):
    with pytest.raises(ConfigError, match=message):
        validate_families({**DATA, "families": families})


@pytest.mark.parametrize("env", [None, "demo", "faces140k"])
def test_every_shipped_environment_passes_the_strict_blocks(env):
    parameters = StudyConfigLoader(str(PROJECT_ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]
    assert validate_data(parameters["data"]).sources == parameters["data"]["sources"]
    assert validate_download(parameters["download"]).repo_id == "OpenRL/DeepFakeFace"
    validate_eda(parameters["eda"])
    validate_preprocessing(parameters["preprocessing"])


@pytest.mark.parametrize(("validate", "block", "message"), [
    (validate_data, {**DATA, "rot": "/x"}, r"data \(parameters.yml\): key 'rot': Extra inputs .*did you mean 'root'\?"),
    (validate_data, {**DATA, "sources": {"wiki": "genuine"}}, r"key 'sources.wiki': Input should be 'real' or 'fake'"),
    (validate_download, {"repo_id": "r", "archives": ["wiki.zip"], "local_archives_dir": "/zips"},
     r"download \(parameters.yml\): key 'local_archives_dir'.*did you mean 'local_archive_dir'\?"),
    (validate_eda, {"shortcut_warn_abov": 0.8},
     r"eda \(parameters.yml\): key 'shortcut_warn_abov'.*'shortcut_warn_above'"),
    (validate_preprocessing, {"image_sizes": [32], "face_detection": {"batchsize": 8}},
     r"key 'face_detection.batchsize'.*did you mean 'batch_size'\?"),
])
def test_a_misspelt_key_of_a_strict_block_is_named_with_its_close_match(validate, block, message):
    with pytest.raises(ConfigError, match=message):
        validate(block)


@pytest.mark.parametrize("env", [None, "demo", "faces140k"])
def test_every_shipped_environment_gives_each_fake_source_a_family(env):
    data = StudyConfigLoader(str(PROJECT_ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]["data"]
    families = validate_families(data)
    assert set(families) == {s for s, kind in data["sources"].items() if kind == "fake"}


def test_a_binary_config_keeps_the_fingerprint_it_had_before_num_classes_existed():
    import hashlib
    import json

    config = resolve({"e": {"backbone": "resnet34", "epochs": 3}})
    # The fingerprint as computed before the field: every other field, without num_classes (nor subsample_test,
    # added later and left out at its default likewise).
    payload = config.model_dump(mode="json", exclude={"description", "num_workers", "num_classes", "compile",
                                                      "subsample_test"})
    payload["data"] = {"root": DATA["root"], "sources": SOURCES}
    before = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    assert config.num_classes == 1
    assert config_fingerprint(config, DATA) == before
    multi = resolve({"e": {"backbone": "resnet34", "epochs": 3, "num_classes": 4}})
    assert config_fingerprint(multi, DATA) != before


def test_num_classes_below_one_names_the_key():
    with pytest.raises(ConfigError, match=r"phase9.e.*'num_classes'"):
        resolve({"e": {"num_classes": 0}})


def test_execution_only_settings_leave_the_fingerprint_of_stored_runs_unchanged():
    # The fingerprint stored runs carry (computed before `compile` existed): a new execution-only
    # field must not move it, or every finished run would retrain.
    sources = {"real": "real", "fake": "fake"}
    config = ExperimentConfig()
    assert config_fingerprint(config, {"root": "data/01_raw/dff", "sources": sources}) == "cfbe2ab3ad4f461a"
    compiled = config.model_copy(update={"compile": True, "num_workers": 0})
    assert config_fingerprint(compiled, DATA) == config_fingerprint(config, DATA)


def test_subsample_test_enters_the_fingerprint_only_where_it_changes_the_test_rows():
    config = ExperimentConfig()  # subsample 0.2, subsample_test True: the golden fingerprint above holds
    whole_test = config.model_copy(update={"subsample_test": False})
    assert config_fingerprint(whole_test, DATA) != config_fingerprint(config, DATA)
    full = config.model_copy(update={"subsample": 1.0})
    assert config_fingerprint(full.model_copy(update={"subsample_test": False}), DATA) == config_fingerprint(full, DATA)


def test_one_folder_spelt_differently_keeps_one_fingerprint():
    config, sources = ExperimentConfig(), {"real": "real", "fake": "fake"}
    spellings = ["/x/tree", "/x/tree/", "/x/./tree", "/x/other/../tree"]
    assert len({config_fingerprint(config, {"root": root, "sources": sources}) for root in spellings}) == 1
    assert config_fingerprint(config, {"root": "/x/tree2", "sources": sources}) != config_fingerprint(
        config, {"root": "/x/tree", "sources": sources})


def test_dff_hold_outs_on_another_tree_are_rejected_with_the_way_out():
    experiments = {"p2a_t1_original": {}, "p2a_t3_holdout_text2img": {
        "extends": "p2a_t1_original", "train_sources": ["wiki", "inpainting", "insight"]}}
    with pytest.raises(ConfigError) as error:
        resolve_experiment("p2a_t3_holdout_text2img", experiments, {}, sources={"real": "real", "fake": "fake"},
                           label="phase2.p2a_t3_holdout_text2img")
    message = str(error.value)
    assert "phase2.p2a_t3_holdout_text2img" in message and "['inpainting', 'insight', 'wiki']" in message
    assert "['fake', 'real']" in message and "Another dataset" in message


@pytest.mark.parametrize("env", [None, "demo", "faces140k"])
def test_every_shipped_environment_resolves_its_experiments_against_its_own_sources(env):
    # faces140k has one fake source: base's DFF hold-outs must be dropped there, or phase 2 cannot start.
    parameters = StudyConfigLoader(str(PROJECT_ROOT / "conf"), env=env, **CONFIG_LOADER_ARGS)["parameters"]
    for phase in ("phase1", "phase2", "phase3"):
        experiments = parameters[phase]["experiments"]
        for name in active_experiments(experiments):
            resolve_experiment(name, experiments, parameters["defaults"], parameters["data"]["sources"],
                               label=f"{phase}.{name}")
    check_references(parameters, ["phase1", "phase2", "phase3"])


@pytest.mark.parametrize("key", ["train_sources", "eval_sources"])
@pytest.mark.parametrize("chosen", [[], ["text2img", "insight"], ["wiki"]])
def test_sources_to_train_or_evaluate_need_both_classes(key, chosen):
    with pytest.raises(ConfigError, match=rf"phase9.e.*key '{key}' must include at least one real and one fake"):
        resolve({"e": {key: chosen}})


def test_real_norm_is_refused_for_a_multi_class_model():
    with pytest.raises(ConfigError, match=r"phase9.e.*'normalization': real_norm takes the statistics of the real"):
        resolve({"e": {"num_classes": 3, "normalization": "real_norm"}})
