"""A Kedro runner on a dask.distributed cluster: nodes, and each experiment's missing folds, run concurrently.

``kedro run --runner deepfake_kedro.runners.DaskRunner`` starts a ``LocalCluster`` (or connects to
``--runner-params address=tcp://scheduler:8786``). Each node is one Dask task that waits for the tasks of the
nodes it depends on. Kedro 1.x ships no Dask runner; the one in its deployment docs needs a catalog pattern
that persists every in-memory dataset, because a ``MemoryDataset`` pickled to a worker arrives empty. Here a
node's in-memory outputs are instead the result of its task, handed by Dask to the tasks that read them.

Inside a node, saving ``fold_runs`` (``TrainedFoldsDataset``) finds it runs on a Dask worker and submits one
task per missing fold (``save_folds_on_dask``), writing each fold as it returns: two folds of one experiment
train at once. Finished folds are skipped, stale ones retrained, exactly as in the sequential path. Folds in
one worker process train one at a time: torch's random state is per process.

When a node or fold fails, those not started are not run and those running finish and are written, as Kedro's
ParallelRunner lets running nodes finish; then the failure is raised, with Kedro's ``--from-nodes`` hint. Nodes
and folds share one stop signal per run: a failure in one experiment also stops the folds another experiment's
node has submitted but not started, and that node fails too, so a rerun trains them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kedro.framework.hooks.manager import _create_hook_manager, _register_hooks, _register_hooks_entry_points
from kedro.io import MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import AbstractRunner
from kedro.runner.task import Task
from kedro.utils import load_obj

from deepfake_kedro.run_store import FoldPlan, FoldResult, FoldRunStore

logger = logging.getLogger(__name__)

# kedro-mlflow's hook keeps its run in the driver; on a worker it would open stray runs of its own.
WORKER_DISABLED_PLUGINS = ("kedro_mlflow", "kedro-mlflow")

# torch's random state is one per process: two folds training at once in one process would draw from it in turn.
_ONE_FOLD_PER_PROCESS = threading.Lock()

# The run's stop event while a node runs on this thread, so the folds its save submits stop with the run.
_node_run = threading.local()


class DaskRunner(AbstractRunner):
    """Runs a pipeline's nodes as tasks of a dask.distributed cluster (a LocalCluster by default).

    Args:
        address: A running scheduler (``tcp://host:8786``, e.g. started by dask-jobqueue or
            ``dask scheduler``); None starts ``cluster`` on this machine for the run.
        cluster: Import path of the local cluster class: ``distributed.LocalCluster`` or, one worker per
            GPU, ``dask_cuda.LocalCUDACluster``.
        n_workers: Workers of the local cluster (default: one per core, or one per GPU for dask-cuda).
        threads_per_worker: Tasks one worker runs at once (1: one fold per worker, the fold uses its cores). Folds
            in one process train one at a time whatever this is, so that each is reproducible.
        processes: Workers as processes (True) or threads of this process (``distributed.LocalCluster`` only;
            with False, folds train one at a time).
        torch_threads: ``torch.set_num_threads`` in every task (None: the worker's default, which Dask sets
            to one thread per worker thread through ``OMP_NUM_THREADS``).
        is_async: Not supported, always off: saving ``fold_runs`` on Kedro's async thread would not find the Dask
            worker and would train the folds one after the other inside the node's task.
    """

    def __init__(
        self,
        address: str | None = None,
        cluster: str = "distributed.LocalCluster",
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        processes: bool = True,
        torch_threads: int | None = None,
        is_async: bool = False,
    ):
        if is_async:
            logger.warning("DaskRunner: is_async is ignored: an experiment's folds are sent to the cluster only when "
                           "fold_runs is saved on the node's own Dask task, not on an async thread")
        super().__init__(is_async=False)
        self._address = address
        self._cluster = cluster
        self._n_workers = n_workers
        self._threads_per_worker = threads_per_worker
        self._processes = processes
        self._torch_threads = torch_threads

    def _get_executor(self, max_workers: int) -> None:
        return None  # _run submits to the Dask client itself

    def _client(self) -> tuple[Any, Any]:
        """A client of the scheduler at ``address``, or of a local cluster started for this run."""
        import dask
        from distributed import Client

        if self._address:
            logger.info("Dask: connecting to the scheduler at %s", self._address)
            return Client(self._address), None
        try:
            cluster_class = load_obj(self._cluster)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(
                f"--runner-params cluster={self._cluster}: cannot import it ({error}); use distributed.LocalCluster, "
                f"or for one worker per GPU install dask-cuda (pip install dask-cuda) and use "
                f"dask_cuda.LocalCUDACluster, or pass address=tcp://<scheduler>:8786"
            ) from error
        options: dict[str, Any] = {"threads_per_worker": self._threads_per_worker}
        if self._n_workers is not None:
            options["n_workers"] = self._n_workers
        if self._cluster == "distributed.LocalCluster":
            options["processes"] = self._processes
            options["dashboard_address"] = None  # no port to collide with a second run
        # Dask starts workers as daemon processes by default, and a daemon may not start DataLoader processes.
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = cluster_class(**options)
        logger.info("Dask: started %s with %d workers (dashboard: %s)", self._cluster, len(cluster.workers),
                    getattr(cluster, "dashboard_link", "none"))
        return Client(cluster), cluster

    def _run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None, run_id: str | None = None) -> None:
        """Submits every node as a task depending on its parent nodes' tasks, then waits for all of them."""
        from distributed import Event, as_completed, wait
        from kedro.framework.project import LOGGING, PACKAGE_NAME

        in_memory = {name for name in pipeline.all_outputs() if _is_memory(catalog, name)}
        client, cluster = self._client()
        _warn_shared_processes(client)
        token = uuid.uuid4().hex[:8]
        stop = f"stop-nodes-{token}"
        futures: dict[Any, Any] = {}
        try:
            for node in pipeline.nodes:  # topologically sorted: parents are submitted first
                parents = [futures[parent] for parent in sorted(pipeline.node_dependencies[node], key=str)]
                futures[node] = client.submit(
                    _run_node, node, catalog, in_memory, self._is_async, run_id, PACKAGE_NAME, LOGGING,
                    self._torch_threads, stop, *parents, key=f"{node.name}-{token}", pure=False,
                )
            nodes_of = {future.key: node for node, future in futures.items()}
            done = 0
            for future in as_completed(list(futures.values())):
                outputs = future.result()  # re-raises a node's error here
                done += 1
                node = nodes_of[future.key]
                self._logger.info("Completed node: %s (%d out of %d tasks)", node.name, done, len(futures))
                # In-memory outputs nobody reads are the run's result, as Kedro's own runners return them.
                for name, data in outputs.items():
                    if name in pipeline.outputs():
                        catalog.save(name, data)
        except Exception as error:
            # As Kedro's ParallelRunner: nodes not started are dropped, running ones finish (and save) first.
            Event(stop, client=client).set()
            running = [future for future in futures.values() if not future.done()]
            if running:
                self._logger.warning("A node failed: waiting for the nodes still running to finish before "
                                     "stopping (nodes not started yet are not run)")
                wait(running)
            self._suggest_resume_scenario(
                pipeline, {node for node, future in futures.items() if future.status == "finished"}, catalog)
            if isinstance(error, NotRunError):
                # A node the failure stopped can reach the loop before the failing one: raise the failure itself.
                failures = [future.exception() for future in futures.values() if future.status == "error"]
                raise next((e for e in failures if not isinstance(e, NotRunError)), error) from None
            raise
        except BaseException:
            client.cancel(list(futures.values()))
            raise
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _warn_shared_processes(client: Any) -> None:
    """Warns when worker threads share a process: folds there train one at a time, not side by side."""
    threads: dict[str, int] = {}
    nthreads = client.nthreads()
    for address, process in client.run(_process_id).items():
        threads[process] = threads.get(process, 0) + nthreads.get(address, 0)
    shared = {process: count for process, count in threads.items() if count > 1}
    if shared:
        logger.warning("Dask: %s worker threads share a process (%s); folds in one process train one at a time "
                       "(torch's random state is per process). For folds side by side, run one single-threaded "
                       "worker process per core or GPU (threads_per_worker=1, processes=true; dask worker "
                       "--nthreads 1).", max(shared.values()), ", ".join(sorted(shared)))


