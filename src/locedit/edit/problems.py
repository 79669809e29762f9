"""The five editing problems of Hase et al. (docs/algorithms.md#editing-problems, #tracing-reversal-target), each a
small registered object.

A problem says what to edit towards and how to judge it; it never changes how a method works. Given a
:class:`Fact` and a :class:`ProblemContext` (one per model: noise level, o_noise mode, caches) it returns a
:class:`PreparedEdit`: the :class:`EditRequest` for the method plus what evaluation needs.

=====================  ==============  ==================  ==========  ============================
problem                target_new      request_baseline    objective   evaluation
=====================  ==============  ==================  ==========  ============================
error-injection        o_false         o_true              maximize    normal
tracing-reversal       o_noise         o_true              maximize    normal
fact-erasure           o_true          eos text            minimize    erased proportion
fact-amplification     o_true          eos text            maximize    normal
fact-forcing           o_true          noised argmax       maximize    subject noised
=====================  ==============  ==================  ==========  ============================

The evaluation column is explained in docs/algorithms.md#normalized-scores.

>>> from locedit.models import tiny
>>> from locedit.data.fact import Fact
>>> model, tok = tiny("llama")
>>> fact = Fact(case_id=0, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is",
...             target_true="French", target_new="English")
>>> prepared = get_problem("error-injection").prepare(ProblemContext(model, tok), fact)
>>> prepared.request.target, prepared.request_baseline
('English', 'French')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.edit.request import EditRequest, NoiseMode, Objective
from locedit.localize.noise import noise_level
from locedit.models.generation import greedy_generate, sample_top_k
from locedit.models.noise import SubjectNoise, noised_subject
from locedit.models.tokens import encode, subject_span
from locedit.registry import Registry

ONoiseMode = Literal["compat", "continuation", "argmax"]
O_NOISE_MODES: tuple[str, ...] = ("compat", "continuation", "argmax")
# total tokens (prompt included) of the reference's o_noise sample (docs/algorithms.md#tracing-reversal-target)
O_NOISE_LENGTH = 12
O_NOISE_SEED = 0  # the reference seeds torch with 0 for editing
ARGMAX_ROWS = 10  # noise samples averaged for the argmax o_noise


def default_noise_sigma(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> float:
    """The editing noise level (docs/algorithms.md#noise-level): GPT-J 0.094, GPT2-XL 0.1, else 3 x std of
    subject-token embeddings.

    The tracing stage's value, so tracing and editing noise the subject alike.
    """
    return float(noise_level(model, tok))


class ProblemContext:
    """Per-model state the problems share: noise level, modes and a per-(model, fact) cache.

    ``sigma`` None resolves lazily to :func:`default_noise_sigma` (only TR and FF need it).
    ``ff_noise_mode`` is the Fact Forcing edit noise placement (compat: plain prompt's span in every row).
    """

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, *, sigma: float | None = None,
                 o_noise_mode: ONoiseMode = "compat", ff_noise_mode: NoiseMode = "compat",
                 o_noise_seed: int = O_NOISE_SEED):
        if o_noise_mode not in O_NOISE_MODES:
            raise ValueError(f"unknown o_noise mode {o_noise_mode!r}; use one of {', '.join(O_NOISE_MODES)}")
        if ff_noise_mode not in ("compat", "fixed"):
            raise ValueError(f"unknown Fact Forcing noise mode {ff_noise_mode!r}; use compat or fixed")
        if sigma is not None and not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"noise sigma must be a positive number, got {sigma}")
        self.model, self.tok = model, tok
        self._sigma = sigma
        self.o_noise_mode: ONoiseMode = o_noise_mode
        self.ff_noise_mode: NoiseMode = ff_noise_mode
        self.o_noise_seed = o_noise_seed
        self._cache: dict[tuple, Any] = {}

    @property
    def sigma(self) -> float:
        if self._sigma is None:
            self._sigma = default_noise_sigma(self.model, self.tok)
        return self._sigma

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key (keys name the fact by prompt and subject)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


@dataclass(frozen=True)
class PreparedEdit:
    """An edit request plus what its evaluation needs (docs/algorithms.md#editing-problems)."""

    problem: str
    fact: Fact
    request: EditRequest
    request_baseline: str
    erasure: bool = False  # Fact Erasure scoring (docs/algorithms.md#normalized-scores)
    # Fact Forcing: evaluate with the subject noised (docs/algorithms.md#normalized-scores)
    eval_sigma: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the o_noise mode that made the target

    @property
    def target_new(self) -> str:
        return self.request.target


@torch.no_grad()
def noised_next_token_probs(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompt: str, subject: str,
                            sigma: float, rows: int) -> torch.Tensor:
    """Next-token distribution after ``prompt`` averaged over ``rows`` subject-noised copies (fresh seed 1)."""
    ids = torch.tensor([encode(tok, prompt)] * rows, device=model.device)
    noise = SubjectNoise(sigma, seed=1, default_span=subject_span(tok, prompt, subject))
    with noised_subject(model, noise):
        logits = model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()
    return torch.softmax(logits, dim=-1).mean(0)


def most_likely_text(tok: PreTrainedTokenizerBase, probs: torch.Tensor, prompt: str, top: int = 100) -> str:
    """Decoded text of the most likely token that is not blank; a blank token cannot be scored as a target."""
    for i in probs.argsort(descending=True)[:top].tolist():
        text = tok.decode([i])
        if text.strip():
            return text
    raise ValueError(f"no non-blank token among the {top} most likely after {prompt!r}")


def ff_request_baseline(ctx: ProblemContext, fact: Fact, rows: int) -> str:
    """Decoded argmax token of the noised-subject next-token distribution (FF request_baseline,
    docs/algorithms.md#editing-problems).

    Blank tokens are passed over: the reference decodes the argmax even when it is " " (SmolLM2 says " " after
    "Shree Pundalik, created in" with the subject noised), and a blank string cannot be scored as a target.
    """
    def compute() -> str:
        probs = noised_next_token_probs(ctx.model, ctx.tok, fact.prompt, fact.subject, ctx.sigma, rows)
        return most_likely_text(ctx.tok, probs, fact.prompt)

    return ctx.cached(("ff_baseline", fact.prompt, fact.subject, ctx.sigma, rows), compute)


def o_noise(ctx: ProblemContext, fact: Fact) -> str:
    """The Tracing Reversal target: what the model says with its subject noised
    (docs/algorithms.md#tracing-reversal-target), cached."""
    key = ("o_noise", ctx.o_noise_mode, fact.prompt, fact.subject, ctx.sigma, ctx.o_noise_seed)
    return ctx.cached(key, lambda: _O_NOISE[ctx.o_noise_mode](ctx, fact))


def _o_noise_compat(ctx: ProblemContext, fact: Fact) -> str:
    """Reference behaviour: prompt + top-5 sampled tokens up to 12 in total, prefill noised."""
    noise = SubjectNoise(ctx.sigma, seed=1, default_span=subject_span(ctx.tok, fact.prompt, fact.subject))
    with noised_subject(ctx.model, noise):
        return sample_top_k(ctx.model, ctx.tok, [fact.prompt], O_NOISE_LENGTH, k=5, seed=ctx.o_noise_seed)[0]


def _o_noise_continuation(ctx: ProblemContext, fact: Fact) -> str:
    """Greedy continuation under one noise draw, at least one token and up to 12 in total; stripped."""
    n_prompt = len(encode(ctx.tok, fact.prompt))
    noise = SubjectNoise(ctx.sigma, seed=1, default_span=subject_span(ctx.tok, fact.prompt, fact.subject))
    for n_new in (max(1, O_NOISE_LENGTH - n_prompt), O_NOISE_LENGTH):  # longer retry if only whitespace came out
        noise.reseed()
        with noised_subject(ctx.model, noise):
            ids = greedy_generate(ctx.model, ctx.tok, [fact.prompt], max_new_tokens=n_new)[0]
        text = ctx.tok.decode(ids, skip_special_tokens=True).strip()
        if text:
            return text
    raise ValueError(f"the noised model generates only whitespace after {fact.prompt!r}; use o_noise mode argmax")


def _o_noise_argmax(ctx: ProblemContext, fact: Fact) -> str:
    """The most likely non-blank token of the noise-averaged next-token distribution."""
    probs = noised_next_token_probs(ctx.model, ctx.tok, fact.prompt, fact.subject, ctx.sigma, ARGMAX_ROWS)
    return most_likely_text(ctx.tok, probs, fact.prompt).strip()


_O_NOISE: dict[str, Callable[[ProblemContext, Fact], str]] = {
    "compat": _o_noise_compat, "continuation": _o_noise_continuation, "argmax": _o_noise_argmax}


def _require_true(fact: Fact) -> str:
    if not fact.target_true or not fact.target_true.strip():
        raise ValueError(f"fact {fact.case_id} has no true target; give --target-true or a dataset record")
    return fact.target_true


class Problem:
    """An editing problem: what to edit towards (``target``), against what (``baseline``), which way.

    ``label`` / ``long_name`` name it in tables and figures ("EI", "Error Injection"); its label and
    ``aliases`` find it as well as its name. ``erasure``: scored by the erased proportion, on facts that pass
    the erasure filter. ``noised``: edited and evaluated with the subject noised. ``target_from_noise``: its
    target is what the model says with the subject noised. Register a new one in :data:`PROBLEMS`.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    long_name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    objective: ClassVar[Objective] = "maximize"
    erasure: ClassVar[bool] = False
    noised: ClassVar[bool] = False
    target_from_noise: ClassVar[bool] = False

    @property
    def needs_noise(self) -> bool:
        """Whether preparing or evaluating it reads the subject noise level."""
        return self.noised or self.target_from_noise

    def target(self, ctx: ProblemContext, fact: Fact) -> str:
        raise NotImplementedError

    def baseline(self, ctx: ProblemContext, fact: Fact, baseline_rows: int) -> str:
        return _require_true(fact)

    def prepare(self, ctx: ProblemContext, fact: Fact, *, baseline_rows: int = 1) -> PreparedEdit:
        """The edit request and evaluation settings for ``fact``.

        ``baseline_rows``: noised copies averaged for the Fact Forcing baseline (10 for FT, 1 for ROME/MEMIT).
        """
        sigma = ctx.sigma if self.noised else None
        request = EditRequest(prompt=fact.prompt, subject=fact.subject, target=self.target(ctx, fact),
                              objective=self.objective, noise_sigma=sigma, noise_mode=ctx.ff_noise_mode)
        details = {"o_noise_mode": ctx.o_noise_mode} if self.target_from_noise else {}
        return PreparedEdit(problem=self.name, fact=fact, request=request,
                            request_baseline=self.baseline(ctx, fact, baseline_rows), erasure=self.erasure,
                            eval_sigma=sigma, details=details)

    def __repr__(self) -> str:
        return f"<problem {self.name}>"


class ErrorInjection(Problem):
    """Make the model state the counterfactual object o_false."""

    name, label, long_name = "error-injection", "EI", "Error Injection"

    def target(self, ctx: ProblemContext, fact: Fact) -> str:
        true = _require_true(fact)
        if not fact.target_new or not fact.target_new.strip():
            raise ValueError(f"fact {fact.case_id} has no new target for error injection; give --target-new")
        if fact.target_new.strip() == true.strip():
            raise ValueError(f"the new target {fact.target_new!r} equals the true target; choose a different object")
        return fact.target_new


class TracingReversal(Problem):
    """Make the model say, for the clean subject, what it says when the subject is noised (o_noise)."""

    name, label, long_name = "tracing-reversal", "TR", "Tracing Reversal"
    target_from_noise = True

    def target(self, ctx: ProblemContext, fact: Fact) -> str:
        return o_noise(ctx, fact)


class _TrueTarget(Problem):
    def target(self, ctx: ProblemContext, fact: Fact) -> str:
        return _require_true(fact)

    def baseline(self, ctx: ProblemContext, fact: Fact, baseline_rows: int) -> str:
        return ctx.tok.eos_token  # arbitrary in the reference; only the original ROME metrics use it


class FactErasure(_TrueTarget):
    """Lower p(o_true); scored by the erased proportion."""

    name, label, long_name = "fact-erasure", "FE", "Fact Erasure"
    objective = "minimize"
    erasure = True


class FactAmplification(_TrueTarget):
    """Raise p(o_true) further."""

    name, label, long_name = "fact-amplification", "FA", "Fact Amplification"


class FactForcing(_TrueTarget):
    """Raise p(o_true | noised subject); edited and evaluated with the subject noised."""

    name, label, long_name = "fact-forcing", "FF", "Fact Forcing"
    noised = True

    def baseline(self, ctx: ProblemContext, fact: Fact, baseline_rows: int) -> str:
        return ff_request_baseline(ctx, fact, baseline_rows)


PROBLEMS: Registry[Problem] = Registry("editing problem")
for _p in (ErrorInjection(), TracingReversal(), FactErasure(), FactAmplification(), FactForcing()):  # paper order
    PROBLEMS.register(_p)


def get_problem(name: str | Problem) -> Problem:
    """The registered problem ``name`` finds (full name or label, any case: "fact-forcing", "FF", "ff")."""
    return name if isinstance(name, Problem) else PROBLEMS.get(name)
