"""The Ray executor: a sweep's work items on Ray actors, on this machine or a cluster (``locedit[ray]``).

Each worker is a :class:`SweepActor`: one process that loads the configured model once and keeps it, with
its caches (knowledge filters, pre-edit evaluations, key statistics), between items. The driver (the process
running ``locedit run``) keeps the run directory: it hands out items, receives each unit's rows and commits
them (:func:`locedit.experiment.sweep.run_items`). No shared filesystem is assumed:

- facts travel inside the work items (Ray's object store); the config is shipped to every actor;
- the model is built by the worker: ``tiny:*`` models deterministically from seed 0, the embedded models
  from their installed packages, a hub id from the worker's hub cache, a local folder from the same path on
  the worker (it must exist there);
- key statistics and context templates are rebuilt by the worker, deterministically (fixed corpus order and
  seeds), from the corpus it resolves itself (by default ``wikitext/`` under ``LOCEDIT_DATA_DIR``), and cached
  in its own cache folder; workers on one machine share that cache. The driver's ``LOCEDIT_*`` settings
  (data and cache folders) are passed to the workers through the runtime environment.

Faults: a worker that dies (killed, out of memory, machine lost) is replaced by a new actor and its item is
retried on one, at most ``max_retries`` times; a unit that raises is a result like any other (recorded once
as failed by the driver, not retried). A killed driver takes its actors with it; the same command resumes.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from locedit.data.fact import Fact
from locedit.experiment.config import ExperimentConfig
from locedit.experiment.killpoints import KILL_ENV, LOG_ENV
from locedit.experiment.work import UnitResult, WorkItem
from locedit.experiment.worker import Experiment, load_configured_model

MAX_RETRIES = 2
_PER_PROCESS_ENV = (KILL_ENV, LOG_ENV)  # crash-test settings of the driver, never the workers'


class RayBackendError(RuntimeError):
    """Ray cannot be used as asked: not installed, an unreachable cluster, bad sizes, workers that fail to start."""


def _ray() -> Any:
    """The ``ray`` module, imported on first use: the local backend never pays for it, nor needs it installed."""
    try:
        import ray  # deferred: optional (locedit[ray]) and heavy, only this backend needs it
        import ray.exceptions  # noqa: F401 - deferred with ray, for the worker and task errors
    except ImportError:
        raise RayBackendError("the ray backend needs Ray: pip install 'locedit[ray]' (make setup installs it)") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` ('auto', 'HOST:PORT' or 'ray://HOST:PORT'), or start a local instance
    sized to this machine; returns whether this call connected. A process where Ray is already initialised
    (e.g. a test session) keeps its instance; an explicit ``address`` must still be reachable."""
    ray = _ray()
    try:
        if address is not None:
            _check_reachable(address)
        if ray.is_initialized():
            return False
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address is None:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (OSError, RuntimeError, ValueError) as err:
        where = f"at --address {address}" if address else "on this machine"
        raise RayBackendError(f"cannot reach a Ray cluster {where} ({_cause(err)}); start one with "
                              "`ray start --head` or check the address") from None
    return True


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raise OSError unless HOST:PORT (or ray://HOST:PORT) accepts a TCP connection; Ray itself retries an
    unreachable address for minutes. 'auto' is left to Ray (it fails at once when no cluster runs here)."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected auto, HOST:PORT or ray://HOST:PORT")
    socket.create_connection((host, int(port)), timeout=timeout).close()


class SweepActor:
    """One worker process: the configured model, loaded once, and the :class:`Experiment` that keeps its caches."""

    def __init__(self, cfg: ExperimentConfig, threads: int):
        torch.set_num_threads(threads)
        model, tok = load_configured_model(cfg)
        self.experiment = Experiment(cfg, model, tok)

    def pid(self) -> int:
        return os.getpid()

    def prepare_edits(self) -> dict[str, Any]:
        return self.experiment.prepare_edits()

    def run_item(self, item: WorkItem) -> list[UnitResult]:
        return self.experiment.run_item(item)


@functools.cache
def _remote_actor() -> Any:
    """:class:`SweepActor` as a Ray actor class (made once per process)."""
    return _ray().remote(SweepActor)


