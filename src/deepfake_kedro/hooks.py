"""Kedro hooks: reject bad configs, names and cross-references before any node runs; one data root."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset

from deepfake_kedro.commands import RUN_ENV_VARIABLE, kedro_run
from deepfake_kedro.config import (
    ConfigError,
    active_experiments,
    check_name,
    check_references,
    resolve_experiment,
    validate_data,
    validate_defaults,
    validate_download,
    validate_eda,
    validate_families,
    validate_preprocessing,
)
from deepfake_kedro.data_index import DataLayoutError, TreeChanges, tree_changes
from deepfake_kedro.generalisation import design
from deepfake_kedro.robustness import corruption_grid
from deepfake_kedro.selection import (
    apply_preprocessing,
    check_final_training,
    check_ranking,
    check_selection_params,
    model_name,
)
from deepfake_kedro.study import NAMED_PHASES

logger = logging.getLogger(__name__)


class ValidateExperimentsHook:
    """Resolves every experiment the run will train, so a typo fails before hours of training."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        parameters = catalog.load("parameters")
        if "defaults" in parameters:  # preprocessing and eda read the study-wide block too
            validate_defaults(parameters["defaults"])
        # Every block nodes read by key is strict, so a misspelt key fails here instead of being ignored.
        for block, validate in (("data", validate_data), ("preprocessing", validate_preprocessing),
                                ("download", validate_download), ("eda", validate_eda)):
            if block in parameters:
                validate(parameters[block])
        namespaces = {n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace}
        checked = 0
        for phase in sorted(namespaces):
            check_name(phase, "pipeline namespace")
            experiments = (parameters.get(phase) or {}).get("experiments") or {}
            for name in active_experiments(experiments):
                resolve_experiment(
                    name, experiments, parameters["defaults"], parameters["data"]["sources"],
                    parameters["preprocessing"], label=f"{phase}.{name}",
                )
                checked += 1
        check_references(parameters, sorted(namespaces))
        self._check_choices(parameters, namespaces)
        if checked:
            logger.info("Validated %d experiment configs", checked)

    @staticmethod
    def _check_choices(parameters: dict[str, Any], namespaces: set[str]) -> None:
        """The selection rules and overrides, so a typo there also fails before training."""
        selection = (parameters.get("phase2") or {}).get("selection")
        if "phase2" in namespaces and selection:
            check_selection_params(selection)
            override = selection.get("override")
            phase3 = (parameters.get("phase3") or {}).get("experiments") or {}
            if override and "phase3" in namespaces:
                # The override must name a preprocessing whose caches exist.
                settings = {**selection["start"], **override}
                for name in active_experiments(phase3):
                    overridden = apply_preprocessing(phase3[name], {"settings": settings})
                    resolve_experiment(name, {**phase3, name: overridden}, parameters["defaults"],
                                       parameters["data"]["sources"], parameters["preprocessing"],
                                       label=f"phase3.{name} (with phase2.selection.override)")
        if "generalisation" in namespaces:
            # Families and one experiment per fake source: a gap would otherwise surface after all the training.
            validate_families(parameters["data"])
            experiments = parameters["generalisation"].get("experiments") or {}
            design({name: resolve_experiment(name, experiments, parameters["defaults"]).model_dump()
                    for name in active_experiments(experiments)}, parameters["data"]["sources"])
        if "robustness" in namespaces:
            # Before any node: in a run that also trains the study, a typo here would surface after the training.
            corruption_grid((parameters.get("robustness") or {}).get("corruptions") or {})
        phase4 = parameters.get("phase4") or {}
        if "phase4" in namespaces and phase4.get("ranking"):
            for suffix in phase4.get("scaling") or {}:
                check_name(suffix, "phase4.scaling")
            models = []
            for phase in NAMED_PHASES:
                experiments = (parameters.get(phase) or {}).get("experiments") or {}
                for name in active_experiments(experiments):
                    config = resolve_experiment(name, experiments, parameters["defaults"], label=f"{phase}.{name}")
                    # Source hold-outs are not ranked (selection.candidate_table skips them).
                    if config.train_sources == "all" and config.eval_sources == "all":
                        models.append(model_name(config.model_dump()))
            check_ranking(phase4["ranking"], models)
            training = phase4.get("training")
            decided = [key for step in [selection or {}, *(selection or {}).get("steps", [])]
                       for part in ("start", "set", "override") for key in (step.get(part) or {})]
            check_final_training(training, decided)
            # Its keys and values must be valid experiment settings, like any experiment's overrides.
            resolve_experiment("training", {"training": training or {}}, parameters["defaults"],
                               label="phase4.training")


