"""The run's SQLite store: one table per result table, written one unit per transaction.

A unit (the tracing of one fact, or one edit) writes all its rows and its ``units`` row in ONE
transaction, so a unit is complete exactly when its ``units`` row exists, and a run killed at any
moment (also SIGKILL) loses at most the unit in progress. Unique keys reject duplicate rows. Failed
units go to ``failures`` (not ``units``) and are retried on the next run.

One process at a time writes a run directory: :func:`run_lock` holds an exclusive ``flock`` on its
``run.lock`` file, which the operating system releases when the process ends, also by SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from locedit.experiment.killpoints import checkpoint
from locedit.experiment.manifest import MANIFEST_NAME, SQL_EXPORT_SCHEMA
from locedit.experiment.schema import TABLES
from locedit.files import write_atomic

DB_NAME = "results.sqlite"
LOCK_NAME = "run.lock"

# Natural keys: a second row with the same key is a bug (or a unit written twice) and is refused.
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "facts": ("case_id",),
    "trace_points": ("case_id", "kind", "window"),
    "trace_cells": ("case_id", "kind", "window", "token", "layer"),
    "trace_layers": ("case_id", "kind", "window", "layer"),
    "zeroing_layers": ("case_id", "window", "layer"),
    "edits": ("case_id", "method", "problem", "layer"),
    "failures": ("unit",),
}


class StoreError(ValueError):
    """Rows that do not fit the schema, or a database that is not a locedit store."""


class StoreWriteError(RuntimeError):
    """The database cannot be written (read-only, disk full, I/O error); finished units are kept."""


class RunLockedError(RuntimeError):
    """Another process is writing the same run directory."""


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory's lock for the block; refuse at once if another process holds it."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise StoreWriteError(f"cannot write to the run directory {run_dir} ({err.strerror}); fix its permissions "
                              "or choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunLockedError(f"{run_dir} is in use by another locedit run (pid {holder}); wait for it to finish "
                                 "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _write_error(path: Path, err: sqlite3.Error) -> StoreWriteError:
    return StoreWriteError(f"cannot write the results database {path} ({err}); free disk space or fix its "
                           "permissions, then run the same command again to resume (finished units are kept)")


def db_path(run_dir: str | Path) -> Path:
    """The database of a run directory (or the path itself when it is the database file)."""
    p = Path(run_dir)
    return p if p.suffix == ".sqlite" else p / DB_NAME


class Store:
    """Open (and create) the store of a run directory."""

    def __init__(self, run_dir: str | Path, create: bool = True):
        self.path = db_path(run_dir)
        if not self.path.exists() and not create:
            raise FileNotFoundError(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT in write_unit
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                self._create()
        except sqlite3.OperationalError as err:
            raise _write_error(self.path, err) from err

    def _create(self) -> None:
        with self.transaction():
            for table, cols in TABLES.items():
                self.conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})")
                key = UNIQUE_KEYS.get(table)
                if key:
                    self.conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} ({', '.join(key)})")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS units (unit TEXT PRIMARY KEY, kind TEXT, case_id INTEGER, status TEXT, "
                "seconds REAL, finished_at REAL)"
            )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def transaction(self) -> "_Transaction":
        return _Transaction(self.conn)

    def write_unit(self, unit: str, kind: str, case_id: int, rows: Mapping[str, Iterable[Mapping[str, Any]]],
                   seconds: float, status: str = "done") -> None:
        """Write a unit's rows and mark it complete, atomically; clears an earlier failure of it.

        Raises :class:`StoreWriteError` when the database cannot be written (the transaction is rolled back).
        """
        try:
            with self.transaction():
                for table, table_rows in rows.items():
                    self._insert(table, table_rows)
                checkpoint(f"{unit}:rows-inserted")
                self.conn.execute("INSERT INTO units VALUES (?, ?, ?, ?, ?, ?)",
                                  (unit, kind, case_id, status, float(seconds), time.time()))
                self.conn.execute("DELETE FROM failures WHERE unit = ?", (unit,))
                checkpoint(f"{unit}:before-commit")
        except sqlite3.OperationalError as err:
            raise _write_error(self.path, err) from err
        checkpoint(f"{unit}:committed")

    def record_failure(self, unit: str, case_id: int, stage: str, error: str) -> None:
        """Remember a failed unit (replacing an earlier failure of the same unit)."""
        try:
            with self.transaction():
                self.conn.execute("INSERT OR REPLACE INTO failures (unit, case_id, stage, error) VALUES (?, ?, ?, ?)",
                                  (unit, case_id, stage, error))
        except sqlite3.OperationalError as err:
            raise _write_error(self.path, err) from err

    def _insert(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        if table not in TABLES or table == "failures":
            raise StoreError(f"unknown result table {table!r}; tables are {', '.join(TABLES)}")
        cols = TABLES[table]
        values = []
        for row in rows:
            extra = set(row) - set(cols)
            if extra:
                raise StoreError(f"table {table}: unknown columns {sorted(extra)}; the schema is {cols}")
            values.append(tuple(_sql_value(row.get(c)) for c in cols))
        if values:
            self.conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})", values)

    # -- reading ---------------------------------------------------------------------------------

    def completed_units(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT unit FROM units")}

    def failed_units(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT unit FROM failures")}

    def count(self, table: str) -> int:
        if table not in TABLES and table != "units":
            raise StoreError(f"unknown table {table!r}")
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def rows(self, table: str, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if table not in TABLES and table != "units":
            raise StoreError(f"unknown table {table!r}")
        cur = self.conn.execute(f"SELECT * FROM {table} {where}", params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:  # a failed write may already have rolled the transaction back
            self.conn.execute("ROLLBACK")


def _sql_value(v: Any) -> Any:
    """Python / numpy / torch scalars and lists to what SQLite stores."""
    if isinstance(v, bool):
        return int(v)
    if v is None or isinstance(v, (str, int, float, bytes)):
        return v
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        return json.dumps(v.tolist() if hasattr(v, "tolist") else list(v))
    return str(v)


def read_frames(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """One DataFrame per table of :data:`locedit.experiment.schema.TABLES`, with exactly its columns.

    This is what the analysis reads. Rows come in insertion order; empty tables give empty frames with
    the right columns.
    """
    path = db_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} (not a run directory: run `locedit run CONFIG --out DIR` first)")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        frames = {}
        for table, cols in TABLES.items():
            try:
                frames[table] = pd.read_sql_query(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid", conn)
            except pd.errors.DatabaseError as err:
                raise StoreError(f"{path} is not a locedit store (table {table}: {err})") from None
    return frames


EXPORT_FORMATS = ("csv", "parquet", "sql")


def export(run_dir: str | Path, fmt: str = "csv", out: str | Path | None = None) -> list[Path]:
    """Write every result table to ``out`` (default ``RUN_DIR/export``) as CSV or Parquet files.

    ``sql`` instead writes the whole database (units and failures included) as SQL text beside a copy of the
    manifest: the run's portable form, which :func:`import_dump` turns back into a run directory that
    ``locedit run`` continues, on another machine or after this one is gone.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "sql":
        return _dump(Path(run_dir), Path(out) if out is not None else Path(run_dir) / "export")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401 - optional dependency (locedit[parquet]), checked only for parquet
        except ImportError:
            raise RuntimeError("parquet export needs pyarrow: pip install 'locedit[parquet]'") from None
    frames = read_frames(run_dir)
    out_dir = Path(out) if out is not None else Path(run_dir) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table, df in frames.items():
        path = out_dir / f"{table}.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        written.append(path)
    return written


