"""Which facts a model knows, computed once and kept: a resumable verdict cache and the known-ids file.

Both filters are deterministic per (model, fact) (docs/algorithms.md#selection), so ``assess_facts`` appends each
finished batch to a JSON-lines cache and skips facts already there; an interrupted run resumes.
``save_known_ids`` writes the small file sweeps read to select known facts without recomputing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.data.filters import (
    ERASURE_THRESHOLD,
    MAX_NEW_TOKENS,
    FilterMode,
    Progress,
    correctness_filter,
    erasure_filter,
)
from locedit.data.validation import DataError, read_json
from locedit.files import write_atomic
from locedit.models.tokens import encode

# the known-ids lists shipped in locedit/data, per model alias: CounterFact case ids 0..1999, compat filter
SHIPPED_KNOWN_IDS: dict[str, str] = {"smollm2-135m": "smollm2_known_counterfact.json",
                                     "gemma3-270m": "gemma3_known_counterfact.json"}


@dataclass(frozen=True)
class Knowledge:
    """Both filters' outcome for one fact (the cache row)."""

    case_id: int
    prompt: str
    target_true: str
    compat: bool
    fixed: bool
    p_true: float
    passes_erasure: bool

    def known(self, mode: FilterMode = "compat") -> bool:
        return self.compat if mode == "compat" else self.fixed


def _read_cache(path: Path | None, model_name: str) -> dict[tuple[int, str, str], Knowledge]:
    if path is None or not path.exists():
        return {}
    rows = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}: line {n} is not JSON; delete the cache file to recompute") from None
        if row.pop("model", None) == model_name and row.pop("max_new_tokens", None) == MAX_NEW_TOKENS:
            k = Knowledge(**row)
            rows[(k.case_id, k.prompt, k.target_true)] = k
    return rows


def _batches(tok: PreTrainedTokenizerBase, facts: list[Fact], batch_size: int, blocks: int = 2) -> list[list[Fact]]:
    """Batches in input order, length-sorted within blocks of ``blocks`` batches (little padding, and an
    interrupted run has covered a prefix of the facts)."""
    out = []
    for start in range(0, len(facts), batch_size * blocks):
        block = sorted(facts[start : start + batch_size * blocks], key=lambda f: len(encode(tok, f.prompt)))
        out += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    return out


def assess_facts(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    *,
    model_name: str,
    cache: Path | None = None,
    batch_size: int = 32,
    threshold: float = ERASURE_THRESHOLD,
    progress: Progress | None = None,
) -> list[Knowledge]:
    """Correctness (both modes) and erasure-filter outcome of every fact, in input order.

    Facts found in ``cache`` (same model name, case_id, prompt and target) are not recomputed; new
    batches are appended to it as they finish. The erasure verdict is re-derived from the cached
    p(o_true) with ``threshold``.
    """
    done = _read_cache(cache, model_name)
    key = lambda f: (f.case_id, f.prompt, f.target_true)  # noqa: E731
    pending = [f for f in facts if key(f) not in done]
    if progress and len(pending) < len(facts):
        progress(len(facts) - len(pending))
    for chunk in _batches(tok, pending, batch_size):
        verdicts = correctness_filter(model, tok, chunk, batch_size=batch_size).verdicts
        erasure = erasure_filter(model, tok, chunk, threshold=threshold, batch_size=batch_size)
        rows = [Knowledge(f.case_id, f.prompt, f.target_true, v.compat, v.fixed, e.p_true, e.passes)
                for f, v, e in zip(chunk, verdicts, erasure)]
        done.update((key(f), k) for f, k in zip(chunk, rows))
        if cache is not None:
            with cache.open("a", encoding="utf-8") as out:
                for k in rows:
                    out.write(json.dumps({"model": model_name, "max_new_tokens": MAX_NEW_TOKENS, **asdict(k)}) + "\n")
        if progress:
            progress(len(chunk))
    return [replace(done[key(f)], passes_erasure=done[key(f)].p_true > threshold) for f in facts]


def save_known_ids(path: Path, model_name: str, rows: Sequence[Knowledge], mode: FilterMode = "compat") -> dict[str, Any]:
    """Write ``{model, filter, n_candidates, case_ids, erasure_case_ids}``: the facts known under ``mode``,
    and those of them that also pass the Fact Erasure filter."""
    payload = {"model": model_name, "filter": f"correctness-{mode}-greedy{MAX_NEW_TOKENS}",
               "n_candidates": len(rows), "case_ids": sorted(k.case_id for k in rows if k.known(mode)),
               "erasure_case_ids": sorted(k.case_id for k in rows if k.known(mode) and k.passes_erasure)}
    write_atomic(path, json.dumps(payload) + "\n")
    return payload


def shipped_known_ids_path(model_name: str) -> Path:
    """The shipped known-ids list of ``model_name`` (an alias of :data:`SHIPPED_KNOWN_IDS`)."""
    if model_name not in SHIPPED_KNOWN_IDS:
        raise DataError(f"no known-ids list ships for model {model_name!r} (only for {', '.join(SHIPPED_KNOWN_IDS)}); "
                        "set data.known_only = false and let the correctness filter select the facts")
    return Path(str(resources.files("locedit.data").joinpath(SHIPPED_KNOWN_IDS[model_name])))


def load_known_ids(path: Path | None = None, model_name: str = "smollm2-135m") -> dict[str, Any]:
    """A known-ids file; by default the list shipped for ``model_name`` over CounterFact case_ids 0..1999."""
    path = path or shipped_known_ids_path(model_name)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("case_ids"), list):
        raise DataError(f"{path}: not a known-ids file (expected an object with a 'case_ids' list)")
    return data
