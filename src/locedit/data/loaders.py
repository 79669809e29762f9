"""Dataset loaders (docs/algorithms.md#data): CounterFact in MEND and ROME format, zsRE (MEND), ROME knowns, locedit
JSON.

Every loader returns ``list[Fact]``; :func:`load_facts` detects the format. Strict loads raise
:class:`DataError` at the first bad record; lenient loads skip it and count it in a :class:`LoadReport`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np

from locedit.data.fact import Fact
from locedit.data.validation import (
    DataError,
    LoadReport,
    RecordProblem,
    checked,
    drop_duplicate_ids,
    need,
    need_strings,
    read_records,
)
from locedit.paths import data_dir

PathLike = Union[str, Path]
COUNTERFACT_MEND_FILES = ("counterfact_mend_edit.json", "counterfact_mend_train.json", "counterfact_mend_val.json")
COUNTERFACT_ROME_FILE = "counterfact.json"
DEMO_FACTS = "demo_facts.json"


# ----------------------------------------------------------------------------------------------- converters
def _counterfact_mend(i: int, r: dict[str, Any]) -> Fact:
    """docs/algorithms.md#data: one rephrase and one locality prompt, whose true object is ``locality_ground_truth``."""
    return Fact(case_id=need(r, "case_id", int), subject=need(r, "subject"), prompt=need(r, "prompt"),
                target_true=need(r, "ground_truth"), target_new=need(r, "target_new"),
                paraphrase_prompts=(need(r, "rephrase_prompt"),), neighborhood_prompts=(need(r, "locality_prompt"),),
                neighborhood_target=need(r, "locality_ground_truth"), source="counterfact_mend")


def _counterfact_rome(i: int, r: dict[str, Any]) -> Fact:
    """ROME's counterfact.json: ``requested_rewrite`` holds a ``{}`` template and the two targets."""
    template, subject = need(r, "requested_rewrite.prompt"), need(r, "requested_rewrite.subject")
    if template.count("{}") != 1:
        raise RecordProblem("requested_rewrite.prompt", "template needs exactly one {}", repr(template))
    target_true = need(r, "requested_rewrite.target_true.str")
    relation = r["requested_rewrite"].get("relation_id")
    return Fact(case_id=need(r, "case_id", int), subject=subject, prompt=template.replace("{}", subject),
                target_true=target_true, target_new=need(r, "requested_rewrite.target_new.str"),
                paraphrase_prompts=need_strings(r, "paraphrase_prompts"),
                neighborhood_prompts=need_strings(r, "neighborhood_prompts"), neighborhood_target=target_true,
                attribute_prompts=need_strings(r, "attribute_prompts", default=()),
                relation_id=relation if isinstance(relation, str) else None, source="counterfact_rome")


def _known_1000(i: int, r: dict[str, Any]) -> Fact:
    """ROME knowns: the attribute is the true object; there is no false target."""
    case_id = need(r, "known_id", int) if "known_id" in r else i
    relation = r.get("relation_id")
    return Fact(case_id=case_id, subject=need(r, "subject"), prompt=need(r, "prompt"),
                target_true=need(r, "attribute"), relation_id=relation if isinstance(relation, str) else None,
                source="known_1000")


def _locedit(i: int, r: dict[str, Any]) -> Fact:
    """locedit's own format: a list of ``Fact.to_dict()`` objects."""
    for key in ("case_id", "subject", "prompt", "target_true"):
        need(r, key, int if key == "case_id" else str)
    for key in ("target_new", "neighborhood_target", "relation_id"):
        if r.get(key) is not None:
            need(r, key)
    for key in ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts"):
        need_strings(r, key, default=())
    return Fact.from_dict({**r, "source": r.get("source") or "locedit"})


def zsre_question(text: str) -> str:
    """``"Question: " + text + " Answer:"`` (docs/algorithms.md#zsre)."""
    return f"Question: {text} Answer:"


