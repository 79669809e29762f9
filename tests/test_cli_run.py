"""`locedit run`, `locedit demo` and `locedit export` through the real CLI app."""

from __future__ import annotations

import json
import re
import sqlite3
import tomllib
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from locedit.cli.main import app
from locedit.data.fact import Fact
from locedit.experiment.config import dump_toml, parse_config
from locedit.experiment.demo import demo_config, demo_config_text
from locedit.experiment.manifest import git_commit
from locedit.experiment.schema import TABLES
from locedit.experiment.store import read_frames
from locedit.experiment.work import edit_unit_name

runner = CliRunner()

try:  # tracing is built in parallel; until it lands, the trace units write only the facts rows
    from locedit.localize.causal_trace import trace as _trace  # noqa: F401

    TRACE_AVAILABLE = True
except ImportError:
    TRACE_AVAILABLE = False


pytestmark = pytest.mark.usefixtures("one_thread")
FACTS = [
    Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English"),
    Fact(1, "Toko Yasuda", "Toko Yasuda plays the instrument", "guitar", "piano"),
]


def _config(tmp_path: Path, **edit) -> Path:
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS]))
    cfg = parse_config({
        "name": "cli", "model": {"name": "tiny:gpt2"},
        "data": {"source": str(facts), "correctness_filter": False},
        "localize": {"windows": [3], "samples": 2, "enabled": TRACE_AVAILABLE},
        "edit": {"methods": ["ft-1"], "problems": ["error-injection", "fact-amplification"], "layers": [1, 4],
                 "essence": False, "hparams": {"ft-1": {"num_steps": 10}}, **edit},
        "analysis": {"analyze": True, "report": True},
    })
    path = tmp_path / f"cli-{cfg.short_hash()}.toml"
    path.write_text(dump_toml(cfg))
    return path


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("edit, match", [
    ({"methods": ["romeo"]}, "unknown editing method"),
    ({"problems": ["fact-forging"]}, "unknown editing problem"),
    ({"layers": [1, 9]}, "out of range"),
])
def test_bad_config_fails_in_one_line_before_work(tmp_path, edit, match):
    path = _config(tmp_path)  # a valid config, then the bad entry written into the file
    for key, value in edit.items():
        path.write_text(re.sub(rf"^{key} = .*$", f"{key} = {json.dumps(value)}", path.read_text(), flags=re.M))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert match in _one_line_error(result)
    assert not (tmp_path / "run").exists()


def test_missing_dataset_and_config_are_one_line_errors(tmp_path):
    cfg = parse_config({"model": {"name": "tiny:llama"}, "data": {"source": str(tmp_path / "nope.json")}})
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert "does not exist" in _one_line_error(runner.invoke(app, ["run", str(path)]))
    assert "does not exist" in _one_line_error(runner.invoke(app, ["run", str(tmp_path / "missing.toml")]))


