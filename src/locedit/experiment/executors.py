"""Executors: where a sweep's work items run. The driver (:mod:`locedit.experiment.runner`) is the same for all.

- ``local``: :class:`LocalExecutor`, the model in this process, items one after another;
- ``ray``: :class:`locedit.experiment.ray_backend.RayExecutor`, Ray actors that each load the model once
  (``pip install 'locedit[ray]'``).

Both run :meth:`locedit.experiment.worker.Experiment.run_item`, so a unit's rows do not depend on the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from locedit.data.fact import Fact
from locedit.experiment.config import ExperimentConfig
from locedit.experiment.ray_backend import RayExecutor
from locedit.experiment.sweep import Executor
from locedit.experiment.work import UnitResult, WorkItem
from locedit.experiment.worker import Experiment, load_configured_model


class LocalExecutor:
    """The model in the driver's process; items run one after another, the filters in batches ahead of tracing."""

    name = "local"
    workers = 1

    def __init__(self) -> None:
        self.experiment: Experiment | None = None
        self._running = 0

    def start(self, cfg: ExperimentConfig) -> None:
        model, tok = load_configured_model(cfg)
        self.experiment = Experiment(cfg, model, tok)

    def _exp(self) -> Experiment:
        if self.experiment is None:
            raise RuntimeError("the local executor has not been started: call start(cfg) first")
        return self.experiment

    def prefilter(self, facts: Sequence[Fact], progress: Callable[[int], None] | None = None) -> None:
        self._exp().prefilter(list(facts), progress=progress)

    def prepare_edits(self) -> dict[str, Any]:
        return self._exp().prepare_edits()

    def results(self, items: Sequence[WorkItem]) -> Iterator[list[UnitResult]]:
        for item in items:
            self._running = 1
            try:
                results = self._exp().run_item(item)
            finally:
                self._running = 0
            yield results

    @property
    def in_flight(self) -> int:
        return self._running

    def close(self) -> None:
        self.experiment = None


def executor_for(backend: str, **options: Any) -> Executor:
    """The executor of ``backend`` ('local' or 'ray'); ``options`` go to the Ray executor (address, workers, ...).

    Connecting to Ray happens here (Ray is imported only then), so a missing Ray or an unreachable cluster is
    reported before any model work.
    """
    if backend == "local":
        if any(v is not None for v in options.values()):
            given = ", ".join(k for k, v in options.items() if v is not None)
            raise ValueError(f"{given.replace('_', '-')}: only for the ray backend (--backend ray)")
        return LocalExecutor()
    if backend == "ray":
        return RayExecutor(**options)
    raise ValueError(f"unknown backend {backend!r}; use local or ray")
