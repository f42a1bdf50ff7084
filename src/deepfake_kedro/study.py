"""The study's shape: its phases, phase 4's slot names, and one resolved experiment as a typed object.

An experiment is resolved once (defaults + ``extends`` + overrides, validated, fingerprinted) into a
``ResolvedExperiment``; every later step reads its config, label and cache from that object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from deepfake_kedro.config import EXECUTION_ONLY, ConfigError, ExperimentConfig, config_fingerprint, resolve_experiment
from deepfake_kedro.image_cache import ImageStack

PHASES = ("phase1", "phase2", "phase3", "phase4")
NAMED_PHASES = PHASES[:3]
"""Phases of named experiments; phase 4 retrains whichever models phases 1-3 rank highest."""
FULL = "full"
"""Suffix of the phase-4 slot trained on the full data (its hard examples and Grad-CAM go in the report)."""
FINAL_QUESTION = "final model (full data):"
"""Prefix of phase 4's tests of the top-ranked model's full run against the others' (the recommendation reads them)."""

_SLOT = re.compile(r"top([1-9][0-9]*)_([A-Za-z0-9]+)")


@dataclass(frozen=True)
class Slot:
    """A phase-4 slot ``top<rank>_<suffix>``: the model ranked ``rank``, at the data fraction named ``suffix``."""

    rank: int
    suffix: str

    @property
    def name(self) -> str:
        return f"top{self.rank}_{self.suffix}"

    @property
    def full(self) -> bool:
        """The full-dataset run (p4b) rather than a scaling point (p4a)."""
        return self.suffix == FULL

    def experiment_name(self, model: str) -> str:
        """``p4b_<model>_full`` for the full run, ``p4a_<model>_<suffix>`` for a scaling point."""
        return f"p4b_{model}_{FULL}" if self.full else f"p4a_{model}_{self.suffix}"

    def chosen_model(self, selected: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        """The entry of the model selection's ``selected`` list that this slot retrains."""
        if self.rank > len(selected):
            raise ConfigError(f"phase4 slot {self.name!r}: the model selection names only {len(selected)} models; "
                              f"set phase4.ranking.top_k (or override) to {self.rank} or more")
        return selected[self.rank - 1]


def parse_slot(slot: str) -> Slot:
    """Reads ``top<k>_<suffix>`` (e.g. ``top1_20pct``); anything else is an error naming the slot."""
    match = _SLOT.fullmatch(slot)
    if match is None:
        raise ConfigError(f"phase4 slot {slot!r}: expected top<rank>_<suffix> such as 'top1_20pct' or 'top2_full' "
                          f"(suffixes are the keys of phase4.scaling, plus {FULL!r})")
    return Slot(int(match.group(1)), match.group(2))


def phase4_slots(top_k: int, scaling_suffixes: Iterable[str]) -> list[Slot]:
    """Every phase-4 slot: each of the ``top_k`` models at each scaling fraction, and once on the full data."""
    suffixes = [*scaling_suffixes, FULL]
    for suffix in suffixes:
        parse_slot(f"top1_{suffix}")  # a suffix the slot name could not carry fails here, naming it
    return [Slot(rank, suffix) for rank in range(1, top_k + 1) for suffix in suffixes]


def cache_name(config: ExperimentConfig) -> str:
    """The image cache an experiment reads (face crops or plain square crops, at its size)."""
    return f"{'face' if config.face_crop else 'square'}_{config.image_size}"


@dataclass(frozen=True)
class ResolvedExperiment:
    """One experiment after resolution: where it sits in the study, its validated config and fingerprint.

    Attributes:
        phase: ``phase1`` ... ``phase4``.
        name: The experiment's name (for phase 4, ``p4a_<model>_<suffix>`` or ``p4b_<model>_full``).
        config: The validated configuration.
        fingerprint: Hash of everything that changes training; identical configs share fold runs.
        slot: The phase-4 slot (``top1_20pct`` ...); None in phases 1-3.
        model: The phase-4 model name; None in phases 1-3.
        preprocessing_source: What decided the preprocessing laid over it (phases 3-4); None otherwise.
    """

    phase: str
    name: str
    config: ExperimentConfig
    fingerprint: str
    slot: str | None = None
    model: str | None = None
    preprocessing_source: str | None = None

    @property
    def label(self) -> str:
        """``<phase>.<experiment>``, as logs, titles and errors name it."""
        return f"{self.phase}.{self.name}"

    @property
    def cache_name(self) -> str:
        """The image cache it trains on (``square_<size>`` or ``face_<size>``)."""
        return cache_name(self.config)

    def cache(self, image_cache: Mapping[str, ImageStack], face_cache: Mapping[str, ImageStack]) -> ImageStack:
        """Its image stack, from the face-crop caches or the square-crop caches."""
        caches = face_cache if self.config.face_crop else image_cache
        if self.cache_name not in caches:
            raise KeyError(f"{self.label}: no image cache {self.cache_name!r} (have {sorted(caches)}); "
                           f"run the preprocessing pipeline with this size in preprocessing")
        return caches[self.cache_name]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``experiment``, ``phase``, ``fingerprint``, ``config`` and the optional keys that are set)."""
        data: dict[str, Any] = {"experiment": self.name, "phase": self.phase, "fingerprint": self.fingerprint,
                                "config": self.config.model_dump(mode="json")}
        optional = {"slot": self.slot, "model": self.model, "preprocessing_source": self.preprocessing_source}
        return {**data, **{key: value for key, value in optional.items() if value is not None}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "resolved experiment") -> ResolvedExperiment:
        """Reads ``to_json``'s form, validating the config again.

        Raises:
            ConfigError: Naming ``where`` and the missing key or the invalid config key.
        """
        missing = [key for key in ("experiment", "phase", "fingerprint", "config") if key not in data]
        if missing:
            raise ConfigError(f"{where}: missing key {missing[0]!r}; re-run the experiment's resolve node")
        try:
            config = ExperimentConfig.model_validate(data["config"])
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(["config", *(str(part) for part in first["loc"])])
            raise ConfigError(f"{where}: key {key!r}: {first['msg']}; re-run the experiment's resolve node") from None
        return cls(data["phase"], data["experiment"], config, data["fingerprint"], data.get("slot"),
                   data.get("model"), data.get("preprocessing_source"))


def resolve(
    phase: str, name: str, experiments: Mapping[str, Any], defaults: Mapping[str, Any], data: Mapping[str, Any],
    preprocessing: Mapping[str, Any], **placement: str,
) -> ResolvedExperiment:
    """Merges defaults, ``extends`` and overrides of ``experiments[name]``, validates and fingerprints them.

    Args:
        phase: The phase name.
        name: The experiment's key in ``experiments``.
        experiments: Experiment name -> overrides.
        defaults: Shared defaults.
        data: ``data.root`` and ``data.sources`` (both enter the fingerprint).
        preprocessing: The sizes (and face-crop margin) the caches hold.
        **placement: ``slot``, ``model``, ``preprocessing_source`` where they apply.

    Returns:
        The resolved experiment.

    Raises:
        ConfigError: Naming ``<phase>.<name>`` and the offending key.
    """
    config = resolve_experiment(name, experiments, defaults, data["sources"], preprocessing, label=f"{phase}.{name}")
    return ResolvedExperiment(phase, name, config, config_fingerprint(config, data), **placement)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(stored: ResolvedExperiment, current: ResolvedExperiment) -> list[str]:
    """What separates a stored experiment from what the parameters resolve it to now: empty when they train alike.

    Args:
        stored: The resolution its fold runs and metrics were made with (``resolved_config.json``).
        current: The same experiment resolved from the current parameters.

    Returns:
        One ``key: old -> new`` line per changed config key (keys outside the fingerprint left out), the
        experiment's name when a phase-4 slot now holds another model, or the data settings when only they
        differ.
    """
    if stored.fingerprint == current.fingerprint:
        return []
    changes = [f"experiment: {stored.name} -> {current.name}"] if stored.name != current.name else []
    # The fingerprint also holds data.root and data.sources, which resolved_config.json does not record.
    return changes + config_diff(stored.config, current.config) or ["data.root or data.sources"]


def config_diff(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """One ``key: old -> new`` line per config key that changes training (keys outside the fingerprint left out)."""
    before = _flatten(old.model_dump(mode="json", exclude=EXECUTION_ONLY))
    after = _flatten(new.model_dump(mode="json", exclude=EXECUTION_ONLY))
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in sorted(before.keys() | after.keys())
            if before.get(key) != after.get(key)]
