"""Kedro datasets for the project's own storage: raw image trees, image caches, fold runs, resolved
experiments, image folders; and kedro-datasets' CSV, Parquet, JSON, text and figure datasets, written atomically.

Thin adapters: the storage logic lives in Kedro-free core modules. Three of them execute a plan on save
(plan / execute-on-save, see docs/architecture.md): a node returns what should exist (cache images to render,
face boxes to detect, folds to train) and the dataset's ``save`` does only the work not done yet, so a killed
run resumes where it stopped: each fold is written as it finishes, per-image tables (the audit, face boxes) keep
their progress beside the table every minute, and an image cache, quick to render, is written once complete.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset, ParquetDataset
from kedro_datasets.text import TextDataset

from deepfake_kedro.commands import kedro_run
from deepfake_kedro.config import ConfigError, ExperimentConfig
from deepfake_kedro.data_index import ImageTree, write_tree
from deepfake_kedro.download import DownloadPlan, download_dataset
from deepfake_kedro.image_cache import (
    ImageStack,
    ImageStackPlan,
    TablePlan,
    read_image_stack,
    write_image_stack,
    write_table,
)
from deepfake_kedro.model_package import ModelPackage, load_package, save_package
from deepfake_kedro.report_sections import ReportSection, ordered, out_of_date
from deepfake_kedro.resumable import Part, write_parts
from deepfake_kedro.run_store import FoldResult, FoldRunStore, run_key
from deepfake_kedro.selection import is_ranked
from deepfake_kedro.study import (
    NAMED_PHASES,
    PHASES,
    ResolvedExperiment,
    config_changes,
    config_diff,
    parse_slot,
)
from deepfake_kedro.thresholds import threshold_rule

logger = logging.getLogger(__name__)


class ImageTreeDataset(AbstractDataset[Mapping[str, bytes], ImageTree]):
    """A folder ``root/<source>/**/<image>`` of raw images; read-only unless ``writable``.

    Loading returns an ``ImageTree`` (a listing; images are read on demand).
    """

    def __init__(self, path: str, writable: bool = False, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self._writable = writable
        self.metadata = metadata

    def load(self) -> ImageTree:
        return ImageTree(self._path)

    def as_found(self) -> ImageTree:
        """The folder as it is now, without generating anything (``load`` may, for the demo)."""
        return ImageTree(self._path)

    def save(self, data: Mapping[str, bytes]) -> None:
        if not self._writable:
            raise DatasetError(f"refusing to write into the raw image folder {self._path} (dataset is read-only)")
        write_tree(self._path, data.items())

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "writable": self._writable}


class DemoImageTreeDataset(ImageTreeDataset):
    """The synthetic demo images: generated deterministically on first load, and again when stale.

    ``demo_data.ensure_generated_tree`` keeps the tree that of the generator's version and arguments, and
    never overwrites a folder of images it did not write.
    """

    def __init__(self, path: str, generator_args: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None):
        super().__init__(path, writable=True, metadata=metadata)
        self._generator_args = generator_args or {}

    def load(self) -> ImageTree:
        from deepfake_kedro.demo_data import ensure_generated_tree

        ensure_generated_tree(self._path, self._generator_args)
        return super().load()

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "generator_args": self._generator_args}


class ProjectPathDataset(AbstractDataset[None, Path]):
    """The project folder, for parameters that name folders relative to it (``download.archive_dir``).

    Kedro anchors a relative catalog ``path`` at the project (``.`` is the project itself), whichever folder
    the run or notebook starts from; a node reads it as this dataset rather than from the cwd.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        return self._path

    def save(self, data: None) -> None:
        raise DatasetError("ProjectPathDataset is read-only: it names the project folder")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class DownloadedImageTreeDataset(AbstractDataset[DownloadPlan, ImageTree]):
    """A raw image tree fetched as archives (DFF's four zips): saving a plan fetches and extracts what is missing.

    Each archive becomes ``path/<its stem>/``, extracted once; loading returns the tree as ``ImageTreeDataset``.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ImageTree:
        return ImageTree(self._path)

    def save(self, data: DownloadPlan) -> None:
        download_dataset(data, self._path)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ImageCaches(Mapping[str, ImageStack]):
    """The stacks of one cache folder, opened by name on first use (a reader names the one it needs).

    A reader asks for exactly the stack its configuration names (``square_<size>`` for a size of
    ``preprocessing.image_sizes``), never for "whatever is in the folder"; a missing one is an error
    that names the folder and what to run.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._opened: dict[str, ImageStack] = {}

    def __getitem__(self, name: str) -> ImageStack:
        if name not in self._opened:
            if not (self.path / name / "manifest.json").is_file():
                raise KeyError(
                    f"no {name!r} cache in {self.path} (it holds {sorted(self) or 'none'}); check that its size is "
                    f"in preprocessing.image_sizes / face_crop_sizes and run the preprocessing pipeline of this "
                    f"environment ({kedro_run('--pipelines preprocessing')})"
                )
            self._opened[name] = read_image_stack(self.path / name)
        return self._opened[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(p.parent.name for p in self.path.glob("*/manifest.json")))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class RenderedImageCacheDataset(AbstractDataset[Mapping[str, ImageStackPlan], ImageCaches]):
    """A folder of memory-mapped image stacks, one sub-folder per name (e.g. ``square_128``).

    Saving a plan renders the images a stack lacks (new or changed images) and reuses the rest.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ImageCaches:
        return ImageCaches(self._path)

    def save(self, data: Mapping[str, ImageStackPlan]) -> None:
        for name, plan in data.items():
            write_image_stack(plan, self._path / name)

    def _exists(self) -> bool:
        return any(self._path.glob("*/manifest.json"))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class TrainedFoldsDataset(AbstractDataset[Mapping[str, FoldResult | Callable[[], FoldResult]], FoldRunStore]):
    """Per-fold checkpoints, histories, predictions and rows under ``<fingerprint>/fold_<k>/``.

    Saving a plan trains the missing folds: of a mapping of lazy runs, only the folds not complete yet or
    whose data key changed are trained, each written as soon as it finishes, so a killed run resumes at
    the next fold.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> FoldRunStore:
        return FoldRunStore(self._path)

    def save(self, data: Mapping[str, FoldResult | Callable[[], FoldResult]]) -> None:
        from deepfake_kedro.runners import on_dask_worker, save_folds_on_dask

        if on_dask_worker():  # the DaskRunner: one task per missing fold
            save_folds_on_dask(FoldRunStore(self._path), data)
        else:
            FoldRunStore(self._path).save_all(data)

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


