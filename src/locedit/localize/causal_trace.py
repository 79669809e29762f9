"""Causal tracing (docs/algorithms.md#causal-tracing) and representation zeroing
(docs/algorithms.md#representation-zeroing): thin configurations of the patch engine.

``trace``: corrupt the subject embeddings with seeded Gaussian noise (the same draws for every cell of
the fact), restore clean site outputs over windows, measure p(target). ``zero``: no corruption, set
the site output to 0 over windows, measure p(target). Both run on the fast engine by default and on
the one-forward-per-cell oracle with ``engine="oracle"``.
"""

from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.localize.engine import fast_grid
from locedit.localize.inputs import TracedFact, check_windows, prepare
from locedit.localize.noise import noise_level
from locedit.localize.oracle import oracle_grid
from locedit.localize.patching import Corruption, PatchGrid, PatchProblem, Restore
from locedit.localize.result import TraceResult, ZeroingResult, grid_key
from locedit.localize.settings import Engine, TraceSettings
from locedit.models.families import family_for
from locedit.models.noise import SubjectNoise


def _run(model: PreTrainedModel, problem: PatchProblem, restores: list[Restore], tokens: list[int],
         s: TraceSettings) -> PatchGrid:
    if s.engine == "fast":
        return fast_grid(model, problem, restores, tokens, max_rows=s.max_rows)
    return oracle_grid(model, problem, restores, tokens)


def _recorded(model: PreTrainedModel, f: TracedFact, method: str, engine: str, **extra) -> dict:
    """The settings dict a result records (model, fact, target and run settings; the files keep it as is)."""
    return dict(method=method, model=str(model.config._name_or_path or model.config.model_type), engine=engine,
                case_id=f.case_id, prompt=f.prompt, subject=f.subject, target=f.target, target_ids=list(f.target_ids),
                target_source=f.target_source, target_is_greedy=f.target_is_greedy, greedy_token=f.greedy_token, **extra)


def trace(model: PreTrainedModel, tok: PreTrainedTokenizerBase, fact_or_prompt: Fact | str, subject: str | None = None,
          target: str | None = None, *, settings: TraceSettings | None = None, kinds: Sequence[str] | None = None,
          windows: Sequence[int] | None = None, samples: int | None = None, noise: float | None = None,
          seed: int | None = None, engine: Engine | None = None, max_rows: int | None = None) -> TraceResult:
    """Trace one fact: p_clean, p_noise and a grid of p_restored per (kind, window) over tokens s0..T-1 x layers.

    ``target=None`` traces the model's greedy next token. ``settings`` (default :class:`TraceSettings`:
    mlp, window 5, 10 samples, the model's noise, seed 1, fast engine); keyword arguments given here
    override its fields. All cells share ``samples`` noise draws seeded by ``seed``.

    >>> from locedit.models import tiny
    >>> from locedit.localize import TraceSettings, trace
    >>> model, tok = tiny("llama")
    >>> settings = TraceSettings(kinds=("mlp", "attn"), windows=(3,), samples=2, noise=0.5)
    >>> r = trace(model, tok, "The Eiffel Tower is in the city of", "The Eiffel Tower", settings=settings)
    >>> r.grid("mlp", 3).shape == (r.n_tokens - r.s0, 6)             # tokens from the subject on x layers
    True
    >>> r.trace_settings == settings
    True
    >>> same = trace(model, tok, "The Eiffel Tower is in the city of", "The Eiffel Tower", kinds=["mlp", "attn"],
    ...              windows=[3], samples=2, noise=0.5)                # keyword arguments work as well
    >>> bool((same.grid("mlp", 3) == r.grid("mlp", 3)).all())
    True
    """
    s = (settings or TraceSettings()).updated(kinds=kinds, windows=windows, samples=samples, noise=noise, seed=seed,
                                              engine=engine, max_rows=max_rows)
    check_windows(model, s.windows)
    f = prepare(model, tok, fact_or_prompt, subject, target)
    sigma = noise_level(model, tok, s.noise)
    s0, s1 = f.span
    d = family_for(model).module(model, family_for(model).embed).weight.shape[1]
    draws = SubjectNoise(sigma, s.seed).draw(s.samples, s1 - s0, d)
    problem = PatchProblem(f.ids, len(f.prompt_ids), Corruption(f.span, sigma, draws))
    restores = [Restore(k, w) for k in s.kinds for w in s.windows]
    out = _run(model, problem, restores, list(range(s0, len(f.prompt_ids))), s)
    return TraceResult(
        settings=_recorded(model, f, "trace", s.engine, kinds=list(s.kinds), windows=list(s.windows),
                           samples=s.samples, sigma=sigma, seed=s.seed),
        tokens=[tok.decode([i]) for i in f.prompt_ids], s0=s0, s1=s1, p_clean=out.p_clean, p_noise=out.p_base,
        grids={grid_key(r.kind, r.window): g for r, g in out.grids.items()},
    )


def zero(model: PreTrainedModel, tok: PreTrainedTokenizerBase, fact_or_prompt: Fact | str, subject: str | None = None,
         target: str | None = None, *, settings: TraceSettings | None = None, windows: Sequence[int] | None = None,
         kind: str | None = None, engine: Engine | None = None, max_rows: int | None = None) -> ZeroingResult:
    """Representation zeroing of one fact: p(target) with the ``kind`` output at one token set to 0 over a window,
    for every prompt token x centre layer (docs/algorithms.md#representation-zeroing).

    ``settings`` gives the kind (exactly one), windows, engine and max_rows; keyword arguments override them.

    >>> from locedit.models import tiny
    >>> from locedit.localize import zero
    >>> model, tok = tiny("llama")
    >>> z = zero(model, tok, "The Eiffel Tower is in the city of", "The Eiffel Tower", windows=[3])
    >>> z.grid("mlp", 3).shape == (z.n_tokens, 6), z.layer_effect(3).shape      # every token x layers
    (True, (6,))
    """
    s = (settings or TraceSettings()).updated(kinds=None if kind is None else (kind,), windows=windows, engine=engine,
                                              max_rows=max_rows)
    if len(s.kinds) != 1:
        raise ValueError(f"zeroing takes one kind, got {list(s.kinds)}; zero each kind separately")
    check_windows(model, s.windows)
    f = prepare(model, tok, fact_or_prompt, subject, target)
    problem = PatchProblem(f.ids, len(f.prompt_ids), None)
    restores = [Restore(s.kinds[0], w, "zero") for w in s.windows]
    out = _run(model, problem, restores, list(range(len(f.prompt_ids))), s)
    return ZeroingResult(
        settings=_recorded(model, f, "zero", s.engine, kinds=list(s.kinds), windows=list(s.windows), samples=1),
        tokens=[tok.decode([i]) for i in f.prompt_ids], s0=f.span[0], s1=f.span[1], p_clean=out.p_clean,
        grids={grid_key(r.kind, r.window): g for r, g in out.grids.items()},
    )
