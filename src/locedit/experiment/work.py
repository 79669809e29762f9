"""A sweep's work as data: what an executor is handed, and what it hands back per unit.

A :class:`WorkItem` is a small serialisable description of one or more units (docs/algorithms.md#edit-order):
a fact's tracing (``trace:{case_id}``), or a group of up to ``edit.batch_size`` edits of one (method, problem,
layer), one unit per fact (``edit:{case_id}:{method}:{problem}:{layer}``). An executor turns an item into one
:class:`UnitResult` per unit: its rows, or the one-line error of a unit that failed. Items carry their facts,
so a worker on another machine needs nothing from the driver's disk.

>>> from locedit.data.fact import Fact
>>> facts = [Fact(i, "Paris", "Paris is in", "France", "Italy") for i in range(5)]
>>> grid = edit_grid(facts, ["rome"], ["error-injection"], [2])
>>> [g.unit_names for g in edit_groups(grid, batch_size=2)]
[['edit:0:rome:error-injection:2', 'edit:1:rome:error-injection:2'],
 ['edit:2:rome:error-injection:2', 'edit:3:rome:error-injection:2'], ['edit:4:rome:error-injection:2']]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from locedit.data.fact import Fact

Rows = Mapping[str, Iterable[Mapping[str, Any]]]


def trace_unit_name(case_id: int) -> str:
    return f"trace:{case_id}"


def edit_unit_name(case_id: int, method: str, problem: str, layer: int) -> str:
    return f"edit:{case_id}:{method}:{problem}:{layer}"


@dataclass(frozen=True)
class WorkItem:
    """The tracing of one fact, or the edits of ``facts`` by one (method, problem, layer)."""

    kind: Literal["trace", "edit"]
    facts: tuple[Fact, ...]
    method: str = ""
    problem: str = ""
    layer: int = -1

    @property
    def unit_names(self) -> list[str]:
        if self.kind == "trace":
            return [trace_unit_name(f.case_id) for f in self.facts]
        return [edit_unit_name(f.case_id, self.method, self.problem, self.layer) for f in self.facts]

    def __str__(self) -> str:
        names = self.unit_names
        return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"


@dataclass(frozen=True)
class UnitResult:
    """One unit's outcome: ``rows`` to commit, or ``error`` (one line) to record as its failure."""

    name: str
    kind: str
    case_id: int
    seconds: float
    rows: Rows | None = None
    error: str | None = None


class EditUnit(NamedTuple):
    """One edit of the grid: ``fact`` by ``method`` for ``problem`` at central ``layer``."""

    fact: Fact
    method: str
    problem: str
    layer: int

    @property
    def name(self) -> str:
        return edit_unit_name(self.fact.case_id, self.method, self.problem, self.layer)


def trace_items(facts: Sequence[Fact]) -> list[WorkItem]:
    return [WorkItem("trace", (f,)) for f in facts]


def edit_grid(facts: Sequence[Fact], methods: Sequence[str], problems: Sequence[str],
              layers: Sequence[int]) -> list[EditUnit]:
    """Every edit, ordered problem > method > layer > fact (config order), so that groups fill up."""
    return [EditUnit(f, m, p, l) for p in problems for m in methods for l in layers for f in facts]


def edit_groups(units: Sequence[EditUnit], batch_size: int) -> list[WorkItem]:
    """Consecutive units of one (method, problem, layer), at most ``batch_size`` per work item."""
    groups: list[WorkItem] = []
    for u in units:
        last = groups[-1] if groups else None
        if last is not None and (last.method, last.problem, last.layer) == u[1:] and len(last.facts) < batch_size:
            groups[-1] = WorkItem("edit", last.facts + (u.fact,), u.method, u.problem, u.layer)
        else:
            groups.append(WorkItem("edit", (u.fact,), u.method, u.problem, u.layer))
    return groups