def _check_evaluated(label: str, phase: str, fingerprint: str, store: FoldRunStore, metrics: dict[str, Any],
                     files: dict[str, Path]) -> None:
    """Refuses results whose metrics (and so threshold) belong to another config or to older fold runs."""
    rerun = f"run its phase to evaluate it again ({kedro_run(f'--pipelines {phase}')}; finished folds are skipped)"
    if metrics.get("fingerprint") != fingerprint:
        raise DatasetError(f"{label}: {files['metrics']} was computed for config {metrics.get('fingerprint')!r}, "
                           f"but {files['resolved']} is config {fingerprint!r}; {rerun}")
    # Summaries written before data keys were recorded have none to compare.
    for fold, recorded in enumerate(metrics.get("data_keys") or []):
        key = run_key(fingerprint, fold)
        if store.is_complete(key) and store.data_key(key) != recorded:
            raise DatasetError(f"{label}: fold {fold} was retrained on other data ({store.root / key}) after "
                               f"{files['metrics']} was written; {rerun}")


class CurrentResolutions:
    """What each experiment resolves to under the current parameters, by its own resolve node.

    Each experiment's pipeline resolves it in the node that outputs ``<label>.resolved_config``; running that node
    again on the current parameters (and on the stored phase-2 choice and phase-4 ranking it reads) says what the
    experiment would be if its phase ran now. Attribution resolves each approach's models in one node
    (``attribution.<approach>.models``, as JSON), so its models are found by their label in what those return.
    The ``evaluation`` block says how a phase would evaluate them now (the threshold rule), which no fingerprint
    holds. Picklable, so it travels to Dask workers with the catalog.
    """

    def __init__(self, nodes: Mapping[str, Any], inputs: Mapping[str, Any], model_lists: Iterable[Any] = (),
                 evaluation: Mapping[str, Any] | None = None):
        """``nodes``: label -> its resolve node; ``inputs``: each input name -> a value or a dataset to load;
        ``model_lists``: attribution's nodes resolving an approach's models at once; ``evaluation``: the
        ``evaluation`` parameters (None: not known, so not compared)."""
        self._nodes = dict(nodes)
        self._inputs = dict(inputs)
        self._model_lists = list(model_lists)
        self._evaluation = dict(evaluation) if evaluation is not None else None
        self._rule: str | None = None
        self._rule_known = False

    def resolve(self, label: str) -> Any:
        """``label`` resolved from the current parameters (a ``ResolvedExperiment``, or an attribution model: both
        have ``config`` and ``fingerprint``), or None when no pipeline of the study resolves it.

        Raises:
            DatasetError: An input it reads (phase 2's choice, phase 4's ranking) cannot be loaded.
        """
        node = self._nodes.get(label)
        if node is not None:
            return self._call(node)
        if self._model_lists and label.startswith("attribution."):
            from deepfake_kedro.attribution import AttributionModel  # torch and Grad-CAM: only when asked

            for node in self._model_lists:
                found = [model for model in map(AttributionModel.from_json, self._call(node)) if model.label == label]
                if found:
                    return found[0]
        return None

    def _call(self, node: Any) -> Any:
        values = [self._inputs[name].load() if isinstance(self._inputs[name], AbstractDataset) else self._inputs[name]
                  for name in node.inputs]
        # Called directly, not by node.run, which logs a changed parameter that no longer validates as a failed node.
        return node.func(*values)

    def resolve_or_warn(self, label: str, reader: str) -> Any:
        """``resolve``, or None (with a warning naming ``reader``) when the current parameters cannot say."""
        try:
            return self.resolve(label)
        except (DatasetError, ConfigError) as error:
            logger.warning("%s: %s not checked against the current parameters (%s)", reader, label, error)
            return None

    def labels(self) -> list[str]:
        """Every experiment (``<phase>.<experiment>``) the current parameters resolve, in the pipelines' order."""
        return list(self._nodes)

    def threshold_rule(self) -> str | None:
        """The rule choosing each fold's threshold now, as metrics.json records it (None: unknown or invalid)."""
        if not self._rule_known:  # once: every experiment and section compares against it; an invalid one warns once
            self._rule_known = True
            if self._evaluation is not None:
                try:
                    self._rule = threshold_rule(self._evaluation.get("threshold")).describe()
                except ValueError as error:  # the phase's own run names it; here it cannot say what would change
                    logger.warning("evaluation.threshold not compared with the stored metrics (%s)", error)
        return self._rule


