"""The resumable sweep engine: run named units, one transaction each, skipping the completed ones.

The driver's side of every sweep: each unit's rows are written atomically in its own transaction, a failing
unit is recorded once with its error and the sweep goes on, and a progress bar shows units done, failed, in
flight, rate and ETA. :func:`run_items` takes its units' results from an executor
(:mod:`locedit.experiment.executors`: this process, or Ray actors); :func:`run_units` runs in-process
:class:`Unit` closures. Every unit starts from its seed (:func:`seed_everything`), so a resumed run
reproduces an uninterrupted one, whichever process computed each unit.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from locedit.data.fact import Fact
from locedit.experiment.config import ExperimentConfig
from locedit.experiment.killpoints import checkpoint
from locedit.experiment.store import Store, StoreWriteError
from locedit.experiment.work import Rows, UnitResult, WorkItem


class SweepAbort(RuntimeError):
    """Raised by a unit when continuing would corrupt later units (e.g. weights not restored)."""


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: ``work()`` returns {table: rows}, written in one transaction."""

    name: str
    kind: str
    case_id: int
    work: Callable[[], Rows]


@dataclass
class SweepSummary:
    """What a sweep did: units run now, skipped as already complete, and failed (with their errors)."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: "SweepSummary") -> "SweepSummary":
        return SweepSummary(self.total + other.total, self.done + other.done, self.skipped + other.skipped,
                            self.failed + other.failed, self.seconds + other.seconds, self.errors + other.errors)

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.done, "skipped": self.skipped, "failed": self.failed,
                "seconds": round(self.seconds, 3), "errors": [{"unit": u, "error": e} for u, e in self.errors]}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def error_line(err: BaseException) -> str:
    """``Type: first line of the message`` plus where it was raised (file:line of the innermost frame)."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    tb = traceback.extract_tb(err.__traceback__)
    where = f" [{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}]" if tb else ""
    return f"{type(err).__name__}: {msg}{where}"


class _RateColumn(ProgressColumn):
    """Units per second, or seconds per unit when slower than one a second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("-- /s", style="progress.data.speed")
        return Text(f"{speed:.2f} u/s" if speed >= 1 else f"{1 / speed:.1f} s/u", style="progress.data.speed")


class _StateColumn(ProgressColumn):
    """Failed units and units in flight (a callable field, read at every refresh), when there are any."""

    def render(self, task: Task) -> Text:
        failed = task.fields.get("failed", 0)
        in_flight = task.fields.get("in_flight", 0)
        in_flight = in_flight() if callable(in_flight) else in_flight
        parts = [f"{failed} failed"] if failed else []
        parts += [f"{in_flight} in flight"] if in_flight and not task.finished else []
        return Text(", ".join(parts), style="yellow" if failed else "progress.data.speed")


def progress_bar(console: Console | None = None, disable: bool = False) -> Progress:
    """A rich progress bar on stderr: description, bar, done/total, failed and in flight, rate, elapsed, ETA."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _StateColumn(),
                    _RateColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console or Console(stderr=True), disable=disable)


class Executor(Protocol):
    """Turns work items into unit results; the local process or a pool of workers (one class per backend)."""

    name: str

    @property
    def workers(self) -> int:
        """Items computed at once (the manifest records it per session)."""

    def start(self, cfg: ExperimentConfig) -> None:
        """Load the configured model wherever the work runs."""

    def prefilter(self, facts: Sequence[Fact], progress: Callable[[int], None] | None = None) -> None:
        """Run the knowledge filters of ``facts`` ahead of their trace units, where that saves time."""

    def prepare_edits(self) -> dict[str, Any]:
        """Prepare every worker for edits (key statistics); what to record in the manifest."""

    def results(self, items: Sequence[WorkItem]) -> Iterator[list[UnitResult]]:
        """Each item's unit results, in the order items finish."""

    @property
    def in_flight(self) -> int:
        """Items being computed now."""

    def close(self) -> None:
        """Release the workers."""


class _Driver:
    """Commits unit results into the store, one transaction each, and keeps the summary and the bar."""

    def __init__(self, store: Store, total: int, todo: int, label: str, progress: Progress | None,
                 in_flight: Callable[[], int] | int = 0):
        self.store, self.progress = store, progress
        self.summary = SweepSummary(total=total, skipped=total - todo)
        self.task = progress.add_task(label, total=todo, failed=0, in_flight=in_flight) if progress else None
        self.start = time.perf_counter()

    def commit(self, result: UnitResult) -> None:
        """Write the unit's rows, or record its failure (a database that cannot be written stops the sweep)."""
        checkpoint(f"{result.name}:computed")
        if result.error is None:
            self.store.write_unit(result.name, result.kind, result.case_id, result.rows or {}, result.seconds)
            self.summary.done += 1
        else:
            self.store.record_failure(result.name, result.case_id, result.kind, result.error)
            self.summary.failed += 1
            self.summary.errors.append((result.name, result.error))
        if self.task is not None:
            self.progress.update(self.task, advance=1, failed=self.summary.failed)

    def finish(self) -> SweepSummary:
        self.summary.seconds = time.perf_counter() - self.start
        return self.summary


def run_items(store: Store, items: Sequence[WorkItem], executor: Executor, label: str = "units",
              progress: Progress | None = None, total: int | None = None) -> SweepSummary:
    """Hand ``items`` (units not yet complete) to ``executor`` and commit each unit's result as it arrives.

    ``total``: units of the sweep including those already complete (the summary counts them as skipped).
    """
    todo = sum(len(item.facts) for item in items)
    driver = _Driver(store, todo if total is None else total, todo, label, progress,
                     in_flight=lambda: executor.in_flight)
    for results in executor.results(items):
        for result in results:
            driver.commit(result)
    return driver.finish()


def run_units(store: Store, units: Sequence[Unit], seed: int, label: str = "units",
              progress: Progress | None = None) -> SweepSummary:
    """Run every unit not yet complete in ``store``, in this process; a failing unit is recorded and the sweep
    goes on.

    A database that cannot be written (:class:`StoreWriteError`) stops the sweep: nothing could be recorded.
    """
    completed = store.completed_units()
    todo = [u for u in units if u.name not in completed]
    driver = _Driver(store, len(units), len(todo), label, progress, in_flight=1)
    for unit in todo:
        t0 = time.perf_counter()
        seed_everything(seed)
        checkpoint(f"{unit.name}:start")
        try:
            result = UnitResult(unit.name, unit.kind, unit.case_id, 0.0, rows=unit.work())
        except (SweepAbort, StoreWriteError):
            raise
        except Exception as err:  # noqa: BLE001 - a failing unit is recorded, counted and retried next run
            result = UnitResult(unit.name, unit.kind, unit.case_id, 0.0, error=error_line(err))
        driver.commit(replace(result, seconds=time.perf_counter() - t0))
    return driver.finish()