class RayExecutor:
    """Work items on ``workers`` Ray actors of ``threads_per_worker`` CPUs (and ``gpus_per_worker`` GPUs) each.

    ``workers`` defaults to what the cluster holds: its CPUs / threads (and GPUs / gpus per worker).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_worker: float | None = None,
                 threads_per_worker: int | None = None, max_retries: int = MAX_RETRIES):
        self.ray = _ray()
        for flag, value, low in (("--workers", workers, 1), ("--threads-per-worker", threads_per_worker, 1),
                                 ("--gpus-per-worker", gpus_per_worker, 0)):
            if value is not None and value < low:
                raise RayBackendError(f"{flag} must be >= {low}, got {value}")
        self.threads = threads_per_worker or 1
        self.gpus = gpus_per_worker or 0
        self.max_retries = max_retries
        self._connected = connect(address)
        self.n_workers = workers or self._fitting_workers()
        self.actors: list[Any] = []
        self._pids: dict[Any, Any] = {}
        self._running: dict[Any, tuple[WorkItem, int, Any]] = {}
        self._cfg: ExperimentConfig | None = None
        self.replaced = 0  # workers that died and were replaced

    @property
    def workers(self) -> int:
        return self.n_workers

    def _fitting_workers(self) -> int:
        resources = self.ray.cluster_resources()
        n = int(resources.get("CPU", 1) // self.threads)
        if self.gpus:
            n = min(n, int(resources.get("GPU", 0) // self.gpus))
        if n < 1:
            raise RayBackendError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and "
                                  f"{resources.get('GPU', 0):g} GPUs: not enough for one worker of "
                                  f"{self.threads} threads and {self.gpus:g} GPUs")
        return n

    # -- workers
    def _spawn(self) -> Any:
        env = {k: v for k, v in os.environ.items() if k.startswith("LOCEDIT_") and k not in _PER_PROCESS_ENV}
        actor = _remote_actor().options(num_cpus=self.threads, num_gpus=self.gpus, max_restarts=0,
                                         runtime_env={"env_vars": env}).remote(self._cfg, self.threads)
        self._pids[actor] = actor.pid.remote()  # answered once the model is loaded
        return actor

    def _replace(self, actor: Any) -> Any:
        self.ray.kill(actor, no_restart=True)
        self._pids.pop(actor, None)
        new = self._spawn()
        self.actors[self.actors.index(actor)] = new
        self.replaced += 1
        return new

    def start(self, cfg: ExperimentConfig) -> None:
        """Start the workers and wait until each has loaded the model (a worker that cannot is an error here)."""
        self._cfg = cfg
        self.actors = [self._spawn() for _ in range(self.n_workers)]
        try:
            self.worker_pids()
        except self.ray.exceptions.RayActorError as err:
            self.close()
            raise RayBackendError(f"a Ray worker could not load {cfg.model.name}: {_cause(err)}") from None

    def worker_pids(self) -> list[int]:
        """The process id of every current worker (waits for workers still loading the model)."""
        return self.ray.get([self._pids[a] for a in self.actors])

    # -- work
    def prefilter(self, facts: Sequence[Fact], progress: Callable[[int], None] | None = None) -> None:
        """Nothing ahead of time: each worker runs the filters of the fact it traces."""

    def prepare_edits(self) -> dict[str, Any]:
        """Key statistics on one worker first (workers on its machine then read them from the disk cache),
        then on the others at once; the first worker's record goes to the manifest. A worker that dies here is
        replaced (the new one prepares before its first edit)."""
        info = None
        for _ in range(self.max_retries + 1):
            actor = self.actors[0]
            try:
                info = _get(actor.prepare_edits.remote())
                break
            except self.ray.exceptions.RayActorError:
                self._replace(actor)
        if info is None:
            raise RayBackendError("the Ray workers died while computing the key statistics")
        for actor, ref in [(a, a.prepare_edits.remote()) for a in self.actors]:
            try:
                _get(ref)
            except self.ray.exceptions.RayActorError:
                self._replace(actor)
        return info

    def results(self, items: Sequence[WorkItem]) -> Iterator[list[UnitResult]]:
        queue = deque((item, 0) for item in items)
        idle = list(self.actors)
        while queue or self._running:
            while queue and idle:
                item, retries = queue.popleft()
                actor = idle.pop()
                self._running[actor.run_item.remote(item)] = (item, retries, actor)
            [ref], _ = self.ray.wait(list(self._running), num_returns=1)
            item, retries, actor = self._running.pop(ref)
            try:
                results = _get(ref)  # an error here is not a unit's failure (those are results): it stops the run
            except self.ray.exceptions.RayActorError as err:
                idle.append(self._replace(actor))
                if retries < self.max_retries:
                    queue.appendleft((item, retries + 1))
                    continue
                message = f"WorkerDied: the worker running this unit died {retries + 1} times ({_cause(err)})"
                yield [UnitResult(name, item.kind, f.case_id, 0.0, error=message)
                       for name, f in zip(item.unit_names, item.facts)]
                continue
            idle.append(actor)
            yield results

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def close(self) -> None:
        """Stop the workers, and Ray itself when this executor started or joined it."""
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors, self._pids, self._running = [], {}, {}
        if self._connected:
            self.ray.shutdown()
            self._connected = False


def _get(ref: Any) -> Any:
    """``ray.get(ref)``; an exception raised in the worker is raised here as itself (e.g. :class:`SweepAbort`),
    as the local backend would raise it."""
    ray = _ray()
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        raise (err.cause if isinstance(err.cause, Exception) else err) from None


def _cause(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
