"""Tokenization rules of docs/algorithms.md#subject-span, #subject-last-index, #target-probability, #tokenization:
subject spans, subject-last index, targets."""

from __future__ import annotations

from typing import Literal, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase
from unidecode import unidecode

Spacing = Literal["fixed", "compat"]


class SubjectNotFoundError(ValueError):
    """The subject does not occur in the prompt (not even after ASCII transliteration)."""


class EmptyTargetError(ValueError):
    """A target string is empty or only whitespace."""


def sequence_start(tok: PreTrainedTokenizerBase) -> list[int]:
    """The BOS the tokenizer puts before every sequence (Gemma, Llama 2/3), or ``[]`` (GPT-2, SmolLM2, Pythia).

    Gemma 3 without its BOS predicts noise, so a sequence locedit feeds a model starts as the tokenizer
    starts one; no EOS is ever added.
    """
    return [i for i in tok("", add_special_tokens=True)["input_ids"] if i == tok.bos_token_id]


def encode(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` as the start of a model input: :func:`sequence_start`, then ``text``'s tokens."""
    return sequence_start(tok) + encode_piece(tok, text)


def encode_piece(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` alone, with no BOS/EOS added (a target, a subject, a continuation)."""
    return tok(text, add_special_tokens=False)["input_ids"]


def target_text(target: str, spacing: Spacing = "fixed") -> str:
    """The scored target string: exactly one leading space (``fixed``) or ``" " + target`` (``compat``)."""
    if not target or not target.strip():
        raise EmptyTargetError("empty target string; give a non-empty target such as ' Paris'")
    return " " + (target.lstrip() if spacing == "fixed" else target)


def target_ids(tok: PreTrainedTokenizerBase, target: str, spacing: Spacing = "fixed") -> list[int]:
    return encode_piece(tok, target_text(target, spacing))


def _piece_ends(tok: PreTrainedTokenizerBase, ids: list[int]) -> tuple[str, list[int]]:
    pieces = [tok.decode([i]) for i in ids]
    ends, total = [], 0
    for p in pieces:
        total += len(p)
        ends.append(total)
    return "".join(pieces), ends


def _span_in(tok: PreTrainedTokenizerBase, ids: list[int], subject: str, ascii_mode: bool) -> tuple[int, int] | None:
    text, ends = _piece_ends(tok, ids)
    if ascii_mode:
        text, ends = _ascii_offsets(tok, ids)
        subject = _ascii_clean(subject)
    c = text.find(subject)
    if c < 0 or not subject:
        return None
    s0 = next(i for i, e in enumerate(ends) if e > c)
    s1 = 1 + next(i for i, e in enumerate(ends) if e >= c + len(subject))
    return s0, s1


def _ascii_clean(text: str) -> str:
    text = unidecode(text)
    for a, b in ((" .", "."), (" ,", ","), (" !", "!")):
        text = text.replace(a, b)
    return text


def _ascii_offsets(tok: PreTrainedTokenizerBase, ids: list[int]) -> tuple[str, list[int]]:
    """Per-token ASCII transliteration with cumulative offsets (space clean-up applied per piece join)."""
    pieces = [unidecode(tok.decode([i])) for i in ids]
    text, ends = "", []
    for p in pieces:
        text += p
        for a, b in ((" .", "."), (" ,", ","), (" !", "!")):
            text = text.replace(a, b)
        ends.append(len(text))
    return text, ends


def subject_span(tok: PreTrainedTokenizerBase, prompt: str, subject: str) -> tuple[int, int]:
    """Half-open token span [s0, s1) of the first occurrence of ``subject`` in ``prompt``
    (docs/algorithms.md#subject-span)."""
    ids = encode(tok, prompt)
    span = _span_in(tok, ids, subject, ascii_mode=False) or _span_in(tok, ids, subject, ascii_mode=True)
    if span is None:
        raise SubjectNotFoundError(f"subject {subject!r} not found in prompt {prompt!r}; fix the record or skip it")
    return span


def subject_spans(tok: PreTrainedTokenizerBase, prompts: Sequence[str], subject: str) -> list[tuple[int, int] | None]:
    """:func:`subject_span` of ``subject`` in each prompt; None where it does not occur (e.g. a neighborhood
    prompt, which names another subject)."""
    spans: list[tuple[int, int] | None] = []
    for prompt in prompts:
        try:
            spans.append(subject_span(tok, prompt, subject))
        except SubjectNotFoundError:
            spans.append(None)
    return spans


def context_length(model: PreTrainedModel) -> int | None:
    """The longest sequence ``model`` accepts, from its config (max_position_embeddings, n_positions or
    n_ctx), or None when the config names none."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def subject_last_index(tok: PreTrainedTokenizerBase, template: str, subject: str) -> int:
    """Index of the subject's last token in ``template.format(subject)`` (docs/algorithms.md#subject-last-index).

    Falls back to the decode-and-concatenate span when the prefix does not end in a space.
    """
    if template.count("{}") != 1:
        raise ValueError(f"template must contain exactly one '{{}}': {template!r}")
    prefix, suffix = template.split("{}")
    if prefix and not prefix.endswith(" "):
        return subject_span(tok, template.format(subject), subject)[1] - 1
    word = " " + subject.strip() if prefix else subject
    return len(encode(tok, prefix[:-1])) + len(encode_piece(tok, word)) - 1


def template_of(prompt: str, subject: str) -> str:
    """The prompt with the first occurrence of ``subject`` replaced by ``{}`` (braces escaped)."""
    i = prompt.find(subject)
    if i < 0:
        raise SubjectNotFoundError(f"subject {subject!r} not found in prompt {prompt!r}; fix the record or skip it")
    esc = lambda s: s.replace("{", "{{").replace("}", "}}")  # noqa: E731
    return esc(prompt[:i]) + "{}" + esc(prompt[i + len(subject):])
