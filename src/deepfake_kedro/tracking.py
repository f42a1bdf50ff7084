"""Experiment tracking in MLflow: each experiment of a run as a run nested under kedro-mlflow's run of ``kedro run``.

kedro-mlflow opens one MLflow run per ``kedro run`` (conf/base/mlflow.yml: a local ``sqlite:///mlflow.db``
beside the project). After the pipeline, every experiment it evaluated becomes a nested run: its resolved
config as params, its fold and summary metrics, and its figures and tables as artefacts. Logging happens once,
in the process that runs the session, so it is the same for the SequentialRunner and the DaskRunner.

``DEEPFAKE_KEDRO_TRACKING=off`` turns tracking off (the tests do; settings.py reads it).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

TRACKING_SWITCH = "DEEPFAKE_KEDRO_TRACKING"
ARTEFACT_SUFFIXES = (".png", ".csv", ".json")


def tracking_enabled() -> bool:
    """Tracking is on unless ``DEEPFAKE_KEDRO_TRACKING`` is ``off`` (or ``0`` / ``false``)."""
    return os.environ.get(TRACKING_SWITCH, "on").strip().lower() not in {"off", "0", "false", "no"}


def flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested config keys as dotted names: ``{"optimizer": {"lr": 1e-4}}`` -> ``("optimizer.lr", 1e-4)``."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


_NOT_IN_METRIC_NAMES = re.compile(r"[^\w.\- :]")
"""What MLflow rejects in a metric name (mlflow.utils.validation allows ``[/\\w.\\- :]``; ``/`` makes a name a path)."""


def mlflow_metric_names(names: Iterable[str]) -> dict[str, str]:
    """Each metric name as MLflow accepts it: a character it rejects becomes ``_``, e.g. ``auc:fake (sd)`` ->
    ``auc:fake _sd_``; two names that would then clash get ``_2``, ``_3`` ... in sorted order of the originals.
    """
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(set(names), key=lambda name: (_NOT_IN_METRIC_NAMES.search(name) is not None, name)):
        safe = candidate = _NOT_IN_METRIC_NAMES.sub("_", name)
        suffix = 1
        while candidate in taken:
            suffix += 1
            candidate = f"{safe}_{suffix}"
        mapping[name] = candidate
        taken.add(candidate)
    return mapping


def experiment_metrics(summary: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """An experiment's ``metrics.json`` as MLflow metrics: summary values, and per-fold series.

    Returns:
        ``{"auc": mean, "auc_std": ..., "auc_ci_low": ..., "auc_ci_high": ..., "pooled_auc": ...}`` for every
        metric, and ``{"fold_auc": [fold 0, fold 1, ...]}`` (logged with the fold as the step). Names are those
        of ``mlflow_metric_names`` (per-source metrics carry the user's folder names).
    """
    metrics = summary.get("metrics", {})
    pooled = summary.get("pooled") or {}
    names = mlflow_metric_names([*metrics, *pooled])
    summary_metrics: dict[str, float] = {}
    for metric, stats in metrics.items():
        for stat, suffix in (("mean", ""), ("std", "_std"), ("ci_low", "_ci_low"), ("ci_high", "_ci_high")):
            if stats.get(stat) is not None:
                summary_metrics[f"{names[metric]}{suffix}"] = float(stats[stat])
    for key, value in pooled.items():
        if value is not None:
            summary_metrics[f"pooled_{names[key]}"] = float(value)
    folds = sorted(summary.get("folds", []), key=lambda row: row["fold"])
    per_fold: dict[str, list[float]] = {}
    for metric in metrics:
        series = [row.get(metric) for row in folds]
        if series and all(isinstance(v, int | float) and v == v for v in series):  # skip NaN / missing
            per_fold[f"fold_{names[metric]}"] = [float(v) for v in series]
    return summary_metrics, per_fold


def log_experiment(label: str, resolved: Any, summary: Mapping[str, Any], folder: Path | None,
                   tags: Mapping[str, str] | None = None) -> str:
    """Logs one experiment as an MLflow run nested under the active run.

    Args:
        label: ``<phase>.<experiment>``, the run's name.
        resolved: Its ``ResolvedExperiment`` (config and fingerprint).
        summary: Its ``metrics.json``.
        folder: Its reporting folder (figures and tables), logged as artefacts when present.
        tags: Extra tags (e.g. the Kedro environment).

    Returns:
        The nested run's id.
    """
    import mlflow
    from mlflow.entities import Metric

    summary_metrics, per_fold = experiment_metrics(summary)
    parent = mlflow.active_run()
    # Beside its parent: without the id, a parent started before `kedro run` leaves it in "Default".
    experiment_id = parent.info.experiment_id if parent is not None else None
    with mlflow.start_run(run_name=label, nested=True, experiment_id=experiment_id) as run:
        params = dict(flatten(resolved.config.model_dump(mode="json")))
        params.update(phase=resolved.phase, experiment=resolved.name, fingerprint=resolved.fingerprint)
        mlflow.log_params({name: str(value)[:6000] for name, value in params.items()})
        mlflow.set_tags({"phase": resolved.phase, "experiment": label, "fingerprint": resolved.fingerprint,
                         **(tags or {})})
        # One batch: a call per value would be one SQLite transaction each (seconds per experiment).
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, 0) for name, value in summary_metrics.items()]
        metrics += [Metric(name, value, now, fold) for name, series in per_fold.items()
                    for fold, value in enumerate(series)]
        client = mlflow.MlflowClient()
        for start in range(0, len(metrics), 1000):  # mlflow's limit per batch
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
        if folder is not None and folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix in ARTEFACT_SUFFIXES:
                    mlflow.log_artifact(str(path))
        return run.info.run_id


def tracked_experiments(outputs: Iterable[str], datasets: Iterable[str]) -> list[str]:
    """The ``<phase>.<experiment>`` labels a run evaluated: those whose metrics it wrote from a resolved config.

    A run resumed at ``plan_fold_runs`` or ``evaluate_folds`` reads the resolved config from disk rather than
    writing it, so the config only has to be among the pipeline's datasets. Attribution's models also write
    ``attribution.<approach>.metrics``, but multi-class and without a resolved config: they are not logged.

    Args:
        outputs: The datasets the run's pipeline writes.
        datasets: All its datasets, inputs included.
    """
    datasets = set(datasets)
    return sorted(name.rsplit(".", 1)[0] for name in set(outputs)
                  if name.endswith(".metrics") and name.count(".") == 2
                  and f"{name.rsplit('.', 1)[0]}.resolved_config" in datasets)

def _reporting_folder(catalog: Any, name: str) -> Path | None:
    """The folder of a file-backed catalog entry (where the experiment's figures sit beside it)."""
    dataset = catalog.get(name, fallback_to_runtime_pattern=True)
    filepath = (dataset._describe() if dataset is not None else {}).get("filepath")
    return Path(str(filepath)).parent if filepath else None


SQLITE_PREFIX = "sqlite:///"
FALLBACK_STORE = "sqlite:///mlflow.db"
"""Where a run is tracked when the configured tracking server does not answer (pinned to the project)."""
MLFLOW_CONFIG_PATTERNS = ["mlflow*", "mlflow*/**", "**/mlflow*"]
"""Where kedro-mlflow looks for mlflow.yml in each environment (its own default patterns)."""


def project_sqlite_uri(uri: str, project_path: str | Path) -> str:
    """A relative ``sqlite:///<file>`` store placed in the project, not in whichever folder Kedro was started from.

    kedro-mlflow makes a relative plain path absolute under the project, but leaves a URI with a scheme alone, so
    ``sqlite:///mlflow.db`` would open a new, empty store in notebooks/ or wherever a script runs.
    ``sqlite:////abs/path.db``, ``sqlite:///:memory:`` and other schemes (``http://``, ``databricks``) are
    returned unchanged.
    """
    if not uri.startswith(SQLITE_PREFIX):
        return uri
    database = uri[len(SQLITE_PREFIX):]
    # ":memory:" is SQLite's in-memory database, not a file name.
    if not database or database == ":memory:" or Path(database).is_absolute():
        return uri
    return SQLITE_PREFIX + (Path(project_path) / database).as_posix()


def unreachable_server(uri: str, timeout: float = 3.0) -> str | None:
    """Why an ``http(s)://`` tracking server does not answer; None when it does or the store is no server."""
    parsed = urlsplit(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return None
    except (OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"


def _pin_mlflow_store(context: Any, probe: bool = False) -> dict[str, Any] | None:
    """The environment's mlflow.yml with a relative ``sqlite:///`` store pinned to the project (None: no file).

    With ``probe``, a tracking server that does not answer is replaced by the project's ``mlflow.db``, with a
    warning: kedro-mlflow would otherwise retry for minutes, then fail the run before its first node.
    """
    from kedro.config import MissingConfigException

    loader = context.config_loader
    loader.config_patterns.setdefault("mlflow", MLFLOW_CONFIG_PATTERNS)
    try:
        config = dict(loader["mlflow"])
    except MissingConfigException:
        return None  # kedro-mlflow warns and uses its defaults
    server = dict(config.get("server") or {})
    uri = server.get("mlflow_tracking_uri")
    if uri and probe and (reason := unreachable_server(uri)):
        logger.warning("MLflow: the tracking server %s does not answer (%s); this run is tracked in the project's "
                       "mlflow.db instead. Start the server, or run with DEEPFAKE_KEDRO_TRACKING=off", uri, reason)
        uri = FALLBACK_STORE
    if uri:
        server["mlflow_tracking_uri"] = project_sqlite_uri(uri, context.project_path)
        config = {**config, "server": server}
        # An explicitly set key is what OmegaConfigLoader hands out from now on, kedro-mlflow included.
        loader["mlflow"] = config
    return config


class MlflowSettingsHook:
    """With tracking off: kedro-mlflow's settings on the context, so ``kedro mlflow ui`` still opens the store.

    kedro-mlflow's hook, off with tracking, is what sets ``context.mlflow``; this sets it without opening the
    store or starting a run.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig

        context.__setattr__("mlflow", KedroMlflowConfig.model_validate(_pin_mlflow_store(context) or {}))


class ExperimentTrackingHook:
    """After a run, one nested MLflow run per experiment the pipeline evaluated (``<phase>.<experiment>.metrics``).

    Before kedro-mlflow reads mlflow.yml, a relative ``sqlite:///`` store is pinned to the project folder.
    """

    # tryfirst: kedro-mlflow's own after_context_created opens the store; the path must be fixed before that.
    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        _pin_mlflow_store(context, probe=True)

    # tryfirst: kedro-mlflow's own after_pipeline_run closes the parent run, so this one must run before it.
    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        import mlflow

        if mlflow.active_run() is None:
            logger.info("MLflow: no active run (kedro-mlflow off for this pipeline); experiments not logged")
            return
        labels = tracked_experiments(pipeline.all_outputs(), pipeline.datasets())
        env = run_params.get("env") or ""
        for label in labels:
            # The run's results are on disk already: one experiment MLflow refuses (a locked store, a bad value)
            # must neither fail the run nor keep kedro-mlflow's hook from closing the parent run.
            try:
                run_id = log_experiment(
                    label, catalog.load(f"{label}.resolved_config"), catalog.load(f"{label}.metrics"),
                    _reporting_folder(catalog, f"{label}.metrics"), tags={"kedro_env": str(env)},
                )
            except Exception as error:
                logger.warning("MLflow: %s not logged (%s: %s); its results are on disk, the other experiments "
                               "are logged", label, type(error).__name__, error)
                continue
            logger.info("MLflow: logged %s as run %s", label, run_id)