def _zsre_converter(records: Sequence[Any], seed: int) -> Callable[[int, dict[str, Any]], Fact]:
    """docs/algorithms.md#zsre mapping; o_false is one seeded draw per record from the other first answers."""
    firsts = sorted({r["answers"][0] for r in records if isinstance(r, dict) and isinstance(r.get("answers"), list)
                     and r["answers"] and isinstance(r["answers"][0], str)})

    def convert(i: int, r: dict[str, Any]) -> Fact:
        src, subject = need(r, "src"), need(r, "subject")
        if src.count(subject) != 1:
            raise RecordProblem("subject", "subject not exactly once in src", f"{subject!r} in {src!r}")
        answers = need_strings(r, "answers")
        if not answers:
            raise RecordProblem("answers", "empty target")
        o_true = answers[0]
        others = [a for a in firsts if a != o_true]
        if not others:
            raise RecordProblem("answers", "no other answer to draw o_false from")
        o_false = others[int(np.random.default_rng([seed, i]).integers(len(others)))]
        loc = (need(r, "loc") + "?").replace("nq question:", "Question:") + " Answer:"
        return Fact(case_id=i, subject=subject, prompt=zsre_question(src), target_true=o_true, target_new=o_false,
                    paraphrase_prompts=(zsre_question(need(r, "rephrase")),), neighborhood_prompts=(loc,),
                    neighborhood_target=need(r, "loc_ans"), source="zsre_mend")

    return convert


# ----------------------------------------------------------------------------------------------- formats
FORMATS = ("counterfact_mend", "counterfact_rome", "zsre_mend", "known_1000", "locedit")


def format_of_record(record: Any) -> str | None:
    """The format a record's keys identify, or None."""
    if not isinstance(record, dict):
        return None
    keys = set(record)
    if "requested_rewrite" in keys:
        return "counterfact_rome"
    if {"rephrase_prompt", "locality_prompt", "ground_truth"} <= keys:
        return "counterfact_mend"
    if {"src", "answers"} <= keys:
        return "zsre_mend"
    if "target_true" in keys and "prompt" in keys:
        return "locedit"
    if "attribute" in keys and "prompt" in keys:
        return "known_1000"
    return None


def _format_of_file(path: Path, records: list[Any]) -> str:
    for record in records[:20]:
        fmt = format_of_record(record)
        if fmt:
            return fmt
    if not records:
        raise DataError(f"{path}: the file holds no records")
    raise DataError(f"{path}: unknown dataset format; supported: {', '.join(FORMATS)} (see `locedit data inspect`)")


