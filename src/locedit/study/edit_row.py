"""One measured edit: the "edits" table's row plus whether the weights came back.

The identity and timing columns are fields; the metric columns (``rewrite_score``, ``essence_ppl_pre``,
...) are in ``scores`` and also read as attributes, so a new metric adds a column without touching this
class. :meth:`EditRow.as_row` gives exactly the table's columns, in the table's order.

>>> row = EditRow(case_id=3, method="ft-1", problem="error-injection", layer=2, layers=(2,), target_new="English",
...               request_baseline="French", scores={"rewrite_score": 0.75}, edit_seconds=0.1, eval_seconds=0.2,
...               weights_restored=True)
>>> row.rewrite_score, row.scores["rewrite_score"], row.as_row()["layers"]
(0.75, 0.75, [2])
>>> list(row.as_row()) == list(EDIT_COLUMNS)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# one row per (fact, method, problem, central layer) edit (docs/algorithms.md#edit-order, #metrics); the
# results schema (locedit.experiment.schema) stores it as the "edits" table
EDIT_COLUMNS: tuple[str, ...] = (
    "case_id", "method", "problem", "layer", "layers", "target_new", "request_baseline",
    "rewrite_pre", "rewrite_post", "paraphrase_pre", "paraphrase_post", "neighborhood_pre",
    "neighborhood_post", "rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score",
    "overall_score", "overall_essence_score", "essence_ppl_pre", "essence_ppl_post",
    "rome_rewrite_success", "rome_rewrite_magnitude", "rome_paraphrase_success",
    "rome_paraphrase_magnitude", "rome_neighborhood_success", "rome_neighborhood_magnitude",
    "edit_seconds", "eval_seconds")


@dataclass(frozen=True)
class EditRow:
    """What :func:`~locedit.study.session.edit_and_evaluate` measured for one (fact, method, problem, layer)."""

    case_id: int
    method: str
    problem: str
    layer: int
    layers: tuple[int, ...]
    target_new: str | None
    request_baseline: str | None
    scores: Mapping[str, float | None] = field(default_factory=dict)
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    weights_restored: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        unknown = set(self.scores) - set(EDIT_COLUMNS)
        if unknown:
            raise ValueError(f"scores {sorted(unknown)} are not columns of the edits table")

    def __getattr__(self, name: str) -> float | None:
        """A metric column read as an attribute (``row.rewrite_score``); None when it was not computed."""
        if name in EDIT_COLUMNS:
            return self.__dict__.get("scores", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def as_row(self) -> dict[str, Any]:
        """The "edits" table row: every column in the table's order (``layers`` as a list)."""
        values = {**self.scores, "case_id": self.case_id, "method": self.method, "problem": self.problem,
                  "layer": self.layer, "layers": list(self.layers), "target_new": self.target_new,
                  "request_baseline": self.request_baseline, "edit_seconds": self.edit_seconds,
                  "eval_seconds": self.eval_seconds}
        return {c: values.get(c) for c in EDIT_COLUMNS}

    def as_dict(self) -> dict[str, Any]:
        """:meth:`as_row` plus ``weights_restored`` (e.g. for JSON output)."""
        return {**self.as_row(), "weights_restored": self.weights_restored}