class PipelineLayoutHook:
    """Builds the pipelines from the run's own parameters: its environment, ``--conf-source`` and ``--params``.

    Kedro's pipeline registry takes no arguments; the context exists before the pipelines are first read, so the
    registry is told here which experiments each phase has (an environment may add some, or drop base's with null).
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        # The registry imports every pipeline; imported here, once a run needs them, not when settings load.
        from deepfake_kedro.pipeline_registry import follow_conf_source, follow_run_parameters

        # Reading context.params builds every pipeline once (Kedro validates parameters against them).
        follow_conf_source(context.config_loader.conf_source)
        follow_run_parameters(context.params)


class CurrentParametersHook:
    """Refuses results that the run's parameters no longer describe, for runs that read them without making them.

    predict's package, the external sets and robustness read finished experiments without running their phases;
    each experiment's own resolve node says what the current parameters make of it (``datasets.CurrentResolutions``),
    given to ``finished_experiments``. A run that reads a phase's results from the catalog without running that
    phase (``kedro run --pipelines reporting``, a ``--from-nodes`` run) is checked the same way before any node runs.
    ``report_sections`` gets the same resolutions: the deck leaves out a section whose experiments changed since.
    """

    RESOLVED = ".resolved_config"

    def __init__(self) -> None:
        self._finished: Any = None

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_catalog: dict[str, Any], parameters: dict[str, Any]) -> None:
        from kedro.framework.project import pipelines

        from deepfake_kedro.datasets import CurrentResolutions, FinishedExperimentsDataset, ReportSectionsDataset

        dataset = catalog.get("finished_experiments") if "finished_experiments" in conf_catalog else None
        self._finished = dataset if isinstance(dataset, FinishedExperimentsDataset) else None
        sections = catalog.get("report_sections") if "report_sections" in conf_catalog else None
        sections = sections if isinstance(sections, ReportSectionsDataset) else None
        if self._finished is None and sections is None:
            return
        nodes: dict[str, Any] = {}
        model_lists: dict[str, Any] = {}
        for pipeline in pipelines.values():
            for node in pipeline.nodes:
                resolved = [out for out in node.outputs if out.endswith(self.RESOLVED)]
                nodes.update({out.removesuffix(self.RESOLVED): node for out in resolved})
                # Attribution resolves each approach's models in one node (``attribution.<approach>.models``).
                lists = [out for out in node.outputs if out.startswith("attribution.") and out.endswith(".models")]
                model_lists.update(dict.fromkeys(lists, node))
        inputs: dict[str, Any] = {}
        for resolvers in (nodes, model_lists):
            for name, node in list(resolvers.items()):
                found = {key: parameters[key] if key in parameters else catalog.get(key) for key in node.inputs}
                if any(value is None for key, value in found.items() if key not in parameters):
                    del resolvers[name]  # reads a dataset this catalog lacks: it cannot be checked
                    continue
                inputs.update(found)
        for checked in (self._finished, sections):
            if checked is not None:
                checked.current = CurrentResolutions(nodes, inputs, model_lists.values(),
                                                     parameters.get("params:evaluation"))

    # First among the hooks, so a refused run starts nothing (an MLflow run, a Dask cluster) that it would leave open.
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if self._finished is None:
            return
        finished = self._finished.load()
        if finished.current is None:
            return
        made = {name.removesuffix(self.RESOLVED) for name in pipeline.all_outputs() if name.endswith(self.RESOLVED)}
        read = self.results_read(pipeline.inputs(), finished.current.labels())
        not_made = [label for label in read if label not in made]
        if not_made:
            finished.refuse_stale(not_made, reader=f"This run ({self._described(run_params)})")

    @staticmethod
    def results_read(inputs: set[str], labels: list[str]) -> list[str]:
        """The experiments whose results ``inputs`` hold: ``<label>.*`` reads one, ``<phase>.*`` all of its phase's."""
        read: dict[str, None] = {}
        for name in sorted(inputs):
            if name.startswith("params:"):
                continue
            parts = name.split(".")
            if ".".join(parts[:2]) in labels:
                read[".".join(parts[:2])] = None
            elif len(parts) > 1:
                read.update(dict.fromkeys(label for label in labels if label.startswith(f"{parts[0]}.")))
        return list(read)

    @staticmethod
    def _described(run_params: dict[str, Any]) -> str:
        """``--pipelines reporting`` (or the default pipeline): what the user asked to run, for the message."""
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        return f"--pipelines {','.join(names)}"


# What a run reads of the study besides the outputs of its pipelines: the stored experiments and report sections.
STUDY_READERS = {"finished_experiments", "report_sections"}