def test_run_resume_export_and_foreign_config(tmp_path):
    config, out = _config(tmp_path), tmp_path / "run"
    first = runner.invoke(app, ["run", str(config), "--out", str(out), "--json", "--no-progress"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["editing"]["done"] == 2 * 2 * 2 and summary["failed"] == 0
    assert summary["tracing"]["done"] == 2
    if summary["analysis_error"] is None:
        assert Path(summary["report"]).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config_hash"] == parse_config(manifest["config"]).hash()
    assert manifest["versions"]["torch"] and manifest["seeds"] == {"tracing": 1, "editing": 0}

    again = runner.invoke(app, ["run", str(config), "--out", str(out), "--json", "--no-progress"])
    resumed = json.loads(again.stdout)
    assert resumed["editing"]["done"] == 0 and resumed["editing"]["skipped"] == 8
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    assert len(sessions) == 2  # each session records the code it ran (a resumed run may run newer code)
    assert all(s["git_commit"] == manifest["git_commit"] == git_commit() for s in sessions)
    assert all(s["workers"] == 1 for s in sessions)

    other = _config(tmp_path, layers=[2])
    assert "not of this config" in _one_line_error(runner.invoke(app, ["run", str(other), "--out", str(out)]))

    exported = runner.invoke(app, ["export", str(out), "--format", "csv", "--out", str(tmp_path / "csv"), "--json"])
    assert exported.exit_code == 0, exported.output
    assert len(json.loads(exported.stdout)["files"]) == len(TABLES)
    edits = pd.read_csv(tmp_path / "csv" / "edits.csv")
    assert len(edits) == 8 and list(edits.columns) == list(TABLES["edits"])
    assert "csv, parquet" in _one_line_error(runner.invoke(app, ["export", str(out), "--format", "xlsx"]))


def test_a_run_exported_as_sql_continues_after_import(tmp_path):
    """The carry path across machines: export --format sql, import on a fresh folder, and `run` resumes there."""
    config, out = _config(tmp_path), tmp_path / "run"
    assert runner.invoke(app, ["run", str(config), "--out", str(out), "--no-progress"]).exit_code == 0
    dumped = runner.invoke(app, ["export", str(out), "--format", "sql", "--out", str(tmp_path / "dump"), "--json"])
    assert dumped.exit_code == 0, dumped.output
    names = sorted(Path(p).name for p in json.loads(dumped.stdout)["files"])
    assert names == sorted(["manifest.json", "schema.sql", *(f"{t}.sql" for t in [*TABLES, "units"])])

    moved = tmp_path / "elsewhere"
    imported = runner.invoke(app, ["import", str(tmp_path / "dump"), "--out", str(moved)])
    assert imported.exit_code == 0, imported.output
    original, copy = read_frames(out), read_frames(moved)
    for table in TABLES:
        pd.testing.assert_frame_equal(original[table], copy[table])
    assert json.loads((moved / "manifest.json").read_text()) == json.loads((out / "manifest.json").read_text())

    unit = edit_unit_name(FACTS[1].case_id, "ft-1", "fact-amplification", 4)  # as if it had not finished yet
    with closing(sqlite3.connect(moved / "results.sqlite")) as conn, conn:
        conn.execute("DELETE FROM units WHERE unit = ?", (unit,))
        conn.execute("DELETE FROM edits WHERE case_id = ? AND problem = 'fact-amplification' AND layer = 4",
                     (FACTS[1].case_id,))
    resumed = runner.invoke(app, ["run", str(config), "--out", str(moved), "--json", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["editing"]["done"] == 1
    key = ["case_id", "method", "problem", "layer"]
    again = read_frames(moved)["edits"].sort_values(key, ignore_index=True)
    before = original["edits"].sort_values(key, ignore_index=True)
    scores = [c for c in before.columns if c.endswith("_score")]
    assert scores and np.allclose(again[scores].astype(float), before[scores].astype(float), atol=1e-5, equal_nan=True)

    for command in (["status"], ["run", str(config), "--out"]):
        assert "is a SQL export of a run" in _one_line_error(runner.invoke(app, [*command, str(tmp_path / "dump")]))
    assert "already holds a run" in _one_line_error(runner.invoke(app, ["import", str(tmp_path / "dump"),
                                                                         "--out", str(moved)]))
    assert "no schema.sql" in _one_line_error(runner.invoke(app, ["import", str(out), "--out", str(tmp_path / "x")]))
    assert not (tmp_path / "x" / "results.sqlite").exists()


def test_demo_data_is_a_flag_not_the_environment(monkeypatch, tmp_path):
    plain, cf = demo_config(), demo_config("counterfact")
    assert plain.data.source == "demo"
    assert cf.data.source == "counterfact" and cf.data.known_only and cf.data.limit == plain.data.limit
    assert cf.edit == plain.edit and cf.hash() != plain.hash()
    monkeypatch.setenv("LOCEDIT_DATA_DIR", str(tmp_path))  # set, as on a machine with the shared data
    printed = runner.invoke(app, ["demo", "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == demo_config_text() and parse_config(tomllib.loads(printed.stdout)).hash() == plain.hash()
    printed_cf = runner.invoke(app, ["demo", "--data", "counterfact", "--print-config"])
    assert parse_config(tomllib.loads(printed_cf.stdout)).hash() == cf.hash()
    assert "unknown demo data 'wiki'; use one of demo, counterfact" in _one_line_error(
        runner.invoke(app, ["demo", "--data", "wiki"]))


def test_demo_prints_its_data_first(monkeypatch, tmp_path):
    """No shared data under LOCEDIT_DATA_DIR: the CounterFact demo says which data it wanted, then fails in one line."""
    monkeypatch.setenv("LOCEDIT_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["demo", "--data", "counterfact", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    first, error = [line for line in result.stderr.splitlines() if line.strip()]
    assert first.startswith("data: counterfact (the first known CounterFact facts")
    assert "counterfact_mend_edit.json does not exist" in error and not (tmp_path / "run").exists()