def _dump(run_dir: Path, out_dir: Path) -> list[Path]:
    """``schema.sql`` (the tables and keys) and one ``TABLE.sql`` of INSERT statements per table.

    One statement per line, in insertion order, so a later dump of a growing run differs from an earlier one
    by appended lines; one file per table keeps each file small.
    """
    path = db_path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} (not a run directory: run `locedit run CONFIG --out DIR` first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        # every table gets its file, also an empty one, so no file of an earlier dump outlives its rows
        statements: dict[str, list[str]] = {SQL_EXPORT_SCHEMA: [], **{f"{t}.sql": [] for t in tables}}
        for statement in conn.iterdump():
            if statement.startswith("INSERT INTO "):
                table = statement[len("INSERT INTO "):].split(" ", 1)[0].strip('"')
                statements.setdefault(f"{table}.sql", []).append(statement)
            elif statement not in ("BEGIN TRANSACTION;", "COMMIT;"):
                statements[SQL_EXPORT_SCHEMA].append(statement)
    written = []
    for name, lines in statements.items():
        written.append(write_atomic(out_dir / name, "".join(line + "\n" for line in lines)))
    if (run_dir / MANIFEST_NAME).exists():
        written.append(write_atomic(out_dir / MANIFEST_NAME, (run_dir / MANIFEST_NAME).read_text()))
    return written


def import_dump(dump_dir: str | Path, run_dir: str | Path) -> Path:
    """Rebuild a run directory from an ``export --format sql`` folder; ``locedit run`` then continues the run.

    Refuses a ``run_dir`` that already holds a database. The database is restored beside its final name and
    renamed only once it has every result table, so a failed import leaves no half-written run.
    """
    dump_dir, run_dir = Path(dump_dir), Path(run_dir)
    schema, manifest = dump_dir / SQL_EXPORT_SCHEMA, dump_dir / MANIFEST_NAME
    for needed in (schema, manifest):
        if not needed.is_file():
            raise StoreError(f"{dump_dir} has no {needed.name}; give a folder written by "
                             "`locedit export RUN_DIR --format sql`")
    target = db_path(run_dir)
    if target.exists():
        raise StoreError(f"{run_dir} already holds a run ({target.name}); import into a new --out folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".importing")
    partial.unlink(missing_ok=True)
    try:
        with closing(sqlite3.connect(partial)) as conn:
            conn.executescript(schema.read_text())
            for table_dump in sorted(dump_dir.glob("*.sql")):
                if table_dump != schema:
                    conn.executescript(f"BEGIN;\n{table_dump.read_text()}COMMIT;")
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = sorted(({*TABLES, "units"}) - present)
        if missing:
            raise StoreError(f"{dump_dir} is not a locedit run (no table {', '.join(missing)}); give a folder written "
                             "by `locedit export RUN_DIR --format sql`")
    except sqlite3.Error as err:
        partial.unlink(missing_ok=True)
        raise StoreError(f"{dump_dir} is not a readable SQL dump ({err}); export it again") from None
    except StoreError:
        partial.unlink(missing_ok=True)
        raise
    write_atomic(run_dir / MANIFEST_NAME, manifest.read_text())
    partial.rename(target)
    return run_dir