class FinishedExperiments:
    """Any finished experiment's results, found by its label ``<phase>.<experiment>`` under the data folder.

    The layout is that of catalog.yml's ``{phase}.{experiment}.*`` entries (resolved_config.json, the fold
    runs, metrics.json, fold_metrics.csv), so a run parameter (``predict.model``) can pick the experiment.
    Given ``current`` (the run's parameters, set by ``hooks.CurrentParametersHook``), an experiment whose
    parameters changed since its phase ran is refused rather than used stale.
    """

    def __init__(self, data_dir: Path, current: CurrentResolutions | None = None):
        self.data_dir = Path(data_dir)
        self.current = current
        # (label, stored fingerprint) -> its changes: several final models check one ranking, warned about once.
        self._checked: dict[tuple[str, str], list[str]] = {}
        self._ranking: list[str] | None = None

    def load(self, label: str, thresholds: bool = True
             ) -> tuple[ResolvedExperiment, FoldRunStore, dict[str, Any], pd.DataFrame]:
        """The resolved config, fold runs, metrics summary and per-fold metrics of ``label``.

        Args:
            label: ``<phase>.<experiment>``.
            thresholds: Whether the reader applies the stored fold thresholds (the package, the external
                sets); robustness reports AUC only, so a changed ``evaluation.threshold`` leaves it unaffected.

        Raises:
            DatasetError: ``label`` is not ``<phase>.<experiment>``, a file is missing (naming it), the
                metrics were computed for another config or other fold runs than those now stored, the
                current parameters resolve the experiment differently (naming the changed keys), or, with
                ``thresholds``, the thresholds were chosen by another rule than ``evaluation.threshold``'s.
        """
        phase, _, experiment = label.partition(".")
        if not phase or not experiment:
            raise DatasetError(f"predict.model is {label!r}; write it as <phase>.<experiment>, "
                               "e.g. phase4.top1_full or phase1.p1_resnet18_baseline")
        files = {"resolved": self._resolved_path(label),
                 "metrics": self._reporting_dir(label) / "metrics.json",
                 "fold_metrics": self._reporting_dir(label) / "fold_metrics.csv"}
        run_phase = kedro_run(f"--pipelines {phase}")
        for path in files.values():
            if path.exists():
                continue
            hint = ""
            if not files["resolved"].exists():
                # Never resolved here: it may be unfinished or misspelt, so name what this phase has resolved.
                phase_dir = files["resolved"].parent.parent
                known = sorted(p.name for p in phase_dir.iterdir() if p.is_dir()) if phase_dir.is_dir() else []
                close = difflib.get_close_matches(experiment, known, n=1)
                hint = (f" ({phase}'s experiments here: {known or 'none yet'}"
                        f"{f'; did you mean {phase}.{close[0]}?' if close else ''}); if the name is right,")
            raise DatasetError(f"{label} is not finished: {path} does not exist;{hint} run its phase first "
                               f"({run_phase})")
        resolved = ResolvedExperiment.from_json(json.loads(files["resolved"].read_text()), where=str(files["resolved"]))
        store = FoldRunStore(self.data_dir / "06_models" / "runs")
        metrics = json.loads(files["metrics"].read_text())
        _check_evaluated(label, phase, resolved.fingerprint, store, metrics, files)
        self._check_current(label, phase, resolved)
        if thresholds and (changes := self._evaluation_changes(metrics)):
            # The threshold is no part of the fingerprint: the package and the external sets would apply the old one.
            raise DatasetError(
                f"{label} was evaluated under other settings than the current ones ({'; '.join(changes)}): its "
                f"thresholds, and every metric taken at them, describe the old ones. Run its phase again "
                f"({kedro_run(f'--pipelines {phase}')}; finished folds are skipped, the evaluation reruns), or "
                "restore the parameters.")
        return resolved, store, metrics, pd.read_csv(files["fold_metrics"])

    def _check_current(self, label: str, phase: str, stored: ResolvedExperiment) -> None:
        """Refuses an experiment whose parameters changed after its phase ran: its results are no longer theirs."""
        if self.current is None:
            return
        changes = self._changes(label, stored)
        if changes:
            raise DatasetError(
                f"{label} was trained under other parameters than the current ones ({'; '.join(changes)}): its "
                f"results describe the old ones. Run its phase again ({kedro_run(f'--pipelines {phase}')}; folds "
                f"still current are skipped), or restore the parameters.")
        source, changes = self._source_changes(stored)
        rerun = (f"Run the study up to phase 4 again ({kedro_run('--pipelines phase4')}; folds still current are "
                 "skipped), or restore the parameters.")
        if changes:
            # Phase 4 copied the ranked experiment's config: its ranking and retraining predate the change.
            raise DatasetError(
                f"{label} retrains {source}, ranked by phase 4, whose parameters changed since it ran "
                f"({'; '.join(changes)}): the ranking and {label} describe the old ones. {rerun}")
        ranked = self._ranking_changes(stored)
        if ranked:
            raise DatasetError(
                f"{label} was chosen by phase 4's ranking of the experiments of phases 1-3, some of which changed "
                f"since it ran ({'; '.join(ranked)}): the ranking may no longer choose {source}. {rerun}")

    def refuse_stale(self, labels: Iterable[str], reader: str, alternative: str = "restore the parameters",
                     thresholds: bool = True) -> None:
        """Refuses ``reader`` reading results of ``labels`` that do not match the current parameters.

        Unlike ``load``, every experiment is checked before refusing, so one message names them all: those that
        resolve differently now (with the changed keys), the final models whose phase-4 ranking read changed
        experiments, and those that have not run (added to the parameters since their phase ran, or a phase that
        never ran, named once). With ``thresholds``, also those evaluated by another ``evaluation.threshold``
        rule (a reader of AUCs alone passes False).

        Raises:
            DatasetError: Naming each such experiment and the ``kedro run`` that brings them up to date.
        """
        message = self.stale_message(labels, reader, alternative, thresholds)
        if message:
            raise DatasetError(message)

    def phase_labels(self, phases: Iterable[str]) -> list[str]:
        """Every experiment of ``phases`` that the current parameters resolve (none without them)."""
        prefixes = tuple(f"{phase}." for phase in phases)
        return [label for label in self.current.labels() if label.startswith(prefixes)] if self.current else []

    def stale_message(self, labels: Iterable[str], reader: str, alternative: str = "restore the parameters",
                      thresholds: bool = True) -> str | None:
        """What ``refuse_stale`` says about ``labels``, or None when their results match the current parameters."""
        if self.current is None:
            return None
        labels = list(labels)
        # Change -> the experiments it applies to: a phase4.training change is one line for all final models.
        changed: dict[str, list[str]] = {}
        not_run, reranked, ranking = [], [], []
        for label in labels:
            path = self._resolved_path(label)
            if not path.exists():
                not_run.append(label)
                continue
            stored = ResolvedExperiment.from_json(json.loads(path.read_text()), str(path))
            changes = self._changes(label, stored)
            if not changes:
                source, source_changes = self._source_changes(stored)
                changes = [f"retrains {source}, ranked by phase 4, whose parameters changed: "
                           f"{'; '.join(source_changes)}"] if source_changes else []
            if not changes and thresholds:
                changes = self._evaluation_changes(self._stored_metrics(label))
            if changes:
                changed.setdefault("; ".join(changes), []).append(label)
            elif slot_ranking := self._ranking_changes(stored):
                ranking = slot_ranking
                reranked.append(label)  # the final models share one ranking: one line for all of them
        problems = [f"{', '.join(names)}: {change}" for change, names in changed.items()]
        if reranked:
            problems.append(f"{', '.join(reranked)}: chosen by phase 4's ranking of phases 1-3, some of whose "
                            f"experiments changed since it ran ({'; '.join(ranking)})")
        problems += self._not_run_lines(not_run, labels)
        if not problems:
            return None
        # The latest phase read, not only the stale one: its pipeline reruns the phases before it, and a later phase
        # (phase 4's ranking) may rest on a stale one without resolving differently itself.
        phases = {label.partition(".")[0] for label in labels}
        study = [phase for phase in PHASES if phase in phases][-1:]
        rerun = ",".join(study + sorted(phases - set(PHASES)))
        return (f"{reader} reads results that do not match the current parameters:\n  - " + "\n  - ".join(problems)
                + f"\nRun {rerun} ({kedro_run(f'--pipelines {rerun}')}; folds still current are skipped), "
                f"or {alternative}.")

    @staticmethod
    def _not_run_lines(not_run: list[str], labels: list[str]) -> list[str]:
        """``<label>: not run yet`` for each, or one line for a phase none of whose experiments has run."""
        lines = []
        for phase in dict.fromkeys(label.partition(".")[0] for label in not_run):
            missing = [label for label in not_run if label.startswith(f"{phase}.")]
            if len(missing) > 1 and len(missing) == sum(label.startswith(f"{phase}.") for label in labels):
                lines.append(f"{phase}: not run yet (none of its {len(missing)} experiments)")
            else:
                lines += [f"{label}: not run yet" for label in missing]
        return lines

    def _evaluation_changes(self, metrics: Mapping[str, Any]) -> list[str]:
        """How the current evaluation settings differ from those ``metrics`` (a stored summary) were computed with."""
        now = self.current.threshold_rule() if self.current is not None else None
        then = metrics.get("threshold_rule")
        return [f"evaluation.threshold: {then} -> {now}"] if now and then and then != now else []

    def _stored_metrics(self, label: str) -> dict[str, Any]:
        """``label``'s metrics.json, or nothing when it has not been evaluated."""
        path = self._reporting_dir(label) / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _reporting_dir(self, label: str) -> Path:
        """Where ``label``'s evaluation (metrics.json, fold_metrics.csv) is written."""
        phase, _, experiment = label.partition(".")
        return self.data_dir / "08_reporting" / phase / experiment

    def _resolved_path(self, label: str) -> Path:
        """Where ``label``'s resolved config is stored when its phase has run."""
        phase, _, experiment = label.partition(".")
        return self.data_dir / "05_model_input" / phase / experiment / "resolved_config.json"

    def _changes(self, label: str, stored: ResolvedExperiment) -> list[str]:
        """``config_changes`` from ``stored`` to ``label`` resolved now; none when it cannot be resolved now."""
        key = (label, stored.fingerprint)
        if key not in self._checked:
            self._checked[key] = self._resolve_changes(label, stored)
        return self._checked[key]

    def _resolve_changes(self, label: str, stored: ResolvedExperiment) -> list[str]:
        if label not in self.current.labels():  # no longer in the parameters: the stored one is what there is
            logger.info("%s is not in the current parameters; it is used as stored", label)
            return []
        current = self.current.resolve_or_warn(label, "finished experiments")
        return config_changes(stored, current) if current is not None else []

    def _source_changes(self, stored: ResolvedExperiment) -> tuple[str | None, list[str]]:
        """The experiment a phase-4 slot retrains and how its parameters changed since (none for other slots)."""
        source = self._ranked_source(stored)
        if source is None or not (resolved := self._resolved_path(source)).exists():
            return source, []
        return source, self._changes(source, ResolvedExperiment.from_json(json.loads(resolved.read_text()),
                                                                          str(resolved)))

    def _ranking_changes(self, stored: ResolvedExperiment) -> list[str]:
        """For a phase-4 slot, each experiment phase 4 ranked (or would rank now) that changed since it ranked them.

        The ranking takes every model's best experiment of phases 1-3 (hold-outs excluded), so a change to any of
        them, or an experiment added since, may change what it chooses.
        """
        if stored.slot is None or not (self.data_dir / "08_reporting" / "phase4" / "selection.json").exists():
            return []
        if self._ranking is None:  # one ranking for every final model
            self._ranking = self._ranked_experiments_changed()
        return self._ranking

    def _ranked_experiments_changed(self) -> list[str]:
        changed = []
        for label in self.current.labels():
            if label.partition(".")[0] not in NAMED_PHASES:
                continue
            path = self._resolved_path(label)
            if not path.exists():
                changed.append(f"{label}: not run yet")
                continue
            ranked = ResolvedExperiment.from_json(json.loads(path.read_text()), str(path))
            changes = self._changes(label, ranked) if is_ranked(ranked.config.model_dump(mode="json")) else []
            if changes:
                changed.append(f"{label}: {', '.join(changes)}")
        return changed

    def _ranked_source(self, stored: ResolvedExperiment) -> str | None:
        """The experiment (``<phase>.<name>``) whose config a phase-4 slot retrains, from phase 4's stored ranking."""
        path = self.data_dir / "08_reporting" / "phase4" / "selection.json"
        if stored.slot is None or not path.exists():
            return None
        rank = parse_slot(stored.slot).rank
        selected = json.loads(path.read_text()).get("selected") or []
        return selected[rank - 1].get("experiment") if rank <= len(selected) else None

    def shortcut_audit(self) -> dict[str, Any] | None:
        """eda's shortcut audit, or None when the eda pipeline has not run."""
        path = self.data_dir / "08_reporting" / "eda" / "shortcut_audit.json"
        return json.loads(path.read_text()) if path.exists() else None

    def comparison(self, phase: str, reader: str = "", alternative: str = "restore the parameters",
                   thresholds: bool = True) -> pd.DataFrame | None:
        """A phase's comparison table (``<phase>.comparison``), or None when the phase has not run.

        Raises:
            DatasetError: The phase's experiments changed since it ran (``refuse_stale``, whose message names
                ``reader`` and offers ``alternative`` besides running the phase again; ``thresholds`` as there).
        """
        path = self.data_dir / "08_reporting" / phase / "comparison.csv"
        if not path.exists():
            return None
        self.refuse_stale(self.phase_labels([phase]), reader or f"{phase}.comparison", alternative, thresholds)
        return pd.read_csv(path)


