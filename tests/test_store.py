"""The SQLite store: atomic units, duplicate refusal, failures, read_frames and exports."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from locedit.experiment.schema import TABLES
from locedit.experiment.store import Store, StoreError, export, read_frames


def _edit_row(case_id: int, layer: int, score: float) -> dict:
    return {"case_id": case_id, "method": "rome", "problem": "error_injection", "layer": layer,
            "layers": [layer], "rewrite_score": np.float64(score), "edit_seconds": 0.5}


def test_unit_rows_and_marker_are_written_together(tmp_path):
    with Store(tmp_path) as store:
        store.write_unit("edit:0:rome:error_injection:3", "edit", 0, {"edits": [_edit_row(0, 3, 0.25)]}, 1.0)
        assert store.completed_units() == {"edit:0:rome:error_injection:3"}
    frames = read_frames(tmp_path)
    assert set(frames) == set(TABLES)
    for table, cols in TABLES.items():
        assert tuple(frames[table].columns) == cols
    edits = frames["edits"]
    assert len(edits) == 1
    assert edits.loc[0, "rewrite_score"] == pytest.approx(0.25)
    assert edits.loc[0, "layers"] == "[3]"
    assert pd.isna(edits.loc[0, "essence_score"])


def test_a_failing_unit_leaves_no_rows(tmp_path):
    with Store(tmp_path) as store:
        rows = {"edits": [_edit_row(0, 3, 0.1)], "trace_points": [{"case_id": 0, "bogus": 1}]}
        with pytest.raises(StoreError, match="bogus"):
            store.write_unit("u", "edit", 0, rows, 1.0)
        assert store.count("edits") == 0
        assert store.completed_units() == set()


def test_duplicates_are_refused_and_rolled_back(tmp_path):
    with Store(tmp_path) as store:
        store.write_unit("a", "edit", 0, {"edits": [_edit_row(0, 3, 0.1)]}, 1.0)
        with pytest.raises(sqlite3.IntegrityError):
            store.write_unit("b", "edit", 0, {"edits": [_edit_row(0, 4, 0.2), _edit_row(0, 3, 0.3)]}, 1.0)
        with pytest.raises(sqlite3.IntegrityError):  # same unit twice
            store.write_unit("a", "edit", 0, {"edits": [_edit_row(0, 5, 0.2)]}, 1.0)
        assert store.count("edits") == 1
        assert store.completed_units() == {"a"}


def test_failures_are_recorded_replaced_and_cleared_on_success(tmp_path):
    with Store(tmp_path) as store:
        store.record_failure("u", 7, "edit", "first error")
        store.record_failure("u", 7, "edit", "second error")
        assert store.rows("failures") == [{"unit": "u", "case_id": 7, "stage": "edit", "error": "second error"}]
        assert store.failed_units() == {"u"}
        store.write_unit("u", "edit", 7, {"edits": [_edit_row(7, 1, 0.5)]}, 1.0)
        assert store.failed_units() == set()


def test_store_survives_reopening(tmp_path):
    with Store(tmp_path) as store:
        store.write_unit("a", "trace", 0, {"facts": [{"case_id": 0, "subject": "S", "is_correct": True}]}, 1.0)
    with Store(tmp_path) as store:
        assert store.completed_units() == {"a"}
        assert store.rows("facts")[0]["is_correct"] == 1


def test_read_frames_names_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="locedit run"):
        read_frames(tmp_path / "nope")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips(tmp_path, fmt):
    pytest.importorskip("pyarrow") if fmt == "parquet" else None
    with Store(tmp_path) as store:
        store.write_unit("a", "edit", 0, {"edits": [_edit_row(0, 3, 0.25), _edit_row(0, 4, 0.75)]}, 1.0)
    files = export(tmp_path, fmt, tmp_path / "out")
    assert {f.name for f in files} == {f"{t}.{fmt}" for t in TABLES}
    back = pd.read_csv(tmp_path / "out" / "edits.csv") if fmt == "csv" else pd.read_parquet(tmp_path / "out" / "edits.parquet")
    assert list(back.columns) == list(TABLES["edits"])
    assert back["rewrite_score"].tolist() == [0.25, 0.75]


def test_export_rejects_unknown_format(tmp_path):
    Store(tmp_path).close()
    with pytest.raises(ValueError, match="csv, parquet"):
        export(tmp_path, "xlsx")
