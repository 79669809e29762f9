"""`locedit status RUN_DIR` on a real tiny sweep: stopped during tracing, stopped during editing, and finished."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from locedit.cli.main import app
from locedit.data.fact import Fact
from locedit.experiment.config import dump_toml, parse_config
from locedit.experiment.manifest import new_manifest, read_manifest, write_manifest
from locedit.experiment.progress import RunStatus, latest_session_rate, run_status
from locedit.experiment.store import Store
from test_cli_run import _one_line_error

runner = CliRunner()

FACTS = [
    Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English"),
    Fact(1, "Toko Yasuda", "Toko Yasuda plays the instrument", "guitar", "piano"),
    Fact(2, "Autonomous University of Madrid", "Autonomous University of Madrid, which is located in", "Spain",
         "Sweden"),
]
LAYERS = [1, 3]
# Fact Erasure needs p(o_true) above the threshold, which no fact reaches on random weights: its edits are planned
# for no traced fact, while the edits of an untraced fact count as "not yet planned" for both problems.
PROBLEMS = ["error-injection", "fact-erasure"]


def _config_dict(facts: Path, methods: list[str]) -> dict:
    return {"name": "status", "model": {"name": "tiny:llama"},
            "data": {"source": str(facts), "correctness_filter": False},
            "localize": {"enabled": False},
            "edit": {"methods": methods, "problems": PROBLEMS, "layers": LAYERS, "essence": False,
                     "hparams": {"ft-1": {"num_steps": 3}}},
            "analysis": {"analyze": False, "report": False}}


def _run(config: Path, out: Path, kill_at: str | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if kill_at:
        env["LOCEDIT_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "locedit.cli.main", "run", str(config), "--out", str(out), "--no-progress", "--json",
           "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == (-9 if kill_at else 0), proc.stderr[-2000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The same run directory copied at three moments: ``tracing`` (killed after 2 of 3 trace units),
    ``editing`` (killed after 5 of 6 planned edits) and ``finished``."""
    root = tmp_path_factory.mktemp("status")
    facts = root / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS]))
    config = root / "status.toml"
    config.write_text(dump_toml(parse_config(_config_dict(facts, ["ft-1"]))))
    run, out = root / "run", {}
    for stage, kill_at in (("tracing", "trace:1:committed"), ("editing", "edit:1:ft-1:error-injection:3:committed"),
                           ("finished", None)):
        _run(config, run, kill_at)
        out[stage] = shutil.copytree(run, root / stage)
    out["facts"] = facts
    return out


def _db_units(run_dir: Path) -> dict[str, float]:
    with sqlite3.connect(f"file:{run_dir / 'results.sqlite'}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT unit, seconds FROM units").fetchall())


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- counts ----------------------------------------------------------------------------------------

def test_a_run_stopped_during_tracing_plans_the_traced_facts_and_bounds_the_rest(runs):
    st, units = run_status(runs["tracing"]), _db_units(runs["tracing"])
    finished = _db_units(runs["finished"])
    traced = {int(u.split(":")[1]) for u in units if u.startswith("trace:")}
    assert (st.facts, st.tracing.done, st.tracing.pending, st.tracing.failed) == (3, len(traced), 1, 0) == (3, 2, 1, 0)
    assert st.edits.done == 0
    # planned edits: exactly the edits the finished run did for the traced facts
    assert st.edits.pending == sum(u.startswith("edit:") and int(u.split(":")[1]) in traced for u in finished)
    groups = {(g.method, g.problem): g.counts for g in st.editing}
    assert groups[("ft-1", "fact-erasure")].pending == 0
    # the untraced fact: every problem x layer, eligible or not (an upper bound)
    assert {k: c.unplanned for k, c in groups.items()} == {k: len(LAYERS) for k in groups}
    assert st.edits.pending + st.edits.unplanned >= sum(u.startswith("edit:") for u in finished)
    assert st.eta_seconds is None, "no edit has finished, so no estimate"
    assert st.tracing.seconds == pytest.approx(sum(s for u, s in units.items() if u.startswith("trace:")))