class FinishedExperimentsDataset(AbstractDataset[None, FinishedExperiments]):
    """Read-only access to every finished experiment's results (``FinishedExperiments``)."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None, current: CurrentResolutions | None = None):
        # ``path`` is the environment's data_dir (a path key, so Kedro anchors it at the project).
        self._data_dir = Path(path)
        self.metadata = metadata
        self.current = current

    def load(self) -> FinishedExperiments:
        return FinishedExperiments(self._data_dir, self.current)

    def save(self, data: None) -> None:
        raise DatasetError("FinishedExperimentsDataset is read-only: experiments write their own results")

    def _exists(self) -> bool:
        return self._data_dir.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._data_dir)}


class ModelPackageDataset(AbstractDataset[ModelPackage, ModelPackage]):
    """A model package folder (``model_package``: checkpoints, package.json, model_card.md), written atomically."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ModelPackage:
        return load_package(self._path)

    def save(self, data: ModelPackage) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        save_package(data, self._path)

    def _exists(self) -> bool:
        return (self._path / "package.json").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ComputedTableDataset(AbstractDataset[TablePlan, pd.DataFrame]):
    """A per-image parquet table (e.g. face boxes).

    Saving a plan computes the rows of new or changed images (e.g. runs MTCNN on them) and keeps the rest.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        return pd.read_parquet(self._filepath)

    def save(self, data: TablePlan) -> None:
        write_table(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ResumableTableDataset(AbstractDataset[Sequence[Part], pd.DataFrame]):
    """A parquet table computed part by part (the robustness re-scores), which an interrupted run resumes.

    Saving a plan (``resumable.Part`` list) computes the parts whose signature is new, keeping each finished
    one in ``<file>.parts/``, then writes the table; loading reads the table.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        return pd.read_parquet(self._filepath)

    def save(self, data: Sequence[Part]) -> None:
        write_parts(data, self._filepath, description=f"{self._filepath.parent.name} {self._filepath.stem}")

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ResolvedExperimentDataset(AbstractDataset[ResolvedExperiment, ResolvedExperiment]):
    """One experiment's ``ResolvedExperiment`` as a JSON file (experiment, phase, fingerprint, config, ...)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> ResolvedExperiment:
        return ResolvedExperiment.from_json(json.loads(self._filepath.read_text()), where=str(self._filepath))

    def save(self, data: ResolvedExperiment) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        staging = self._filepath.with_name(self._filepath.name + ".partial")
        staging.write_text(json.dumps(data.to_json(), indent=2))
        os.replace(staging, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


def _open_png(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image


class ImageFolderDataset(AbstractDataset[Mapping[str, Any], dict[str, Callable[[], Any]]]):
    """PNG images under a folder, keyed by their relative path without ``.png`` (e.g. ``TP/wiki/0001``).

    A save replaces the images this dataset wrote before, so a rerun that picks other images leaves
    no stale ones; it deletes only the files listed in the folder's manifest, never a folder or a file
    it did not write. Loading returns a loader per image, as ``PartitionedDataset`` does.
    """

    MANIFEST = ".written_by_deepfake_kedro.json"

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def _written(self) -> list[str]:
        manifest = self._path / self.MANIFEST
        return json.loads(manifest.read_text()) if manifest.exists() else []

    def save(self, data: Mapping[str, Any]) -> None:
        files = {}
        for key in data:
            parts = PurePosixPath(key).parts
            if not parts or PurePosixPath(key).is_absolute() or any(part in {".", ".."} for part in parts):
                raise DatasetError(f"image key {key!r} must be a relative path inside {self._path} (no '..')")
            files[f"{key}.png"] = data[key]
        previous = self._written()
        for name, image in files.items():
            target = self._path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            partial_file = target.with_name(target.name + ".partial")
            image.save(partial_file, format="PNG")
            os.replace(partial_file, target)
        for stale in sorted(set(previous) - set(files)):
            (self._path / stale).unlink(missing_ok=True)
            # Folders are removed only when the stale file was their last entry.
            for folder in (self._path / stale).parents:
                if folder == self._path or not folder.is_relative_to(self._path) or any(folder.iterdir()):
                    break
                folder.rmdir()
        self._path.mkdir(parents=True, exist_ok=True)
        manifest = self._path / self.MANIFEST
        manifest.with_name(manifest.name + ".partial").write_text(json.dumps(sorted(files), indent=1))
        os.replace(manifest.with_name(manifest.name + ".partial"), manifest)

    def load(self) -> dict[str, Callable[[], Any]]:
        if not self._path.is_dir():
            raise DatasetError(f"{self._path} does not exist yet; run the pipeline that writes it")
        names = self._written() if (self._path / self.MANIFEST).exists() else sorted(
            p.relative_to(self._path).as_posix() for p in self._path.rglob("*.png"))
        return {name.removesuffix(".png"): partial(_open_png, self._path / name) for name in names}

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class SlideDeckDataset(AbstractDataset[list, Path]):
    """A PDF slide deck: one matplotlib figure per page, written atomically (a killed run leaves the old deck)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def save(self, slides: list) -> None:
        import matplotlib.pyplot as plt
        from matplotlib.backends.backend_pdf import PdfPages

        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        staging = self._filepath.with_suffix(".pdf.partial")
        staging.unlink(missing_ok=True)  # left behind by a run killed while writing
        try:
            with PdfPages(staging, metadata={"Title": "deepfake-kedro study report",
                                             "Creator": "deepfake-kedro"}) as pdf:
                for slide in slides:
                    pdf.savefig(slide)
                    plt.close(slide)
            staging.replace(self._filepath)
        finally:
            staging.unlink(missing_ok=True)

    def load(self) -> Path:
        if not self._filepath.exists():
            raise DatasetError(f"{self._filepath} does not exist yet; run `{kedro_run('--pipelines reporting')}`")
        return self._filepath

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ReportSectionDataset(AbstractDataset[ReportSection, ReportSection]):
    """One report section as a folder: ``section.json`` (name, title, caption), ``table.csv``, ``figure.png``.

    Written into a staging folder and swapped in whole, so a killed run leaves the previous section.
    """

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def save(self, section: ReportSection) -> None:
        import shutil

        from PIL import Image

        staging = self._path.with_name(self._path.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)  # left behind by a run killed while writing
        staging.mkdir(parents=True)
        (staging / "section.json").write_text(json.dumps(
            {"name": section.name, "title": section.title, "caption": section.caption,
             "experiments": dict(section.experiments), "threshold_rule": section.threshold_rule}, indent=2))
        if section.table is not None:
            section.table.to_csv(staging / "table.csv", index=False)
        if section.image is not None:
            Image.fromarray(section.image).save(staging / "figure.png")
        old = self._path.with_name(self._path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self._path.exists():
            self._path.rename(old)
        staging.rename(self._path)
        shutil.rmtree(old, ignore_errors=True)

    def load(self) -> ReportSection:
        return read_section(self._path)

    def _exists(self) -> bool:
        return (self._path / "section.json").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


def read_section(folder: Path) -> ReportSection:
    """A section folder written by ``ReportSectionDataset``."""
    import numpy as np
    from PIL import Image

    meta_path = folder / "section.json"
    if not meta_path.exists():
        raise DatasetError(f"{meta_path} does not exist; run the pipeline that writes the {folder.name!r} section")
    meta = json.loads(meta_path.read_text())
    table = pd.read_csv(folder / "table.csv") if (folder / "table.csv").exists() else None
    image = np.asarray(Image.open(folder / "figure.png").convert("RGB")) if (folder / "figure.png").exists() \
        else None
    return ReportSection(meta["name"], meta["title"], meta["caption"], table, image, meta.get("experiments", {}),
                         meta.get("threshold_rule"))


class ReportSectionsDataset(AbstractDataset[None, list]):
    """Every report section present (read-only), in the deck's order; none is an empty list.

    Given ``current`` (set by ``hooks.CurrentParametersHook``), a section showing an experiment that the current
    parameters resolve to another config (a final model retrained since robustness ran), or taken at thresholds
    chosen by another rule than ``evaluation.threshold``'s, is replaced by a slide saying so
    (``report_sections.out_of_date``): its numbers no longer describe the study's models.
    """

    SECTIONS = Path("08_reporting") / "sections"
    RUNS = (Path("06_models") / "runs", Path("06_models") / "attribution_runs")

    def __init__(self, path: str, metadata: dict[str, Any] | None = None, current: CurrentResolutions | None = None):
        # ``path`` is the environment's data_dir (a path key, so Kedro anchors it at the project): the sections
        # lie under SECTIONS, and the fold runs under RUNS (the study's, attribution's) keep the config each
        # section was made from.
        self._path = Path(path) / self.SECTIONS
        self._runs = [FoldRunStore(Path(path) / runs) for runs in self.RUNS]
        self.metadata = metadata
        self.current = current

    def load(self) -> list[ReportSection]:
        if not self._path.is_dir():
            return []
        sections = [read_section(folder) for folder in sorted(self._path.iterdir())
                    if (folder / "section.json").exists() and not folder.name.endswith((".partial", ".old"))]
        return ordered(self._up_to_date(section) for section in sections)

    def _up_to_date(self, section: ReportSection) -> ReportSection:
        """``section``, or the slide leaving it out when experiments it shows resolve otherwise now."""
        if self.current is None:
            return section
        changed = {}
        for label, fingerprint in section.experiments.items():
            now = self.current.resolve_or_warn(label, f"report section {section.name}")
            if now is not None and now.fingerprint != fingerprint:
                then = next((config for store in self._runs
                             if (config := store.trained_config(fingerprint)) is not None), None)
                changed[label] = (now.fingerprint, config_diff(ExperimentConfig.model_validate(then), now.config)
                                  if then is not None else [])
        rule = self.current.threshold_rule()
        if not changed and section.threshold_rule and rule and rule != section.threshold_rule:
            # Same models, other thresholds: the phase re-evaluated them (or will before the section can run).
            changed = {label: (fingerprint, [f"evaluation.threshold: {section.threshold_rule} -> {rule}"])
                       for label, fingerprint in section.experiments.items()}
        if not changed:
            return section
        rerun = kedro_run(f"--pipelines {section.name}")
        logger.warning("report section %s is left out: %s changed since it was made; run %s, then the report again",
                       section.name, ", ".join(changed), rerun)
        return out_of_date(section, changed, rerun)

    def save(self, data: None) -> None:
        raise DatasetError("report_sections is read-only: each pipeline writes its own <name>_report_section")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


# Kedro-datasets' file datasets, written atomically --------------------------------------------------------
# Their ``save`` opens the target for writing, which empties it, and then streams into it: a save that fails
# half-way (a value json cannot encode, a full disk, Ctrl-C) leaves a truncated file where the previous result was.
# These subclasses write the same bytes to ``<file>.partial`` beside the target and rename it over the target when
# the write is complete, as the project's own datasets do (SPEC 11: nothing half-written left looking complete).


class _WrittenAtomically:
    """Mixin over a kedro-datasets file dataset: the parent's ``save`` writes to ``<target>.partial``, renamed over
    the target once complete; on failure the partial file is removed and the previous target is untouched."""

    _staging = False

    def _get_save_path(self) -> PurePosixPath:
        path = super()._get_save_path()
        return path.with_name(path.name + ".partial") if self._staging else path

    def _stages(self, data: Any) -> bool:
        return True

    def save(self, data: Any) -> None:
        # The parent's save as written, without Kedro's wrapper: this class's save is wrapped once already.
        parent_save = super().save.__wrapped__
        if not self._stages(data):
            return parent_save(self, data)
        target = get_filepath_str(super()._get_save_path(), self._protocol)
        staged = f"{target}.partial"
        self._staging = True
        try:
            parent_save(self, data)
            self._fs.mv(staged, target)  # a rename on a local disk: readers see the old file or the new one
        finally:
            self._staging = False
            if self._fs.exists(staged):
                self._fs.rm(staged)
        self._invalidate_cache()


class AtomicCSVDataset(_WrittenAtomically, CSVDataset):
    """``pandas.CSVDataset``, written atomically."""


class AtomicParquetDataset(_WrittenAtomically, ParquetDataset):
    """``pandas.ParquetDataset``, written atomically."""


class AtomicJSONDataset(_WrittenAtomically, JSONDataset):
    """``json.JSONDataset``, written atomically."""


class AtomicTextDataset(_WrittenAtomically, TextDataset):
    """``text.TextDataset``, written atomically."""


class AtomicFigureDataset(_WrittenAtomically, MatplotlibDataset):
    """``matplotlib.MatplotlibDataset``, written atomically for a single figure (a list or dict of figures is a
    folder of files, written as the parent does)."""

    def _stages(self, data: Any) -> bool:
        return not isinstance(data, list | dict)
