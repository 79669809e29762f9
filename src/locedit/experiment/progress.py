"""How far a run directory is and how long the rest will take, read without disturbing the run (``locedit status``).

:func:`run_status` reads ``manifest.json`` and ``results.sqlite`` read-only (SQLite ``mode=ro``, one read
transaction, so the counts are one consistent snapshot); it never takes the run lock and never writes, so it
works while ``locedit run`` writes the same directory (WAL mode: a reader neither blocks the writer nor sees its
uncommitted unit). It plans the units as the runner does (:func:`~locedit.experiment.selection.select_facts`,
:func:`~locedit.experiment.work.trace_items`, :func:`~locedit.experiment.runner.eligible_edits`) from the
manifest's config and the ``facts`` rows of the traced facts; no model is loaded.

A planned unit is *done* when its ``units`` row exists, *failed* when it is in ``failures`` (the next run retries
it) and *pending* otherwise. The edits of a fact whose trace unit has not finished have unknown eligibility (the
knowledge filters run in that unit): they are counted as *not yet planned*, an upper bound (every method x
problem x layer of the fact).

Time per unit is the ``units.seconds`` column: each unit's wall time on its worker (a group of edits shares its
time equally among its units). :func:`estimate_seconds` states the rule of the remaining-time estimate.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from locedit.experiment.config import ExperimentConfig, parse_config
from locedit.experiment.manifest import MANIFEST_NAME, RunDirError, manifest_path, read_manifest, refuse_sql_export
from locedit.experiment.runner import eligible_edits
from locedit.experiment.selection import select_facts
from locedit.experiment.store import DB_NAME, StoreError, db_path
from locedit.experiment.work import edit_grid, trace_items

SESSION_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # the runner's ``sessions[].started_at``


@dataclass(frozen=True)
class UnitCounts:
    """Units of one stage or one (method, problem): done, failed, pending, not yet planned (an upper bound), and
    the seconds the done ones took (sum of ``units.seconds``)."""

    done: int = 0
    failed: int = 0
    pending: int = 0
    unplanned: int = 0
    seconds: float = 0.0

    @property
    def remaining(self) -> int:
        """Units the next run still has to compute: failed (retried), pending and not yet planned."""
        return self.failed + self.pending + self.unplanned

    @property
    def mean_seconds(self) -> float | None:
        return self.seconds / self.done if self.done else None

    def add(self, other: UnitCounts) -> UnitCounts:
        return UnitCounts(self.done + other.done, self.failed + other.failed, self.pending + other.pending,
                          self.unplanned + other.unplanned, self.seconds + other.seconds)


@dataclass(frozen=True)
class EditGroup:
    """The edit units of one (method, problem), over every layer and fact."""

    method: str
    problem: str
    counts: UnitCounts


@dataclass(frozen=True)
class SessionRate:
    """The latest session of ``locedit run`` that finished units (1-based index into the manifest's sessions).

    ``per_hour``: units finished per hour of wall clock, from the session's start to its last finished unit;
    ``workers``: the workers the session recorded in the manifest, else those observed: the units' summed seconds
    over the wall clock from the session's start to its last finished unit (rounded, at least 1; the model load
    counts as idle time, so an observation early in a session may fall short).
    """

    session: int
    units: int
    per_hour: float | None
    workers: int


@dataclass(frozen=True)
class RunStatus:
    """Where a run directory stands; see the module docstring for the counts and :func:`estimate_seconds`."""

    run_dir: str
    config_name: str
    config_hash: str
    facts: int
    tracing: UnitCounts
    editing: tuple[EditGroup, ...]
    sessions: int
    latest: SessionRate | None
    eta_seconds: float | None

    @property
    def workers(self) -> int:
        """Parallel workers observed in the latest session (1 before any unit finished)."""
        return self.latest.workers if self.latest else 1

    @property
    def edits(self) -> UnitCounts:
        out = UnitCounts()
        for group in self.editing:
            out = out.add(group.counts)
        return out

    @property
    def total(self) -> UnitCounts:
        return self.tracing.add(self.edits)

    @property
    def complete(self) -> bool:
        return self.total.remaining == 0

    @property
    def unmeasured(self) -> int:
        """Remaining edits of a (method, problem) with no finished edit yet: their time is a guess."""
        return sum(g.counts.remaining for g in self.editing if g.counts.mean_seconds is None)

    def as_dict(self) -> dict[str, Any]:
        """Every field (JSON types), plus ``workers``, the ``edits`` and ``total`` counts and ``complete``."""
        return {**asdict(self), "workers": self.workers, "edits": asdict(self.edits), "total": asdict(self.total),
                "complete": self.complete, "unmeasured": self.unmeasured}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        """The inverse of :meth:`as_dict` (derived entries are recomputed, not read)."""
        latest = data["latest"]
        return cls(data["run_dir"], data["config_name"], data["config_hash"], data["facts"],
                   UnitCounts(**data["tracing"]),
                   tuple(EditGroup(g["method"], g["problem"], UnitCounts(**g["counts"])) for g in data["editing"]),
                   data["sessions"], SessionRate(**latest) if latest else None, data["eta_seconds"])


def estimate_seconds(tracing: UnitCounts, editing: Sequence[EditGroup], workers: int) -> float | None:
    """The remaining wall-clock time: remaining units x the mean seconds of their own kind, / ``workers``.

    Remaining units are the failed (retried by the next run), pending and not-yet-planned ones (an upper bound).
    The mean of a (method, problem) is that of its done edits, falling back to the mean over all done edits;
    trace units use the mean of the done trace units. None ("unknown") while some remaining unit has no mean to
    use, e.g. before any edit finished; 0 when nothing remains.
    """
    all_edits = UnitCounts()
    for group in editing:
        all_edits = all_edits.add(group.counts)
    needs = [(tracing.remaining, tracing.mean_seconds)]
    needs += [(g.counts.remaining, g.counts.mean_seconds or all_edits.mean_seconds) for g in editing]
    total = 0.0
    for n, mean in needs:
        if n == 0:
            continue
        if mean is None:
            return None
        total += n * mean
    return total / workers


def run_status(run_dir: str | Path) -> RunStatus:
    """Read ``run_dir`` (the ``--out`` of ``locedit run``) without writing or locking it; see the module docstring.

    Raises :class:`RunDirError` (not a run directory, no manifest or database, a manifest or database of another
    config) or :class:`StoreError` (not a locedit database), each one line naming the fix.
    """
    run_dir = Path(run_dir)
    refuse_sql_export(run_dir)
    manifest, cfg = _manifest_config(run_dir)
    db = db_path(run_dir)
    if not db.is_file():
        raise RunDirError(f"{run_dir} has a manifest but no {DB_NAME}: the database was moved or deleted; put it "
                          f"back, or run `locedit run CONFIG --out {run_dir}` to start again")
    with _snapshot(db) as conn:
        units = {name: (seconds, finished) for name, seconds, finished in
                 conn.execute("SELECT unit, seconds, finished_at FROM units")}
        failures = {name for (name,) in conn.execute("SELECT unit FROM failures")}
        cur = conn.execute("SELECT * FROM facts")
        fact_rows = {row["case_id"]: row for row in (dict(zip([d[0] for d in cur.description], r)) for r in cur)}

    facts = select_facts(cfg.data, cfg.model.name)
    trace_names = [name for item in trace_items(facts) for name in item.unit_names]
    planned = eligible_edits(cfg, facts, fact_rows)
    e = cfg.edit
    unplanned = edit_grid([f for f in facts if f.case_id not in fact_rows], e.methods, e.problems, e.layers)
    foreign = (units.keys() | failures) - set(trace_names) - {u.name for u in planned}
    if foreign:
        raise RunDirError(f"{db} holds {len(foreign)} unit(s) that the config of its {MANIFEST_NAME} does not plan "
                          f"(e.g. {min(foreign)}): the database belongs to another config; restore the run's own "
                          "manifest or move the database away")

    seconds = {name: s for name, (s, _) in units.items()}
    tracing = _counts(trace_names, seconds, failures)
    editing = tuple(
        EditGroup(m, p, _counts([u.name for u in planned if (u.method, u.problem) == (m, p)], seconds, failures,
                                sum((u.method, u.problem) == (m, p) for u in unplanned)))
        for p in e.problems for m in e.methods)
    sessions = manifest.get("sessions", [])
    latest = latest_session_rate([_timestamp(s["started_at"]) for s in sessions], list(units.values()),
                                 [s.get("workers") for s in sessions])
    eta = estimate_seconds(tracing, editing, latest.workers if latest else 1)
    return RunStatus(str(run_dir), cfg.name, cfg.hash(), len(facts), tracing, editing, len(sessions), latest, eta)


def latest_session_rate(starts: Sequence[float], finished: Sequence[tuple[float, float]],
                        recorded_workers: Sequence[int | None] = ()) -> SessionRate | None:
    """The rate of the latest session with finished units; ``finished`` holds each unit's (seconds, finished_at),
    ``recorded_workers`` each session's worker count as its manifest entry records it (None where it does not).

    Session ``i`` owns the units finished between its start and the next session's; without recorded sessions
    every unit belongs to one session that started when its first unit did. None before any unit finished.
    Units edited as one group share its time and finish together, so the observed workers count the session's
    wall clock, not the spans of single units.
    """
    if not finished:
        return None
    if not starts:
        starts = [min(t - s for s, t in finished)]
    for i in reversed(range(len(starts))):
        end = starts[i + 1] if i + 1 < len(starts) else math.inf
        mine = [(s, t) for s, t in finished if starts[i] <= t < end]
        if mine:
            break
    else:
        return None
    last = max(t for _, t in mine)
    hours = (last - starts[i]) / 3600
    recorded = recorded_workers[i] if i < len(recorded_workers) else None
    busy = sum(s for s, _ in mine)
    workers = recorded or (max(1, round(busy / (hours * 3600))) if hours > 0 else 1)
    return SessionRate(i + 1, len(mine), len(mine) / hours if hours > 0 else None, workers)


def _counts(names: Sequence[str], seconds: dict[str, float], failures: set[str], unplanned: int = 0) -> UnitCounts:
    done = [n for n in names if n in seconds]
    failed = sum(n in failures and n not in seconds for n in names)
    return UnitCounts(len(done), failed, len(names) - len(done) - failed, unplanned, sum(seconds[n] for n in done))


def _manifest_config(run_dir: Path) -> tuple[dict[str, Any], ExperimentConfig]:
    """The manifest and the config it records, checked against the hash it records."""
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is not a folder; give a run directory (the --out of `locedit run`)")
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise RunDirError(f"{run_dir} has no {MANIFEST_NAME}, so it is not a run directory (or its run never got "
                          "past loading the model); give the --out of a `locedit run`")
    path = manifest_path(run_dir)
    if not isinstance(manifest.get("config"), dict):
        raise RunDirError(f"{path} records no config; it was not written by `locedit run`")
    cfg = parse_config(manifest["config"], origin=str(path))
    if cfg.hash() != manifest.get("config_hash"):
        raise RunDirError(f"{path} records config hash {str(manifest.get('config_hash'))[:10]} but its config hashes "
                          f"to {cfg.short_hash()}: it was edited or written by another locedit version; restore the "
                          "manifest the run wrote")
    return manifest, cfg


@contextmanager
def _snapshot(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction (a consistent snapshot under a concurrent writer).

    With no ``-wal`` file beside the database no connection is open (no run is writing), and the database is
    opened ``immutable``: a read-only WAL reader would otherwise leave an empty ``-wal`` / ``-shm`` pair behind,
    and could not open a run directory it may not write. A run that starts meanwhile writes its first units to
    its own ``-wal`` after loading the model, not to the database file this reader reads.
    """
    quiet = not db.with_name(db.name + "-wal").exists()
    uri = f"file:{db}?mode=ro" + ("&immutable=1" if quiet else "")
    try:
        with closing(sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)) as conn:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        raise StoreError(f"cannot read {db} as a locedit results database ({err}); give the run directory of a "
                         "`locedit run`") from None


def _timestamp(text: str) -> float:
    return datetime.strptime(text, SESSION_TIME_FORMAT).timestamp()