class NotRunError(RuntimeError):
    """A node or fold task that did not start because another one failed."""


def _is_memory(catalog: Any, name: str) -> bool:
    return isinstance(catalog.get(name, fallback_to_runtime_pattern=True), MemoryDataset)


_configured_package: str | None = None


def _configure_worker(package_name: str | None, logging_config: dict[str, Any] | None) -> None:
    """The project's settings and logging in a worker process, once (the driver's are not inherited)."""
    global _configured_package
    if package_name and _configured_package != package_name:
        Task._bootstrap_subprocess(package_name, logging_config)
        _configured_package = package_name


def _run_node(
    node: Any, catalog: Any, in_memory: set[str], is_async: bool, run_id: str | None,
    package_name: str | None, logging_config: dict[str, Any] | None, torch_threads: int | None, stop: str,
    *parent_outputs: Mapping[str, Any],
) -> dict[str, Any]:
    """One node on a worker: its in-memory inputs from its parents' results, the rest from the catalog.

    Returns:
        The node's in-memory outputs (what its children read).

    Raises:
        NotRunError: Another node failed before this one started (the Dask event ``stop`` is set).
    """
    from distributed import Event
    from kedro.framework.project import settings

    if Event(stop).is_set():
        raise NotRunError(f"{node.name}: not run, another node failed")

    _configure_worker(package_name, logging_config)
    _set_torch_threads(torch_threads)
    for outputs in parent_outputs:
        for name, data in outputs.items():
            if name in node.inputs:
                catalog.save(name, data)
    hook_manager = _create_hook_manager()
    _register_hooks(hook_manager, settings.HOOKS)
    _register_hooks_entry_points(hook_manager, (*settings.DISABLE_HOOKS_FOR_PLUGINS, *WORKER_DISABLED_PLUGINS))
    _node_run.stop = stop
    try:
        Task(node=node, catalog=catalog, is_async=is_async, hook_manager=hook_manager, run_id=run_id).execute()
    except Exception as error:
        # Set here, before this thread takes the next task, so no node starts after the failure.
        Event(stop).set()
        if _stopped(error):
            # Kedro wraps it in a DatasetError: named as a stop, the driver raises the failure that caused it.
            raise NotRunError(f"{node.name}: stopped, another node or fold failed") from error
        raise
    finally:
        _node_run.stop = None
    return {name: catalog.load(name) for name in node.outputs if name in in_memory}


