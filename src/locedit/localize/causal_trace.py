"""Causal tracing (docs/algorithms.md#causal-tracing) and representation zeroing
(docs/algorithms.md#representation-zeroing): thin configurations of the patch engine.

``trace``: corrupt the subject embeddings with seeded Gaussian noise (the same draws for every cell of
the fact), restore clean site outputs over windows, measure p(target). ``zero``: no corruption, set
the site output to 0 over windows, measure p(target). Both run on the fast engine by default and on
the one-forward-per-cell oracle with ``engine="oracle"``.
"""

from __future__ import annotations

from typing import Literal, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.edit.noise import SubjectNoise
from locedit.localize.engine import DEFAULT_MAX_ROWS, fast_grid
from locedit.localize.inputs import TracedFact, check_windows, prepare
from locedit.localize.noise import noise_level
from locedit.localize.oracle import oracle_grid
from locedit.localize.patching import KINDS, Corruption, PatchGrid, PatchProblem, Restore
from locedit.localize.result import TraceResult, ZeroingResult, grid_key
from locedit.models.families import family_for

Engine = Literal["fast", "oracle"]
DEFAULT_SAMPLES = 10
DEFAULT_SEED = 1


def _run(model: PreTrainedModel, problem: PatchProblem, restores: list[Restore], tokens: list[int], engine: Engine,
         max_rows: int) -> PatchGrid:
    if engine == "fast":
        return fast_grid(model, problem, restores, tokens, max_rows=max_rows)
    if engine == "oracle":
        return oracle_grid(model, problem, restores, tokens)
    raise ValueError(f"unknown engine {engine!r}; use fast or oracle")


def _settings(model: PreTrainedModel, f: TracedFact, method: str, engine: str, **extra) -> dict:
    return dict(method=method, model=str(model.config._name_or_path or model.config.model_type), engine=engine,
                case_id=f.case_id, prompt=f.prompt, subject=f.subject, target=f.target, target_ids=list(f.target_ids),
                target_source=f.target_source, target_is_greedy=f.target_is_greedy, greedy_token=f.greedy_token, **extra)


def _check_kinds(kinds: Sequence[str]) -> list[str]:
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown kind(s) {bad or kinds}; use any of {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))


def trace(model: PreTrainedModel, tok: PreTrainedTokenizerBase, fact_or_prompt: Fact | str, subject: str | None = None,
          target: str | None = None, *, kinds: Sequence[str] = ("mlp",), windows: Sequence[int] = (5,),
          samples: int = DEFAULT_SAMPLES, noise: float | None = None, seed: int = DEFAULT_SEED, engine: Engine = "fast",
          max_rows: int = DEFAULT_MAX_ROWS) -> TraceResult:
    """Trace one fact: p_clean, p_noise and a grid of p_restored per (kind, window) over tokens s0..T-1 x layers.

    ``target=None`` traces the model's greedy next token. ``noise`` overrides the model's sigma
    (:func:`locedit.localize.noise.noise_level`). All cells share ``samples`` noise draws seeded by ``seed``.
    """
    kinds = _check_kinds(kinds)
    check_windows(model, windows)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    f = prepare(model, tok, fact_or_prompt, subject, target)
    sigma = noise_level(model, tok, noise)
    s0, s1 = f.span
    d = family_for(model).module(model, family_for(model).embed).weight.shape[1]
    draws = SubjectNoise(sigma, seed).draw(samples, s1 - s0, d)
    problem = PatchProblem(f.ids, len(f.prompt_ids), Corruption(f.span, sigma, draws))
    restores = [Restore(k, w) for k in kinds for w in dict.fromkeys(windows)]
    out = _run(model, problem, restores, list(range(s0, len(f.prompt_ids))), engine, max_rows)
    return TraceResult(
        settings=_settings(model, f, "trace", engine, kinds=kinds, windows=list(dict.fromkeys(windows)), samples=samples,
                           sigma=sigma, seed=seed),
        tokens=[tok.decode([i]) for i in f.prompt_ids], s0=s0, s1=s1, p_clean=out.p_clean, p_noise=out.p_base,
        grids={grid_key(r.kind, r.window): g for r, g in out.grids.items()},
    )


def zero(model: PreTrainedModel, tok: PreTrainedTokenizerBase, fact_or_prompt: Fact | str, subject: str | None = None,
         target: str | None = None, *, windows: Sequence[int] = (5,), kind: str = "mlp", engine: Engine = "fast",
         max_rows: int = DEFAULT_MAX_ROWS) -> ZeroingResult:
    """Representation zeroing of one fact: p(target) with the ``kind`` output at one token set to 0 over a window,
    for every prompt token x centre layer (docs/algorithms.md#representation-zeroing)."""
    _check_kinds([kind])
    check_windows(model, windows)
    f = prepare(model, tok, fact_or_prompt, subject, target)
    problem = PatchProblem(f.ids, len(f.prompt_ids), None)
    restores = [Restore(kind, w, "zero") for w in dict.fromkeys(windows)]
    out = _run(model, problem, restores, list(range(len(f.prompt_ids))), engine, max_rows)
    return ZeroingResult(
        settings=_settings(model, f, "zero", engine, kinds=[kind], windows=list(dict.fromkeys(windows)), samples=1),
        tokens=[tok.decode([i]) for i in f.prompt_ids], s0=f.span[0], s1=f.span[1], p_clean=out.p_clean,
        grids={grid_key(r.kind, r.window): g for r, g in out.grids.items()},
    )
