"""A run directory is safe: one writer at a time, clear errors when it cannot be written, repeatable results.

Real `locedit run` processes on a tiny model: a second run on the same directory is refused at once, a
killed holder leaves no stuck lock, a full disk (a file size limit) and a read-only directory stop the
run with one line while the database stays valid and complete up to the last finished unit, and two
runs of the same config give bit-identical result tables.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from locedit.data.fact import Fact
from locedit.experiment.config import dump_toml, parse_config
from locedit.experiment.runner import run_experiment
from locedit.experiment.store import UNIQUE_KEYS, read_frames

FACTS = [
    Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English"),
    Fact(1, "Toko Yasuda", "Toko Yasuda plays the instrument", "guitar", "piano"),
]
N_EDITS = len(FACTS) * 2 * 2  # rome and ft-1 at two layers
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def config_dict(facts: Path, methods=("rome", "ft-1")) -> dict:
    fast = {"rome": {"v_num_grad_steps": 3}, "memit": {"v_num_grad_steps": 3}, "ft-1": {"num_steps": 3},
            "ft-5": {"num_steps": 3}}
    return {
        "name": "safety", "model": {"name": "tiny:llama"},
        "data": {"source": str(facts), "correctness_filter": False},
        "localize": {"windows": [3], "samples": 3},
        "edit": {"methods": list(methods), "problems": ["error-injection"], "layers": [1, 4], "essence": False,
                 "hparams": {m: fast[m] for m in methods}},
        "stats": {"n_tokens": 2000},
        "analysis": {"analyze": False, "report": False},
    }


@pytest.fixture
def config(tmp_path) -> Path:
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS]))
    path = tmp_path / "safety.toml"
    path.write_text(dump_toml(parse_config(config_dict(facts))))
    return path


def run_cmd(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "locedit.cli.main", "run", str(config), "--out", str(out), "--no-progress", "--json",
            "--threads", "1"]


def finished_units(db: Path) -> set[str]:
    """The completed units, after checking the database's integrity and that each has exactly its rows."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for table, key in UNIQUE_KEYS.items():
            cols = ", ".join(key)
            assert conn.execute(f"SELECT COUNT(*) FROM (SELECT {cols} FROM {table} GROUP BY {cols} "
                                "HAVING COUNT(*) > 1)").fetchone()[0] == 0, f"duplicates in {table}"
        units = {u for (u,) in conn.execute("SELECT unit FROM units")}
        edits = {f"edit:{c}:{m}:{p}:{l}" for c, m, p, l in
                 conn.execute("SELECT case_id, method, problem, layer FROM edits")}
        assert edits == {u for u in units if u.startswith("edit:")}
    return units


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def partial_run(config: Path, out: Path) -> set[str]:
    """A run SIGKILLed right after its first edit committed (statistics and tracing done)."""
    proc = subprocess.run(run_cmd(config, out), capture_output=True, text=True, timeout=600,
                          env={**ENV, "LOCEDIT_KILL_AT": "edit:0:rome:error-injection:1:committed"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return finished_units(out / "results.sqlite")


def test_second_run_is_refused_at_once_and_a_killed_holder_leaves_no_stuck_lock(config, tmp_path):
    out, log_a, log_b = tmp_path / "run", tmp_path / "a.log", tmp_path / "b.log"
    holder = subprocess.Popen(run_cmd(config, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**ENV, "LOCEDIT_CHECKPOINT_LOG": str(log_a)})
    try:
        deadline = time.time() + 300
        while not (log_a.exists() and "run:locked" in log_a.read_text().split()):
            assert holder.poll() is None and time.time() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        os.kill(holder.pid, signal.SIGSTOP)  # frozen while holding the lock
        second = subprocess.run(run_cmd(config, out), capture_output=True, text=True, timeout=120,
                                env={**ENV, "LOCEDIT_CHECKPOINT_LOG": str(log_b)})
        assert second.returncode == 2
        line = one_error_line(second.stderr)
        assert "in use by another locedit run" in line and f"pid {holder.pid}" in line and "--out" in line
        passed = log_b.read_text().split()
        assert "run:checked" in passed and "run:locked" not in passed, "the refused run went on to load the model"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    third = subprocess.run(run_cmd(config, out), capture_output=True, text=True, timeout=600, env=ENV)
    assert third.returncode == 0, third.stderr[-2000:]
    assert json.loads(third.stdout)["failed"] == 0
    assert sum(u.startswith("edit:") for u in finished_units(out / "results.sqlite")) == N_EDITS


def test_full_disk_stops_with_one_line_and_keeps_every_finished_unit(config, tmp_path):
    out = tmp_path / "run"
    before = partial_run(config, out)
    db = out / "results.sqlite"
    with sqlite3.connect(db) as conn:  # fold the WAL into the database, so only new writes grow a file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    limit = db.stat().st_size + 16 * 1024

    def full_disk() -> None:  # writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(run_cmd(config, out), capture_output=True, text=True, timeout=600, env=ENV,
                          preexec_fn=full_disk)
    assert full.returncode == 2, full.stderr[-2000:]
    line = one_error_line(full.stderr)
    assert "cannot write the results database" in line and "free disk space" in line and "resume" in line
    after = finished_units(db)
    assert before <= after and sum(u.startswith("edit:") for u in after) < N_EDITS

    resumed = subprocess.run(run_cmd(config, out), capture_output=True, text=True, timeout=600, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sum(u.startswith("edit:") for u in finished_units(db)) == N_EDITS


def _read_only(cmd: list[str], run_dir: Path) -> list[str]:
    """``cmd`` in a private mount namespace where ``run_dir`` is a read-only bind mount (root ignores chmod)."""
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(run_dir), *cmd]


def test_read_only_run_dir_is_refused_before_work_and_left_intact(config, tmp_path):
    out = tmp_path / "run"
    before = partial_run(config, out)
    modes = {p: p.stat().st_mode for p in [out, *out.iterdir()]}
    try:
        if os.geteuid() == 0:
            cmd = _read_only(run_cmd(config, out), out)
        else:
            cmd = run_cmd(config, out)
            for p in modes:
                p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
        assert proc.returncode == 2, proc.stderr[-2000:]
        line = one_error_line(proc.stderr)
        assert "--out" in line and "cannot write to" in line and "choose another folder" in line, line
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))
    assert finished_units(out / "results.sqlite") == before


def test_same_config_twice_gives_bit_identical_tables(tmp_path, one_thread):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS]))
    cfg = parse_config(config_dict(facts, methods=("rome", "memit", "ft-1", "ft-5")))
    tables = []
    for name in ("first", "second"):
        run_experiment(cfg, tmp_path / name, progress=False)
        tables.append(read_frames(tmp_path / name))
    import pandas as pd

    for table in tables[0]:
        a, b = (t[table].drop(columns=[c for c in ("edit_seconds", "eval_seconds") if c in t[table]]) for t in tables)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)
    assert len(tables[0]["edits"]) == len(FACTS) * 4 * 2 and len(tables[0]["trace_cells"]) > 0