def test_a_run_stopped_during_editing_counts_from_the_database(runs):
    st, units = run_status(runs["editing"]), _db_units(runs["editing"])
    finished = _db_units(runs["finished"])
    edits = {u: s for u, s in units.items() if u.startswith("edit:")}
    assert (st.tracing.done, st.tracing.pending, st.edits.unplanned) == (3, 0, 0)
    assert st.edits.done == len(edits) == 5
    assert st.edits.done + st.edits.pending == sum(u.startswith("edit:") for u in finished)
    assert st.total.done == len(units)
    group = {(g.method, g.problem): g.counts for g in st.editing}[("ft-1", "error-injection")]
    assert group.seconds == pytest.approx(sum(edits.values()))
    assert st.sessions == 2 and st.latest is not None and st.latest.session == 2 and st.workers == 1
    assert st.eta_seconds == pytest.approx(group.pending * sum(edits.values()) / len(edits))


def test_a_finished_run_has_nothing_pending_and_is_read_without_a_write(runs):
    before = _files(runs["finished"])
    result = runner.invoke(app, ["status", str(runs["finished"])])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("complete")
    assert _files(runs["finished"]) == before, "status wrote to the run directory"
    st = run_status(runs["finished"])
    assert st.complete and st.eta_seconds == 0
    assert (st.total.pending, st.total.failed, st.total.unplanned) == (0, 0, 0)
    assert st.total.done == len(_db_units(runs["finished"]))
    assert st.latest is not None and st.latest.per_hour > 0


