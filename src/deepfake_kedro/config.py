"""Experiment configuration: inheritance, nested merge, a typed schema and a fingerprint.

An experiment lists only what it changes from the shared defaults; ``extends``
inherits from another experiment of the same phase. The merged result is
validated before any training, so a typo fails fast with the experiment and
key named.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepfake_kedro.models import BACKBONES, CNN_PRESETS

STUDY_WIDE_KEYS = ("seed", "cv_folds", "val_ratio")
"""Keys that define the shared fold table; an experiment may not change them."""


NAME_PATTERN = re.compile(r"[a-z0-9_]+")
"""Phase, experiment and slot names: they become namespaces and folder names under data/."""


class ConfigError(ValueError):
    """A bad experiment configuration, naming the experiment and the key."""


def check_name(name: Any, where: str) -> None:
    """Raises ``ConfigError`` unless ``name`` is lower-case letters, digits and ``_`` only.

    Args:
        name: A phase, experiment or slot name.
        where: The parameter that holds it, e.g. ``phase1.experiments``.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r} may hold only lower-case letters, digits and '_' "
                          f"(it becomes a folder name under data/); rename it")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OptimizerConfig(_Strict):
    type: Literal["adamw"] = "adamw"
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)


class SchedulerConfig(_Strict):
    type: Literal["cosine_annealing", "none"] = "cosine_annealing"
    T_max: int = Field(15, ge=1)


class AugmentConfig(_Strict):
    hflip_p: float = Field(0.0, ge=0, le=1)
    rotation_degrees: float = Field(0.0, ge=0, le=180)
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)
    grayscale_p: float = Field(0.0, ge=0, le=1)
    blur_p: float = Field(0.0, ge=0, le=1)
    erase_p: float = Field(0.0, ge=0, le=1)
    noise_p: float = Field(0.0, ge=0, le=1)
    noise_std: float = Field(0.0, ge=0)


class ExperimentConfig(_Strict):
    """The resolved, validated settings of one experiment."""

    seed: int = 42
    val_ratio: float = Field(0.1, gt=0, lt=0.5)
    test_ratio: float = Field(0.1, gt=0, lt=0.5)
    cv_folds: int = Field(5, ge=2, le=20)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(15, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    early_stopping_patience: int = Field(5, ge=1)
    num_workers: int = Field(4, ge=0)
    compile: bool = False
    """Train through ``torch.compile`` (execution only: not part of the fingerprint)."""
    face_crop: bool = False
    face_crop_margin: float = Field(0.6, ge=0, le=3)
    image_size: int = Field(224, ge=16, le=1024)
    backbone: str = "resnet18"
    cnn_preset: Literal["micro", "small", "medium", "large"] = "medium"
    dropout: float = Field(0.0, ge=0, lt=1)
    pretrained: bool = True
    pretrained_path: str | None = None
    augment: Literal[False] | AugmentConfig = False
    normalization: Literal["imagenet", "real_norm"] = "imagenet"
    subsample: float = Field(0.2, gt=0, le=1)
    subsample_test: bool = True
    """Whether ``subsample`` thins the test part too (phases 1-3 share those smaller test folds); phase 4's
    data scaling sets False below 1.0, so every fraction is tested on the same whole test fold."""
    train_sources: list[str] | Literal["all"] = "all"
    eval_sources: list[str] | Literal["all"] = "all"
    num_classes: int = Field(1, ge=1)
    """1: the binary detector (one logit, BCE); 2 or more: that many logits, cross-entropy over class indices."""
    description: str = ""

    @model_validator(mode="after")
    def _check_combinations(self) -> ExperimentConfig:
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone: unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}"
            )
        if self.backbone == "simple_cnn" and self.pretrained:
            raise ValueError("pretrained: simple_cnn has no pretrained weights; set pretrained: false")
        if self.cnn_preset not in CNN_PRESETS:
            raise ValueError(f"cnn_preset: choose one of {sorted(CNN_PRESETS)}")
        if self.normalization == "real_norm" and self.num_classes > 1:
            # Class 0 is "real" only for the binary detector; attribution's family and source levels have none.
            raise ValueError("normalization: real_norm takes the statistics of the real training images, which a "
                             "multi-class model does not single out; use imagenet")
        return self


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, nested mappings merged key by key (copies; inputs untouched)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def active_experiments(experiments: Mapping[str, Any] | None) -> dict[str, Any]:
    """A phase's experiments, without those an environment drops by setting them to null.

    Parameters merge softly, so an environment cannot delete a base experiment; ``name: null`` in its
    ``parameters_<phase>.yml`` does (e.g. phase 2's DFF source hold-outs on another dataset).
    """
    return {name: overrides for name, overrides in (experiments or {}).items() if overrides is not None}


