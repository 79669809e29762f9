"""Record validation for every dataset loader: strict errors that name file, record and field, or counted skips.

A loader converts each raw record inside :func:`checked`; a :class:`RecordProblem` raised there either
becomes a :class:`DataError` (strict) or a counted skip in the :class:`LoadReport` (lenient).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from locedit.data.fact import Fact

MAX_EXAMPLES = 5


class DataError(ValueError):
    """A dataset file or record is unusable; the message names the file, the record and the field."""


class RecordProblem(ValueError):
    """One record is bad: ``field`` names the offending field, ``reason`` is the counted skip reason."""

    def __init__(self, field: str, reason: str, detail: str = "") -> None:
        self.field, self.reason, self.detail = field, reason, detail
        super().__init__(f"field {field!r}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass
class LoadReport:
    """What a load read and what it skipped (counts per reason, plus the first few messages)."""

    format: str
    paths: list[str]
    n_records: int = 0
    n_loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, message: str, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)

    def merge(self, other: "LoadReport") -> None:
        self.paths += other.paths
        self.n_records += other.n_records
        self.n_loaded += other.n_loaded
        self.skipped.update(other.skipped)
        self.examples = (self.examples + other.examples)[:MAX_EXAMPLES]

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "paths": self.paths, "n_records": self.n_records, "n_loaded": self.n_loaded,
                "n_skipped": self.n_skipped, "skipped": dict(self.skipped), "examples": self.examples}


def read_json(path: Path) -> Any:
    """Parsed JSON of ``path``; a missing or malformed file is a one-line :class:`DataError`."""
    if not path.exists():
        raise DataError(f"{path}: no such file; pass an existing dataset file or folder (see `locedit data inspect`)")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason}); pass a JSON dataset file") from None


def read_records(path: Path) -> list[Any]:
    """The top-level JSON list of ``path`` (every supported format is a list of records)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, found a {type(data).__name__}")
    return data


def need(record: Any, key: str, kind: type | tuple[type, ...] = str) -> Any:
    """``record[key]`` (a dotted key descends into nested objects), type-checked; else a :class:`RecordProblem`."""
    value = record
    for part in key.split("."):
        if not isinstance(value, dict):
            raise RecordProblem(key, "not an object", f"found {type(value).__name__}")
        if part not in value:
            raise RecordProblem(key, "missing field")
        value = value[part]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise RecordProblem(key, "wrong type", f"found {type(value).__name__}")
    return value


def need_strings(record: Any, key: str, default: Sequence[str] | None = None) -> tuple[str, ...]:
    """A list of strings under ``key`` (``default`` when absent and a default is given)."""
    if default is not None and isinstance(record, dict) and key not in record:
        return tuple(default)
    values = need(record, key, list)
    if not all(isinstance(v, str) for v in values):
        raise RecordProblem(key, "wrong type", "expected a list of strings")
    return tuple(values)


def check_fact(fact: Fact) -> Fact:
    """The checks every loaded fact passes: subject in prompt, non-empty targets and subject."""
    if not fact.subject.strip():
        raise RecordProblem("subject", "empty subject")
    if fact.subject not in fact.prompt:
        raise RecordProblem("subject", "subject not in prompt", f"{fact.subject!r} not in {fact.prompt!r}")
    if not fact.target_true.strip():
        raise RecordProblem("target_true", "empty target")
    if fact.target_new is not None and not fact.target_new.strip():
        raise RecordProblem("target_new", "empty target")
    if fact.neighborhood_target is not None and not fact.neighborhood_target.strip():
        raise RecordProblem("neighborhood_target", "empty target")
    return fact


def checked(
    path: Path, records: Sequence[Any], convert: Callable[[int, Any], Fact], report: LoadReport, strict: bool
) -> Iterator[Fact]:
    """Convert and check each record; strict raises :class:`DataError`, lenient counts the skip."""
    for i, record in enumerate(records):
        report.n_records += 1
        try:
            if not isinstance(record, dict):
                raise RecordProblem("<record>", "not an object", f"found {type(record).__name__}")
            fact = check_fact(convert(i, record))
        except RecordProblem as problem:
            message = f"{path}: record {i}: {problem}"
            if strict:
                raise DataError(message + "; fix the record or load with --lenient to skip bad records") from None
            report.skip(message, problem.reason)
            continue
        report.n_loaded += 1
        yield fact


def drop_duplicate_ids(facts: list[Fact], report: LoadReport, strict: bool) -> list[Fact]:
    """Keep the first fact of each case_id; a repeated case_id is a strict error or a counted skip."""
    seen: set[int] = set()
    kept = []
    for fact in facts:
        if fact.case_id in seen:
            message = f"{fact.source}: duplicate case_id {fact.case_id}"
            if strict:
                raise DataError(message + "; each case_id must occur once across the loaded files")
            report.skip(message, "duplicate case_id")
            report.n_loaded -= 1
            continue
        seen.add(fact.case_id)
        kept.append(fact)
    return kept
