"""The resumable sweep engine: run named units, one transaction each, skipping the completed ones.

A :class:`Unit` is a name and a function returning its result rows. :func:`run_units` seeds every RNG
at the start of each unit (so a resumed run reproduces an uninterrupted one), writes each unit's rows
atomically, records a failing unit with its error and goes on, and shows units done, rate and ETA.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from locedit.experiment.killpoints import checkpoint
from locedit.experiment.store import Store, StoreWriteError

Rows = Mapping[str, Iterable[Mapping[str, Any]]]


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


def progress_bar(console: Console | None = None, disable: bool = False) -> Progress:
    """A rich progress bar on stderr: description, bar, done/total, rate, elapsed, ETA."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console or Console(stderr=True), disable=disable)


def run_units(store: Store, units: Sequence[Unit], seed: int, label: str = "units",
              progress: Progress | None = None) -> SweepSummary:
    """Run every unit not yet complete in ``store``; a failing unit is recorded and the sweep goes on.

    A database that cannot be written (:class:`StoreWriteError`) stops the sweep: nothing could be recorded.
    """
    completed = store.completed_units()
    todo = [u for u in units if u.name not in completed]
    summary = SweepSummary(total=len(units), skipped=len(units) - len(todo))
    task = progress.add_task(label, total=len(todo)) if progress is not None else None
    start = time.perf_counter()
    for unit in todo:
        t0 = time.perf_counter()
        seed_everything(seed)
        checkpoint(f"{unit.name}:start")
        try:
            rows = unit.work()
            checkpoint(f"{unit.name}:computed")
            store.write_unit(unit.name, unit.kind, unit.case_id, rows, time.perf_counter() - t0)
            summary.done += 1
        except (SweepAbort, StoreWriteError):
            raise
        except Exception as err:  # noqa: BLE001 - a failing unit is recorded, counted and retried next run
            message = error_line(err)
            store.record_failure(unit.name, unit.case_id, unit.kind, message)
            summary.failed += 1
            summary.errors.append((unit.name, message))
        if task is not None:
            progress.advance(task)
    summary.seconds = time.perf_counter() - start
    return summary