def _inheritance_chain(name: str, experiments: Mapping[str, Any], label: str) -> list[str]:
    chain, current = [], name
    while current is not None:
        if current in chain:
            raise ConfigError(f"experiment {label!r}: 'extends' forms a cycle: {' -> '.join(chain + [current])}")
        if current in experiments and experiments[current] is None:
            raise ConfigError(
                f"experiment {label!r}: {'it' if current == name else repr(current)} is set to null (dropped by "
                f"this environment); give {label!r} its own keys instead of 'extends', or drop it too"
            )
        if current not in experiments:
            known = ", ".join(sorted(active_experiments(experiments)))
            raise ConfigError(
                f"experiment {label!r}: key 'extends' names {current!r}, which is not an experiment "
                f"of this phase (known: {known})"
            )
        chain.append(current)
        overrides = experiments[current]
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"experiment {current!r}: expected a mapping of overrides, got {overrides!r}")
        current = overrides.get("extends")
    return chain


def _check_sources(config: ExperimentConfig, sources: Mapping[str, str], label: str) -> None:
    for key in ("train_sources", "eval_sources"):
        chosen = getattr(config, key)
        if chosen == "all":
            continue
        unknown = sorted(set(chosen) - set(sources))
        if unknown:
            raise ConfigError(
                f"experiment {label!r}: key {key!r} names unknown sources {unknown}; "
                f"data.sources has {sorted(sources)}. Phase 2's source hold-outs and the generalisation "
                "experiments name DeepFakeFace's folders: for other sources, name yours in those experiments, or "
                "drop them in your environment's parameters with '<experiment>: null' (README, 'Another dataset')"
            )
        labels = {sources[s] for s in chosen}
        if labels != {"real", "fake"}:  # a model learns, and an AUC is measured, only from both classes
            raise ConfigError(
                f"experiment {label!r}: key {key!r} must include at least one real and one fake source, "
                f"got {chosen}"
            )


def _describe(error: ValidationError) -> str:
    """The most specific problem of a validation error, as 'key 'a.b': message (got x)'."""
    # A union (augment: false | mapping) reports one error per branch: the deepest is the useful one.
    first = max(error.errors(), key=lambda e: len(e["loc"]))
    parts = [str(p) for p in first["loc"] if not (str(p) in {"AugmentConfig"} or "[" in str(p))]
    message = first["msg"].removeprefix("Value error, ")
    if not parts and ": " in message:  # cross-field checks name their key in the message
        key, message = message.split(": ", 1)
        return f"key {key!r}: {message}"
    shown = "" if first["type"] == "value_error" else f" (got {first.get('input')!r})"
    return f"key {'.'.join(parts) or '<root>'!r}: {message}{shown}"


