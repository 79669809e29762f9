"""Which facts a model knows (docs/algorithms.md#selection): the greedy correctness filter and the Fact Erasure
probability filter.

Correctness: greedy-decode 36 new tokens; the fact is known iff lower(o_true) is a character substring of
the lower-cased continuation. ``compat`` builds the continuation as the reference does (decode prompt +
continuation without pad/eos, delete the prompt string, strip), so a prompt that decoding does not
reproduce stays in the text and a target named in the prompt counts as known (docs/algorithms.md#reference-deviations);
``fixed`` decodes only the generated ids. Both verdicts are always computed, so their disagreement is
reported for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.models.generation import greedy_generate
from locedit.models.scoring import pad_id_of, target_probs
from locedit.models.tokens import Spacing, encode, encode_piece

FilterMode = Literal["compat", "fixed"]
FILTER_MODES: tuple[FilterMode, ...] = ("compat", "fixed")
MAX_NEW_TOKENS = 36
ERASURE_THRESHOLD = 0.02
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Verdict:
    """Correctness of one fact under both continuation rules, with the texts that were searched."""

    case_id: int
    target: str
    compat: bool
    fixed: bool
    text_compat: str
    text_fixed: str

    def known(self, mode: FilterMode = "compat") -> bool:
        return self.compat if mode == "compat" else self.fixed


@dataclass(frozen=True)
class CorrectnessResult:
    """Per-fact verdicts (input order) and the mode whose verdict counts."""

    mode: FilterMode
    verdicts: list[Verdict]

    @property
    def known(self) -> list[bool]:
        return [v.known(self.mode) for v in self.verdicts]

    @property
    def n_known(self) -> int:
        return sum(self.known)

    @property
    def known_case_ids(self) -> list[int]:
        return [v.case_id for v in self.verdicts if v.known(self.mode)]

    @property
    def n_disagree(self) -> int:
        """How many facts the compat and fixed rules judge differently (docs/algorithms.md#reference-deviations)."""
        return sum(v.compat != v.fixed for v in self.verdicts)

    def count(self, mode: FilterMode) -> int:
        return sum(v.known(mode) for v in self.verdicts)


def _check_mode(mode: str) -> None:
    if mode not in FILTER_MODES:
        raise ValueError(f"unknown filter mode {mode!r}; use one of {', '.join(FILTER_MODES)}")


def contains_target(text: str, target: str) -> bool:
    """The reference test: lower-cased, stripped character substring (``french`` matches ``frenchman``)."""
    return target.strip().lower() in text.strip().lower()


def continuation_texts(tok: PreTrainedTokenizerBase, prompt: str, new_ids: Sequence[int]) -> tuple[str, str]:
    """(compat, fixed) continuation texts of a greedy run: see the module docstring."""
    drop = {pad_id_of(tok), tok.eos_token_id}
    full = [i for i in [*encode_piece(tok, prompt), *new_ids] if i not in drop]
    compat = tok.decode(full).replace(prompt, "").strip()
    fixed = tok.decode([i for i in new_ids if i not in drop]).strip()
    return compat, fixed


def verdict_of(tok: PreTrainedTokenizerBase, fact: Fact, new_ids: Sequence[int]) -> Verdict:
    """Both verdicts for one fact from its greedy continuation ids."""
    compat, fixed = continuation_texts(tok, fact.prompt, new_ids)
    return Verdict(fact.case_id, fact.target_true, contains_target(compat, fact.target_true),
                   contains_target(fixed, fact.target_true), compat, fixed)


def _length_sorted(tok: PreTrainedTokenizerBase, facts: Sequence[Fact]) -> list[int]:
    """Fact indices by prompt length, so batches carry little left padding."""
    return sorted(range(len(facts)), key=lambda i: len(encode(tok, facts[i].prompt)))


def correctness_filter(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    *,
    mode: FilterMode = "compat",
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> CorrectnessResult:
    """Greedy-decode each prompt (batched, left-padded) and judge whether the model states o_true.

    Batches are formed from length-sorted prompts; the verdicts come back in input order. ``progress``
    is called with the number of facts finished after each batch.
    """
    _check_mode(mode)
    order = _length_sorted(tok, facts)
    verdicts: dict[int, Verdict] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        new_ids = greedy_generate(model, tok, [facts[i].prompt for i in chunk], max_new_tokens, batch_size)
        for i, ids in zip(chunk, new_ids):
            verdicts[i] = verdict_of(tok, facts[i], ids)
        if progress:
            progress(len(chunk))
    return CorrectnessResult(mode, [verdicts[i] for i in range(len(facts))])


@dataclass(frozen=True)
class ErasureVerdict:
    """p(o_true | prompt) and whether it clears the Fact Erasure threshold (strictly greater)."""

    case_id: int
    p_true: float
    passes: bool


def erasure_filter(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    facts: Sequence[Fact],
    *,
    threshold: float = ERASURE_THRESHOLD,
    spacing: Spacing = "fixed",
    batch_size: int = 64,
    progress: Progress | None = None,
) -> list[ErasureVerdict]:
    """Fact Erasure filter (docs/algorithms.md#selection): keep facts with p(" " + o_true | prompt) > ``threshold``."""
    out: list[ErasureVerdict] = []
    for start in range(0, len(facts), batch_size):
        chunk = facts[start : start + batch_size]
        probs = target_probs(model, tok, [f.prompt for f in chunk], [f.target_true for f in chunk],
                             spacing=spacing, batch_size=batch_size)
        out += [ErasureVerdict(f.case_id, float(p), float(p) > threshold) for f, p in zip(chunk, probs)]
        if progress:
            progress(len(chunk))
    return out
