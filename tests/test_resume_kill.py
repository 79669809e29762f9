"""Kill a real `locedit run` with SIGKILL mid-sweep, check the database, resume, compare to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from locedit.data.fact import Fact
from locedit.experiment.config import dump_toml, parse_config
from locedit.experiment.store import UNIQUE_KEYS, read_frames

FACTS = [
    Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English"),
    Fact(1, "Toko Yasuda", "Toko Yasuda plays the instrument", "guitar", "piano"),
    Fact(2, "Autonomous University of Madrid", "Autonomous University of Madrid, which is located in", "Spain",
         "Sweden"),
]
LAYERS = [0, 3, 5]
N_EDITS = len(FACTS) * 2 * len(LAYERS)  # methods rome and ft-1, one problem


def write_config(folder: Path) -> Path:
    """A tiny-model config (random weights, so no correctness filter) over FACTS."""
    facts = folder / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS]))
    cfg = parse_config({
        "name": "kill", "model": {"name": "tiny:llama"},
        "data": {"source": str(facts), "correctness_filter": False},
        "localize": {"windows": [3], "samples": 3},
        "edit": {"methods": ["rome", "ft-1"], "problems": ["error-injection"], "layers": LAYERS, "essence": False,
                 "hparams": {"rome": {"v_num_grad_steps": 5}, "ft-1": {"num_steps": 10}}},
        "stats": {"n_tokens": 2000},
        "analysis": {"analyze": False, "report": False},
    })
    path = folder / "kill.toml"
    path.write_text(dump_toml(cfg))
    return path


def run_cmd(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "locedit.cli.main", "run", str(config), "--out", str(out), "--no-progress", "--json",
            "--threads", "1"]


def n_units(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM units WHERE kind = 'edit'").fetchone()[0]
    except sqlite3.Error:
        return 0


def assert_consistent(db: Path) -> dict[str, float]:
    """No duplicate keys; every result row belongs to a completed unit and every completed unit has its rows."""
    conn = sqlite3.connect(db)
    for table, key in UNIQUE_KEYS.items():
        cols = ", ".join(key)
        dupes = conn.execute(f"SELECT {cols}, COUNT(*) c FROM {table} GROUP BY {cols} HAVING c > 1").fetchall()
        assert dupes == [], f"duplicates in {table}"
    units = dict(conn.execute("SELECT unit, finished_at FROM units").fetchall())
    edits = {f"edit:{c}:{m}:{p}:{l}" for c, m, p, l in conn.execute("SELECT case_id, method, problem, layer FROM edits")}
    assert edits == {u for u in units if u.startswith("edit:")}
    facts = {f"trace:{c}" for (c,) in conn.execute("SELECT case_id FROM facts")}
    assert facts == {u for u in units if u.startswith("trace:")}
    traced = {f"trace:{c}" for (c,) in conn.execute("SELECT DISTINCT case_id FROM trace_points")}
    assert traced == facts
    conn.close()
    return units


def comparable(run_dir: Path) -> dict[str, list[dict]]:
    frames = read_frames(run_dir)
    out = {}
    for table, df in frames.items():
        df = df.drop(columns=[c for c in ("edit_seconds", "eval_seconds") if c in df.columns])
        out[table] = df.sort_values(list(UNIQUE_KEYS[table])).round(6).to_dict("records")
    return out


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    config = write_config(tmp_path)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    proc = subprocess.Popen(run_cmd(config, killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    db = killed / "results.sqlite"
    deadline = time.time() + 300
    while n_units(db) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]

    before = assert_consistent(db)
    done_before = sum(u.startswith("edit:") for u in before)
    assert 5 <= done_before < N_EDITS, "the run was not killed mid-sweep"

    resumed = subprocess.run(run_cmd(config, killed), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["failed"] == 0
    assert summary["editing"]["skipped"] == done_before
    assert summary["editing"]["done"] == N_EDITS - done_before
    after = assert_consistent(db)
    assert sum(u.startswith("edit:") for u in after) == N_EDITS
    assert all(after[u] == t for u, t in before.items()), "a completed unit was recomputed"

    uninterrupted = subprocess.run(run_cmd(config, whole), capture_output=True, text=True, env=env, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
    assert comparable(killed) == comparable(whole)


# -- SIGKILL at many points ------------------------------------------------------------------------
# SQLite-style crash testing: the runner passes named checkpoints (locedit.experiment.killpoints) before,
# inside and after every unit's transaction and around statistics and analysis. An uninterrupted run logs
# them; a seeded, stratified schedule of KILL_POINTS of them (one per stretch of the run's life, so the
# kills are spread over all of it) is then hit one after another, resuming after each kill. Each kill costs
# a process start; LOCEDIT_KILL_POINTS and LOCEDIT_KILL_SEED give a denser or another schedule locally.

KILL_POINTS = int(os.environ.get("LOCEDIT_KILL_POINTS", "14"))
KILL_SEED = int(os.environ.get("LOCEDIT_KILL_SEED", "13"))
TIMING_COLUMNS = ("edit_seconds", "eval_seconds")


def write_sweep_config(folder: Path) -> Path:
    """Tracing (with zeroing), all four methods, two problems, one layer, and the analysis."""
    facts = folder / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS[:2]]))
    fast = {"rome": {"v_num_grad_steps": 3}, "memit": {"v_num_grad_steps": 3}, "ft-1": {"num_steps": 3},
            "ft-5": {"num_steps": 3}}
    cfg = parse_config({
        "name": "killpoints", "model": {"name": "tiny:llama"},
        "data": {"source": str(facts), "correctness_filter": False},
        "localize": {"windows": [3], "samples": 3, "zeroing": True},
        "edit": {"methods": list(fast), "problems": ["error-injection", "tracing-reversal"], "layers": [3],
                 "essence": False, "hparams": fast},
        "stats": {"n_tokens": 2000},
        "analysis": {"analyze": True, "report": False},
    })
    path = folder / "killpoints.toml"
    path.write_text(dump_toml(cfg))
    return path


def kill_schedule(names: list[str], n: int, seed: int) -> list[str]:
    """One checkpoint drawn from each of ``n`` equal stretches of the run, plus one kill inside the analysis."""
    import random

    rng = random.Random(seed)
    life = [name for name in names if not name.startswith(("analysis:", "run:done"))]
    bounds = [round(i * len(life) / (n - 1)) for i in range(n)]
    points = [life[rng.randrange(lo, hi)] for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
    return points + ["analysis:start+0.3"]


def exact_tables(run_dir: Path) -> dict:
    """Every result table sorted by its key, timing columns dropped, values exact (no rounding)."""
    out = {}
    for table, df in read_frames(run_dir).items():
        df = df.drop(columns=[c for c in TIMING_COLUMNS if c in df.columns])
        out[table] = df.sort_values(list(UNIQUE_KEYS[table])).reset_index(drop=True)
    return out


def assert_tables_equal(a: dict, b: dict, atol: float) -> None:
    """Same rows in every table; numbers equal to ``atol`` (batched forwards of other shapes round differently)."""
    import pandas as pd

    assert a.keys() == b.keys()
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=False, atol=atol, rtol=0, obj=table)


def test_sigkill_at_many_checkpoints_loses_and_duplicates_nothing(tmp_path):
    config = write_sweep_config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "checkpoints.log"
    whole = subprocess.run(run_cmd(config, tmp_path / "whole"), capture_output=True, text=True, timeout=600,
                           env={**env, "LOCEDIT_CHECKPOINT_LOG": str(log)})
    assert whole.returncode == 0, whole.stderr[-2000:]
    names = log.read_text().split()
    assert len(names) == len(set(names)), "checkpoint names must be unique within a run"
    assert any(n.endswith(":rows-inserted") for n in names) and "analysis:start" in names

    schedule = kill_schedule(names, KILL_POINTS, KILL_SEED)
    assert len(schedule) >= KILL_POINTS - 2
    assert any(p.endswith((":rows-inserted", ":before-commit")) for p in schedule), "no kill inside a transaction"
    killed = tmp_path / "killed"
    db = killed / "results.sqlite"
    done: set[str] = set()
    for i, point in enumerate(schedule):
        proc = subprocess.run(run_cmd(config, killed), capture_output=True, text=True, timeout=600,
                              env={**env, "LOCEDIT_KILL_AT": point})
        context = f"kill {i} at {point} (seed {KILL_SEED}, schedule {schedule})"
        assert proc.returncode == -signal.SIGKILL, f"{context}: the run was not killed\n{proc.stderr[-2000:]}"
        if db.exists():
            units = set(assert_consistent(db))
            assert done <= units, f"{context}: a completed unit was lost"
            done = units

    final = subprocess.run(run_cmd(config, killed), capture_output=True, text=True, timeout=600, env=env)
    assert final.returncode == 0, final.stderr[-2000:]
    assert json.loads(final.stdout)["failed"] == 0
    assert set(assert_consistent(db)) == set(assert_consistent(tmp_path / "whole" / "results.sqlite"))
    # a resumed edit group holds fewer facts than the uninterrupted one: batched forwards round differently
    assert_tables_equal(exact_tables(killed), exact_tables(tmp_path / "whole"), atol=1e-6)
