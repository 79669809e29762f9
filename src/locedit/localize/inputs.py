"""Turn a fact (or prompt + subject + target) into checked token ids for tracing and zeroing.

Bad input gets a one-line error naming it: subject not in the prompt, empty target, a prompt longer
than the model's context, a window larger than the model. A target that is not the model's greedy
continuation is allowed but warned about (:class:`TargetWarning`); ``target=None`` traces the greedy
next token and says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.models.families import family_for
from locedit.models.tokens import context_length, encode, subject_span, target_ids


class TargetWarning(UserWarning):
    """The traced target is not what the model would say (allowed, but the effects mean something else)."""


@dataclass(frozen=True)
class TracedFact:
    """Prompt and target ids, subject span and where the target came from."""

    case_id: int
    prompt: str
    subject: str
    target: str  # the scored text (with its leading space)
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    span: tuple[int, int]
    target_is_greedy: bool
    target_source: str  # "given" or "greedy"
    greedy_token: str

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prompt_ids + self.target_ids


def check_windows(model: PreTrainedModel, windows: Sequence[int]) -> None:
    n_layers = family_for(model).n_layers(model)
    for w in windows:
        if not 1 <= w <= n_layers:
            raise ValueError(f"window {w} does not fit the model's {n_layers} layers; use a window between 1 and {n_layers}")


@torch.no_grad()
def prepare(model: PreTrainedModel, tok: PreTrainedTokenizerBase, fact_or_prompt: Fact | str, subject: str | None = None,
            target: str | None = None) -> TracedFact:
    """Checked ids of a fact; ``target=None`` (and a fact without target_true) uses the greedy next token."""
    if isinstance(fact_or_prompt, Fact):
        fact = fact_or_prompt
        prompt, subject, case_id = fact.prompt, subject or fact.subject, fact.case_id
        target = target if target is not None else (fact.target_true or None)
    else:
        prompt, case_id = fact_or_prompt, -1
    if not prompt or not prompt.strip():
        raise ValueError("empty prompt; give the text whose continuation to trace")
    if not subject or not subject.strip():
        raise ValueError("empty subject; give the subject that occurs in the prompt (--subject)")
    p_ids = encode(tok, prompt)
    span = subject_span(tok, prompt, subject)
    given = target_ids(tok, target) if target is not None else None
    limit = context_length(model)
    n = len(p_ids) + (len(given) if given else 1)
    if limit is not None and n > limit:
        raise ValueError(f"prompt + target is {n} tokens, longer than the model's context of {limit}; shorten the prompt")
    logits = model(input_ids=torch.tensor([p_ids], device=model.device), logits_to_keep=1).logits[0, -1]
    greedy = int(logits.argmax())
    t_ids, source = (given, "given") if given else ([greedy], "greedy")
    target = tok.decode(t_ids)
    if given and given[0] != greedy:
        warnings.warn(f"target {target!r} is not the model's greedy continuation ({tok.decode([greedy])!r}); "
                      "tracing it anyway", TargetWarning, stacklevel=3)
    return TracedFact(case_id=case_id, prompt=prompt, subject=subject, target=target, prompt_ids=tuple(p_ids),
                      target_ids=tuple(t_ids), span=span, target_is_greedy=t_ids[0] == greedy, target_source=source,
                      greedy_token=tok.decode([greedy]))