def changed_raw_images(catalog: Any) -> tuple[Path, TreeChanges] | None:
    """The raw tree's changes since the preprocessing last indexed it, or None (unchanged, or nothing to compare).

    Nothing is compared when the tree has never been indexed here, or is not on this machine (results copied to
    another one to use the models).
    """
    from deepfake_kedro.datasets import ImageTreeDataset

    raw = catalog.get("raw_images") if "raw_images" in catalog else None
    if not isinstance(raw, ImageTreeDataset) or not catalog.exists("image_audit"):
        return None
    tree = raw.as_found()
    if not tree.root.is_dir():
        logger.info("The raw images (%s) are not here: results are read as the last indexing left them", tree.root)
        return None
    try:
        changes = tree_changes(tree, catalog.load("parameters")["data"]["sources"], catalog.load("image_audit"))
    except DataLayoutError as error:
        raise DataLayoutError(
            f"The study's results were made from the images under {tree.root}; before they are read, those images "
            f"are compared with their last indexing, which fails here: {error}. Restore the folder, or run the study "
            f"again ({kedro_run('').strip()})") from error
    return (tree.root, changes) if changes else None


def changed_images_message(root: Path, changes: TreeChanges, reader: str) -> str:
    """Why ``reader`` is refused: which images changed, and the run that brings the results up to date."""
    return (f"{reader} reads results made from the images under {root} as the preprocessing last indexed them, "
            f"and they changed since: {changes.summary()}. Run the study again ({kedro_run('').strip()}: it "
            "indexes the images again and retrains only the folds whose images changed), or restore the files.")


class UnchangedImagesHook:
    """Refuses a run that reads the study's results without indexing the images again, once the images changed.

    The phases index the raw tree first, and every fold whose images changed retrains. ``reporting``,
    ``package``, ``predict``, ``external``, ``robustness`` and ``--from-nodes`` runs read what the last indexing
    made of the tree: added, removed or replaced images (``data_index.tree_changes``: listing and stat, reading
    only files whose times moved) would leave them describing images that are no longer there.
    """

    # First among the hooks, so a refused run starts nothing (an MLflow run, a Dask cluster) that it would leave open.
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from kedro.framework.project import pipelines

        if "image_audit" in pipeline.all_outputs():
            return
        made_by_the_study = pipelines["__default__"].all_outputs() | STUDY_READERS
        if not pipeline.inputs() & made_by_the_study:
            return
        found = changed_raw_images(catalog)
        if found:
            reader = f"This run ({CurrentParametersHook._described(run_params)})"
            raise DataLayoutError(changed_images_message(*found, reader))


class RunEnvironmentHook:
    """Records the run's environment, so the ``kedro run`` commands that messages suggest carry its ``--env``."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        env = loader.env or loader.default_run_env
        # Set on every run (empty for the default environments), so one session never inherits the last one's.
        os.environ[RUN_ENV_VARIABLE] = "" if env in {loader.base_env, loader.default_run_env} else env


class DataRootHook:
    """Points the catalog's raw trees (``raw_images``, ``raw_download``) at ``data.root``, so it is set in one place.

    ``data.root`` defaults to the ``data_root`` global, which the catalog reads too; a user who sets only
    ``data.root`` in an environment's parameters.yml moves ``raw_images`` and the download's target with it.
    Only an environment that sets both, to different folders, is an error.
    """

    RAW_TREES = ("raw_images", "raw_download")

    def __init__(self) -> None:
        self._project_path = Path.cwd()
        self._env_globals: dict[str, Any] = {}
        self._env = "local"

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        self._project_path = Path(context.project_path)
        self._env = loader.env or loader.default_run_env
        self._env_globals = {}
        if self._env != loader.base_env:
            for file in sorted((Path(loader.conf_source) / self._env).glob("globals*.yml")):
                self._env_globals.update(yaml.safe_load(file.read_text()) or {})

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_catalog: dict[str, Any], parameters: dict[str, Any]) -> None:
        data = (parameters.get("parameters") or {}).get("data") or {}
        configs = {name: conf_catalog[name] for name in self.RAW_TREES if conf_catalog.get(name)}
        if not configs or not data.get("root"):
            return
        wanted = (self._project_path / data["root"]).resolve()
        moved = {name: config for name, config in configs.items() if Path(config["path"]).resolve() != wanted}
        if not moved:
            return
        own = self._env_globals.get("data_root")
        if own is not None and (self._project_path / own).resolve() != wanted:
            raise ConfigError(
                f"conf/{self._env}/globals.yml sets data_root = {own!r}, but data.root in the parameters is "
                f"{data['root']!r}; keep one of them (the other follows), or pass --params data.root=..."
            )
        for name, config in moved.items():
            catalog[name] = AbstractDataset.from_config(name, {**config, "path": str(wanted)})
        logger.info("%s read%s data.root = %s", " and ".join(moved), "s" if len(moved) == 1 else "", data["root"])