def resolve_experiment(
    name: str,
    experiments: Mapping[str, Any],
    defaults: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> ExperimentConfig:
    """Merges defaults, the ``extends`` chain and the experiment's overrides, then validates.

    Args:
        name: The experiment's key in ``experiments``.
        experiments: All experiments of the phase, each a mapping of overrides.
        defaults: The shared defaults (``defaults`` in parameters.yml).
        sources: ``data.sources``, to check ``train_sources`` / ``eval_sources``.
        preprocessing: The ``preprocessing`` parameters, to check that a cache exists for the
            experiment's ``image_size`` (and ``face_crop_margin``).
        label: How errors name the experiment (defaults to ``name``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Naming the experiment and the offending key.
    """
    label = label or name
    check_name(name, f"experiment {label!r}")
    chain = _inheritance_chain(name, experiments, label)
    for overrides in (experiments[n] or {} for n in chain):
        changed = [k for k in STUDY_WIDE_KEYS if k in overrides]
        if changed:
            raise ConfigError(
                f"experiment {label!r}: key {changed[0]!r} is study-wide (it defines the shared fold table); "
                f"set it under 'defaults' in parameters.yml instead"
            )
    merged = deep_merge({}, defaults)
    for ancestor in reversed(chain):
        merged = deep_merge(merged, experiments[ancestor] or {})
    merged.pop("extends", None)
    if "data_dir" in merged:
        raise ConfigError(
            f"experiment {label!r}: key 'data_dir' is set once for the study as data.root in parameters.yml "
            f"(all experiments share one image index and fold table)"
        )
    try:
        config = ExperimentConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(f"experiment {label!r}: {_describe(error)}") from None
    if sources is not None:
        _check_sources(config, sources, label)
    if preprocessing is not None:
        _check_cache_exists(config, preprocessing, label)
    return config


def validate_defaults(defaults: Mapping[str, Any]) -> ExperimentConfig:
    """Validates the study-wide ``defaults`` block with the experiments' schema and messages.

    Preprocessing and EDA read ``seed``, ``cv_folds`` and ``val_ratio`` from it, so a bad value
    fails there too, naming the key (e.g. ``val_ratio: 0`` or ``1.5``).

    Raises:
        ConfigError: ``defaults: key 'val_ratio': ...``.
    """
    return _validate_block(ExperimentConfig, defaults, "defaults")


def _validate_block(schema: type[BaseModel], block: Any, name: str) -> Any:
    """``block`` (a top-level mapping of parameters.yml) validated by ``schema``; errors name the key."""
    if not isinstance(block, Mapping):
        raise ConfigError(f"{name}: expected a mapping of settings in parameters.yml, got {block!r}")
    try:
        return schema.model_validate(dict(block))
    except ValidationError as error:
        raise ConfigError(f"{name} (parameters.yml): {_describe(error)}{_close_key(schema, error)}") from None


def _close_key(schema: type[BaseModel], error: ValidationError) -> str:
    """'; did you mean 'root'?' for an unknown key close to one of its mapping's keys, else ''."""
    first = max(error.errors(), key=lambda e: len(e["loc"]))
    if first["type"] != "extra_forbidden":
        return ""
    *parents, key = first["loc"]
    for part in parents:  # down to the nested model that holds the unknown key
        field = schema.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        schema = annotation
    close = difflib.get_close_matches(str(key), list(schema.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(schema.model_fields)}"


class FaceDetectionConfig(_Strict):
    """``preprocessing.face_detection``: MTCNN's batch, confidence threshold and device."""

    batch_size: int | None = Field(None, ge=1)
    min_confidence: float = Field(0.9, gt=0, le=1)
    device: str | None = None


class NearDuplicatesConfig(_Strict):
    """``preprocessing.near_duplicates``: how close two perceptual hashes must be to join one group."""

    # pHash has 64 bits; far above DFF's 4, unrelated faces start to match and groups swallow the data.
    max_distance: int = Field(4, ge=0, le=16)


class PreprocessingConfig(_Strict):
    """The study-wide ``preprocessing`` block: caches, face crops, near-duplicates, previews."""

    image_sizes: list[int]
    min_image_size: int = Field(32, ge=1)
    face_crop_sizes: list[int] = []
    face_crop_margin: float = Field(0.6, ge=0, le=3)
    face_detection: FaceDetectionConfig = FaceDetectionConfig()
    near_duplicates: NearDuplicatesConfig = NearDuplicatesConfig()
    preview_images_per_source: int = Field(4, ge=0)
    augment_preview: Literal[False] | AugmentConfig = False

    @model_validator(mode="after")
    def _check_sizes(self) -> PreprocessingConfig:
        for key in ("image_sizes", "face_crop_sizes"):
            for size in getattr(self, key):
                if not 16 <= size <= 1024:  # the range experiments' image_size may take
                    raise ValueError(f"{key}: every size must lie in [16, 1024], got {size}")
        if not self.image_sizes:
            raise ValueError("image_sizes: list at least one square-crop size")
        return self


def validate_preprocessing(preprocessing: Mapping[str, Any]) -> PreprocessingConfig:
    """Validates the ``preprocessing`` block before any node reads it (a typo or impossible value names its key).

    Raises:
        ConfigError: ``preprocessing (parameters.yml): key 'image_sizes': ...``.
    """
    return _validate_block(PreprocessingConfig, preprocessing, "preprocessing")


class DataConfig(_Strict):
    """The study-wide ``data`` block: where the raw tree is and what its folders are."""

    root: str
    sources: dict[str, Literal["real", "fake"]]
    families: dict[str, Any] | None = None  # validate_families checks it against sources where it is used


def validate_data(data: Mapping[str, Any]) -> DataConfig:
    """Validates the ``data`` block before any node reads it (``data.rot`` would otherwise be ignored).

    Raises:
        ConfigError: ``data (parameters.yml): key 'rot': Extra inputs are not permitted ...; did you mean 'root'?``.
    """
    return _validate_block(DataConfig, data, "data")


class DownloadConfig(_Strict):
    """The ``download`` block: which DFF archives to fetch from the Hub, and where the zips are kept."""

    repo_id: str
    repo_type: Literal["dataset", "model", "space"] = "dataset"
    revision: str | None = None
    archives: list[str] | str  # a string is one archive, or several separated by commas
    archive_dir: str | None = None
    local_archive_dir: str | None = None


def validate_download(download: Mapping[str, Any]) -> DownloadConfig:
    """Validates the ``download`` block before the download runs (a misspelt folder would be ignored).

    Raises:
        ConfigError: ``download (parameters.yml): key 'local_archives_dir': ...; did you mean 'local_archive_dir'?``.
    """
    return _validate_block(DownloadConfig, download, "download")


class EdaConfig(_Strict):
    """The ``eda`` block: the metadata shortcut's warning level and how many images the figures sample."""

    shortcut_warn_above: float = Field(0.75, ge=0, le=1)
    colour_images_per_source: int = Field(200, ge=1)
    grid_images_per_source: int = Field(8, ge=1)


def validate_eda(eda: Mapping[str, Any]) -> EdaConfig:
    """Validates the ``eda`` block before the eda pipeline reads it.

    Raises:
        ConfigError: ``eda (parameters.yml): key 'shortcut_warn_abov': ...; did you mean 'shortcut_warn_above'?``.
    """
    return _validate_block(EdaConfig, eda, "eda")


def _known_experiment(reference: Any, phase: str, parameters: Mapping[str, Any]) -> bool:
    """Whether ``reference`` names an experiment of ``phase``, or ``<other phase>.<experiment>``."""
    if not isinstance(reference, str):
        return False
    other, _, name = reference.rpartition(".")
    return name in active_experiments((parameters.get(other or phase) or {}).get("experiments"))


def check_references(parameters: Mapping[str, Any], phases: list[str]) -> None:
    """Every experiment a phase's comparisons, ``holdout_reference`` and selection steps name must exist.

    Args:
        parameters: All parameters.
        phases: The phases the run includes.

    Raises:
        ConfigError: Naming the phase, the key and the missing experiment.
    """
    for phase in phases:
        settings = parameters.get(phase) or {}
        known = sorted(active_experiments(settings.get("experiments")))
        hint = f"experiments of {phase}: {known}; name another phase's as <phase>.<experiment>"
        for number, pair in enumerate(settings.get("comparisons") or []):
            for role in ("baseline", "treatment"):
                if not _known_experiment((pair or {}).get(role), phase, parameters):
                    raise ConfigError(f"{phase}.comparisons[{number}]: key {role!r} names {(pair or {}).get(role)!r}, "
                                      f"which is not an experiment ({hint})")
        reference = settings.get("holdout_reference")
        if reference is not None and not _known_experiment(reference, phase, parameters):
            raise ConfigError(f"{phase}.holdout_reference names {reference!r}, which is not an experiment ({hint})")
        for number, step in enumerate((settings.get("selection") or {}).get("steps") or []):
            for role in ("baseline", "treatment"):
                if role in (step or {}) and step[role] not in known:
                    raise ConfigError(f"{phase}.selection.steps[{number}]: key {role!r} names {step[role]!r}, "
                                      f"which is not an experiment of {phase} ({known})")


def _check_cache_exists(config: ExperimentConfig, preprocessing: Mapping[str, Any], label: str) -> None:
    sizes_key = "face_crop_sizes" if config.face_crop else "image_sizes"
    sizes = list(preprocessing.get(sizes_key) or [])
    if config.image_size not in sizes:
        raise ConfigError(
            f"experiment {label!r}: key 'image_size' is {config.image_size}, but preprocessing.{sizes_key} "
            f"holds {sorted(sizes)}; add it there so the cache is built"
        )
    if config.face_crop and config.face_crop_margin != preprocessing.get("face_crop_margin"):
        raise ConfigError(
            f"experiment {label!r}: key 'face_crop_margin' is {config.face_crop_margin}, but the face-crop cache "
            f"uses preprocessing.face_crop_margin = {preprocessing.get('face_crop_margin')}; make them equal"
        )


EXECUTION_ONLY = {"description", "num_workers", "compile"}
"""Fields that change how a run executes, not what it learns: outside the fingerprint, so runs are reused."""


def config_fingerprint(config: ExperimentConfig, data: Mapping[str, Any]) -> str:
    """A short hash of everything that changes a training run (not the description).

    Args:
        config: The resolved experiment configuration.
        data: The study's data settings (root and sources), so runs on other data never collide.

    Returns:
        16 hex digits; identical configs on identical data share it.
    """
    # num_classes enters only when it is not the binary default, so the binary runs keep their fingerprints.
    binary_default = {"num_classes"} if config.num_classes == 1 else set()
    # Likewise subsample_test where it changes nothing (its default, or no subsample): stored runs keep theirs.
    test_default = {"subsample_test"} if config.subsample_test or config.subsample >= 1 else set()
    payload = config.model_dump(mode="json", exclude=EXECUTION_ONLY | binary_default | test_default)
    # One folder spelt "/x/tree/" or "/x/./tree" is the same data (normpath leaves clean spellings as they are).
    payload["data"] = {"root": os.path.normpath(str(data.get("root"))), "sources": dict(data.get("sources", {}))}
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def validate_families(data: Mapping[str, Any]) -> dict[str, str]:
    """Checks ``data.families``: every fake source of ``data.sources`` has a family, nothing else has one.

    Args:
        data: The ``data`` parameters (``sources`` and ``families``).

    Returns:
        Fake source -> family, in the order of ``data.sources``.

    Raises:
        ConfigError: Naming the key (``data.families.<source>``) and what to change.
    """
    sources = data.get("sources") or {}
    families = data.get("families")
    fakes = [source for source, kind in sources.items() if kind == "fake"]
    example = ", ".join(f"{source}: <family>" for source in fakes)
    if not isinstance(families, Mapping):
        raise ConfigError(f"data.families: expected a mapping of each fake source to its generator family, got "
                          f"{families!r}; set data.families: {{{example}}} in parameters.yml")
    for source, family in families.items():
        if source not in sources:
            raise ConfigError(f"data.families.{source}: {source!r} is not a source of data.sources "
                              f"({sorted(sources)}); remove it or rename it to a fake source ({fakes})")
        if sources[source] != "fake":
            raise ConfigError(f"data.families.{source}: {source!r} is a {sources[source]} source; only fake sources "
                              f"have a generator family, so remove it")
        check_name(family, f"data.families.{source}")
    missing = [source for source in fakes if source not in families]
    if missing:
        raise ConfigError(f"data.families.{missing[0]}: fake source {missing[0]!r} has no family; add "
                          f"'{missing[0]}: <family>' under data.families (e.g. diffusion, face_swap, gan)")
    return {source: families[source] for source in fakes}