def test_json_round_trips(runs):
    result = runner.invoke(app, ["status", str(runs["editing"]), "--json"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    st = run_status(runs["editing"])
    assert parsed == json.loads(json.dumps(st.as_dict()))
    assert RunStatus.from_dict(parsed) == st
    assert parsed["total"]["pending"] == 1 and parsed["complete"] is False


def test_a_failed_unit_is_counted_as_failed_and_still_remaining(runs, tmp_path):
    run = shutil.copytree(runs["editing"], tmp_path / "run")
    pending = (set(_db_units(runs["finished"])) - set(_db_units(run))).pop()
    before = run_status(run)
    with Store(run) as store:
        store.record_failure(pending, int(pending.split(":")[1]), "edit", "RuntimeError: boom")
    st = run_status(run)
    assert (st.edits.failed, st.edits.pending) == (1, before.edits.pending - 1)
    assert st.total.remaining == before.total.remaining and st.eta_seconds == pytest.approx(before.eta_seconds)
    result = runner.invoke(app, ["status", str(run)])
    assert "1 unit(s) failed" in result.stderr


HOLD_LOCK = """
import sys, time
from locedit.experiment.store import Store, run_lock
with run_lock(sys.argv[1]), Store(sys.argv[1]) as store, store.transaction() as conn:
    conn.execute("INSERT INTO units VALUES (?, 'edit', 1, 'done', 1.0, ?)", (sys.argv[2], time.time()))
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_status_while_another_process_holds_the_lock_and_writes(runs, tmp_path):
    """The run lock held and a unit's transaction open in another process: status answers, without that unit."""
    run = shutil.copytree(runs["editing"], tmp_path / "run")
    pending = (set(_db_units(runs["finished"])) - set(_db_units(run))).pop()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run), pending], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = runner.invoke(app, ["status", str(run), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["edits"]["done"] == 5, "an uncommitted unit was counted"
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert run_status(run).edits.done == 6, "the writer's unit commits once status has read"


def test_status_loads_no_model(runs):
    """No weights exist in the process after a status (transformers' parameterless activation modules do)."""
    code = ("import gc, sys, torch; from locedit.experiment.progress import run_status; run_status(sys.argv[1]); "
            "print(sum(isinstance(o, torch.nn.Parameter) for o in gc.get_objects()))")
    proc = subprocess.run([sys.executable, "-c", code, str(runs["editing"])], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0"


# -- the session rate ------------------------------------------------------------------------------

def test_the_latest_session_rate_observes_parallel_workers():
    # session 1 at t=0: one unit; session 2 at t=100: two workers each finishing a 10 s unit at 110 and 120
    finished = [(5.0, 5.0), (10.0, 110.0), (10.0, 110.0), (10.0, 120.0), (10.0, 120.0)]
    rate = latest_session_rate([0.0, 100.0], finished)
    assert (rate.session, rate.units, rate.workers) == (2, 4, 2)
    assert rate.per_hour == pytest.approx(4 / (20 / 3600))
    assert latest_session_rate([0.0, 200.0], finished).session == 1, "a session without units yet shows the last one"
    assert latest_session_rate([0.0], []) is None


def test_grouped_units_count_as_one_worker_and_a_recorded_count_wins():
    # two workers from t=0, each editing groups of 8 facts that take 80 s and share it (10 s per unit, one finish)
    finished = [(10.0, t) for t in (80.0, 81.0, 160.0, 161.0) for _ in range(8)]
    assert latest_session_rate([0.0], finished).workers == 2
    assert latest_session_rate([0.0], finished, [3]).workers == 3, "the manifest's count is used where recorded"
    assert latest_session_rate([0.0], finished, [None]).workers == 2


# -- errors ----------------------------------------------------------------------------------------

def _manifest_of_another_config(run: Path, facts: Path) -> None:
    write_manifest(run, new_manifest(parse_config(_config_dict(facts, ["ft-5"])), device="cpu"))


def _not_a_database(run: Path, facts: Path) -> None:
    for path in run.glob("results.sqlite*"):  # the killed run's -wal holds pages too
        path.unlink()
    (run / "results.sqlite").write_bytes(b"not a database" * 100)


def _edited_hash(run: Path, facts: Path) -> None:
    manifest = read_manifest(run)
    write_manifest(run, {**manifest, "config_hash": "0" * 64})


@pytest.mark.parametrize("damage, expected", [
    (lambda run, facts: shutil.rmtree(run), "does not exist"),
    (lambda run, facts: (run / "manifest.json").unlink(), "no manifest.json"),
    (lambda run, facts: (run / "results.sqlite").unlink(), "no results.sqlite"),
    (lambda run, facts: (run / "manifest.json").write_text("{"), "not valid JSON"),
    (_not_a_database, "as a locedit results database"),
    (_manifest_of_another_config, "belongs to another config"),
    (_edited_hash, "edited or written by another locedit version"),
], ids=["missing", "no-manifest", "no-database", "bad-manifest", "not-a-database", "another-config", "edited-hash"])
def test_errors_are_one_line_with_exit_code_2(runs, tmp_path, damage, expected):
    run = shutil.copytree(runs["editing"], tmp_path / "run")
    damage(run, runs["facts"])
    assert expected in _one_line_error(runner.invoke(app, ["status", str(run)]))


def test_a_file_is_not_a_run_directory(runs):
    assert "not a folder" in _one_line_error(runner.invoke(app, ["status", str(runs["facts"])]))


def test_an_estimate_that_leans_on_unmeasured_kinds_says_it_is_a_guess():
    from locedit.cli.status_cmd import summary_line
    from locedit.experiment.progress import EditGroup, UnitCounts, estimate_seconds

    tracing = UnitCounts(done=2, seconds=20.0)
    editing = (EditGroup("ft-1", "error-injection", UnitCounts(done=4, pending=2, seconds=8.0)),
               EditGroup("rome", "error-injection", UnitCounts(pending=3)))
    eta = estimate_seconds(tracing, editing, workers=1)
    assert eta == pytest.approx((2 + 3) * 2.0)  # rome has no mean of its own: the mean over all edits
    st = RunStatus("run", "study", "0" * 64, 2, tracing, editing, 1, None, eta)
    assert st.unmeasured == 3
    assert summary_line(st).endswith("(3 of the units are of a method and problem not timed yet: a guess)")
