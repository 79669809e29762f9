"""Column names of the result tables every stage agrees on (store, analysis, exports).

Each layer below declares the rows it hands out (:data:`locedit.localize.result.ROW_COLUMNS` for tracing and
zeroing, :data:`locedit.study.edit_row.EDIT_COLUMNS` for edits); this module assembles them with the
experiment's own tables into the schema of the results database. The SQLite store holds one table per entry;
:func:`locedit.experiment.store.read_frames` returns them as pandas DataFrames with exactly these columns.
"""

from __future__ import annotations

from locedit.localize.result import ROW_COLUMNS
from locedit.study.edit_row import EDIT_COLUMNS

TABLES: dict[str, tuple[str, ...]] = {
    # one row per selected fact
    "facts": ("case_id", "subject", "prompt", "target_true", "target_new", "is_correct", "p_true",
              "passes_erasure_filter"),
    **ROW_COLUMNS,
    "edits": EDIT_COLUMNS,
    # units that raised: recorded, counted, and retried on resume
    "failures": ("unit", "case_id", "stage", "error"),
}