def _expand(path_or_paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Files to read: a folder becomes its CounterFact files (MEND split, else ROME's counterfact.json)."""
    paths = [Path(path_or_paths)] if isinstance(path_or_paths, (str, Path)) else [Path(p) for p in path_or_paths]
    if not paths:
        raise DataError("no dataset path given; pass a file or a folder")
    files: list[Path] = []
    for p in paths:
        if not p.is_dir():
            files.append(p)
        elif all((p / f).exists() for f in COUNTERFACT_MEND_FILES):
            files += [p / f for f in COUNTERFACT_MEND_FILES]
        elif (p / COUNTERFACT_ROME_FILE).exists():
            files.append(p / COUNTERFACT_ROME_FILE)
        else:
            raise DataError(f"{p}: folder holds neither {', '.join(COUNTERFACT_MEND_FILES)} nor "
                            f"{COUNTERFACT_ROME_FILE}; pass a dataset file instead")
    return files


def detect_format(path_or_paths: PathLike | Sequence[PathLike]) -> str:
    """The format name (one of ``FORMATS``) of a dataset file, file list or CounterFact folder."""
    found = {_format_of_file(p, read_records(p)) for p in _expand(path_or_paths)}
    if len(found) > 1:
        raise DataError(f"mixed dataset formats {sorted(found)}; load them separately")
    return found.pop()


def _read_file(path: Path, report: LoadReport, strict: bool, seed: int, fmt: str | None = None) -> list[Fact]:
    records = read_records(path)
    found = _format_of_file(path, records)
    if fmt is not None and found != fmt:
        raise DataError(f"{path}: expected {fmt} records, found {found}; use load_facts to auto-detect")
    convert = {"counterfact_mend": _counterfact_mend, "counterfact_rome": _counterfact_rome,
               "known_1000": _known_1000, "locedit": _locedit}.get(found) or _zsre_converter(records, seed)
    part = LoadReport(format=found, paths=[str(path)])
    facts = list(checked(path, records, convert, part, strict))
    if report.format not in ("", found):
        raise DataError(f"{path}: {found} records cannot be merged with {report.format} records; load them separately")
    report.format = found
    report.merge(part)
    return facts


def load_facts_with_report(
    path_or_paths: PathLike | Sequence[PathLike], strict: bool = False, *, seed: int = 0, fmt: str | None = None
) -> tuple[list[Fact], LoadReport]:
    """Facts from any supported file(s) or CounterFact folder, with what was read and skipped.

    Several files must share one format; the result is sorted by case_id, each case_id once.
    ``seed`` only affects zsRE's o_false draw.
    """
    report = LoadReport(format="", paths=[])
    facts: list[Fact] = []
    for path in _expand(path_or_paths):
        facts += _read_file(path, report, strict, seed, fmt)
    facts.sort(key=lambda f: f.case_id)
    return drop_duplicate_ids(facts, report, strict), report


def load_facts(path_or_paths: PathLike | Sequence[PathLike], strict: bool = True, *, seed: int = 0) -> list[Fact]:
    """Facts from any supported file(s) or folder, format auto-detected (see :func:`load_facts_with_report`)."""
    return load_facts_with_report(path_or_paths, strict, seed=seed)[0]


def _shared(name: str | Sequence[str]) -> list[Path]:
    root = data_dir()
    if root is None:
        raise DataError("data folder not found; set LOCEDIT_DATA_DIR or pass the dataset path with --data")
    return [root / n for n in ([name] if isinstance(name, str) else name)]


def load_counterfact_mend(paths: PathLike | Sequence[PathLike] | None = None, strict: bool = True) -> list[Fact]:
    """CounterFact in EasyEdit/MEND format (docs/algorithms.md#data): the three split files merged, sorted by case_id.

    ``paths``: a folder holding the three files, the files themselves, or None for the shared data folder.
    """
    files = _shared(COUNTERFACT_MEND_FILES) if paths is None else paths
    return load_facts_with_report(files, strict, fmt="counterfact_mend")[0]


def load_counterfact_rome(path: PathLike | None = None, strict: bool = True) -> list[Fact]:
    """ROME's original ``counterfact.json`` (``requested_rewrite`` with a ``{}`` template)."""
    return load_facts_with_report(path or _shared(COUNTERFACT_ROME_FILE), strict, fmt="counterfact_rome")[0]


def load_zsre_mend(path: PathLike | None = None, seed: int = 0, strict: bool = False) -> list[Fact]:
    """zsRE in MEND format (docs/algorithms.md#zsre); malformed records are skipped and counted unless ``strict``."""
    path = path or _shared("zsre_mend_train_1k.json")[0]
    return load_facts_with_report(path, strict, seed=seed, fmt="zsre_mend")[0]


def load_known_1000(path: PathLike | None = None, strict: bool = True) -> list[Fact]:
    """ROME's known facts (subject, prompt, attribute as target_true); tracing derives its noise level from them."""
    return load_facts_with_report(path or _shared("known_1000.json"), strict, fmt="known_1000")[0]


def demo_facts_path() -> Path:
    """The demo fact set shipped inside the package."""
    return Path(str(resources.files("locedit.data").joinpath(DEMO_FACTS)))


def load_demo_facts() -> list[Fact]:
    """The shipped demo facts: written for locedit, each known to SmolLM2-135M (correctness filter)."""
    return load_facts(demo_facts_path(), strict=True)


def default_dataset() -> list[Fact]:
    """The dataset used when none is given: the demo facts."""
    return load_demo_facts()