def _stopped(error: BaseException | None) -> bool:
    """Whether ``error`` is, or was caused by, a ``NotRunError`` (a stop, not a failure of its own)."""
    chain: list[BaseException] = []
    while error is not None and all(error is not earlier for earlier in chain):
        if isinstance(error, NotRunError):
            return True
        chain.append(error)
        error = error.__cause__ or error.__context__
    return False


def _set_torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def on_dask_worker() -> bool:
    """Whether this code runs inside a task of a dask.distributed worker."""
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - dask is a dependency, but the core does not need it
        return False
    try:
        get_worker()
    except ValueError:
        return False
    return True


def save_folds_on_dask(store: FoldRunStore, runs: Mapping[str, FoldResult | Callable[[], FoldResult]]) -> None:
    """``FoldRunStore.save_all`` with one Dask task per fold to train, each written as it returns.

    Called from a task: ``worker_client`` hands the task's thread back to the worker while the folds run. When a
    fold fails, the folds not started yet are not trained, the ones training finish and are written, and then the
    first error is raised. In a ``DaskRunner`` node the folds share the run's stop event, so a failure anywhere in
    the run also leaves this save's folds not started untrained, and raises ``NotRunError``.

    Raises:
        NotRunError: Folds were left untrained because another node or fold of the run failed.
    """
    from distributed import as_completed, worker_client

    todo = store.pending(runs)
    ready = [(key, run) for key, run in todo if not callable(run)]
    for key, run in ready:
        store.write(key, run)
    lazy = [(key, run) for key, run in todo if callable(run)]
    if not lazy:
        return
    threads = _current_torch_threads()
    stop = getattr(_node_run, "stop", None) or f"stop-folds-{uuid.uuid4().hex[:8]}"
    with worker_client() as client:
        # Each task trains and writes its fold under the fold's lock: another experiment with the same
        # fingerprint, running at once, waits for it and then finds the fold done.
        futures = {client.submit(_train_and_write, store.root, key, run, threads, stop,
                                 key=f"train-{key}-{uuid.uuid4().hex[:8]}", pure=False): key for key, run in lazy}
        logger.info("Dask: %d folds submitted (%s)", len(futures), ", ".join(key for key, _ in lazy))
        errors: list[Exception] = []
        not_run: list[str] = []
        try:
            for future in as_completed(list(futures)):
                try:
                    meta = future.result()
                except NotRunError:
                    logger.warning("Dask: %s not trained: another node or fold failed", futures[future])
                    not_run.append(futures[future])
                    continue
                except Exception as error:
                    if not errors:
                        logger.error("Dask: %s failed; folds still training finish and are written, folds not "
                                     "started are not trained", futures[future])
                    errors.append(error)
                    continue
                if meta is not None:
                    logger.info("Dask: wrote %s (trained on %s in %.0f s)", futures[future], meta["worker"],
                                meta["finished_at"] - meta["started_at"])
        except BaseException:
            client.cancel(list(futures))
            raise
    if errors:
        raise errors[0]
    if not_run:
        # Not a success: the node's children would read an incomplete experiment.
        raise NotRunError(f"{len(not_run)} folds not trained ({', '.join(sorted(not_run))}): another node or fold "
                          f"of the run failed; run again to train them (the folds written are kept)")


def _current_torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _train_and_write(root: Path, key: str, run: Callable[[], FoldResult], torch_threads: int,
                     stop: str) -> dict | None:
    """One fold on a worker, with the submitting task's torch threads, written to the store under its lock.

    Returns:
        The written meta (it records where and when the fold trained), or None when the fold was done by then.

    Raises:
        NotRunError: Another fold of the same save, or in a ``DaskRunner`` another node or fold of the run, failed
            before this one started (the event ``stop`` is set).
    """
    from distributed import Event, get_worker

    def timed() -> FoldResult:
        with _ONE_FOLD_PER_PROCESS:
            if Event(stop).is_set():
                raise NotRunError(f"{key}: not trained, another node or fold failed")
            _set_torch_threads(torch_threads)
            started = time.time()
            try:
                result = run()
            except Exception:
                # Set before this thread is free for the next fold, so none starts after the failure.
                Event(stop).set()
                raise
        result.meta.update(worker=get_worker().address, pid=os.getpid(), started_at=started, finished_at=time.time())
        return result

    data = run.data if isinstance(run, FoldPlan) else None
    result = FoldRunStore(root).train_and_write(key, FoldPlan(data, timed, run.label) if data is not None else timed)
    return None if result is None else result.meta
