"""The fast patch engine equals the one-forward-per-cell oracle on every family (docs/algorithms.md#causal-tracing,
#caches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from locedit.localize import Corruption, PatchProblem, Restore, fast_grid, oracle_grid, trace
from locedit.models.families import family_for
from locedit.models.noise import SubjectNoise
from locedit.models.tokens import encode, subject_span

TOL = 1e-5


def _greedy(model, ids: list[int], n: int) -> list[int]:
    """The model's own n-token greedy continuation, so the target has a non-negligible probability."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def _problem(model, tok, prompt: str, subject: str, n_target: int, samples: int = 3, sigma: float = 0.5) -> PatchProblem:
    ids = encode(tok, prompt)
    span = subject_span(tok, prompt, subject)
    d = family_for(model).module(model, family_for(model).embed).weight.shape[1]
    noise = SubjectNoise(sigma, seed=1).draw(samples, span[1] - span[0], d)
    return PatchProblem(tuple(ids + _greedy(model, ids, n_target)), len(ids), Corruption(span, sigma, noise))


def _assert_equal(a, b) -> None:
    assert a.grids.keys() == b.grids.keys()
    assert abs(a.p_clean - b.p_clean) < TOL and abs(a.p_base - b.p_base) < TOL
    for r in a.grids:
        diff = np.abs(a.grids[r] - b.grids[r])
        assert diff.max() < TOL, (r, diff.max())
        np.testing.assert_allclose(b.grids[r], a.grids[r], rtol=1e-4, atol=1e-9)


CASES = [  # prompt, subject, target tokens
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", 2),  # multi-token subject and target
    ("Paris is the capital of", "Paris", 1),  # subject at the start (s0 = 0, no KV prefix)
    ("The city that holds the Eiffel Tower", "Tower", 2),  # one-token subject at the end: one traced token
    ("The Eiffel Tower is in the city of", "Tower", 1),  # one-token subject in the middle
]


@pytest.mark.parametrize("prompt,subject,n_target", CASES)
def test_fast_equals_oracle_every_family(tiny_model, prompt, subject, n_target):
    model, tok = tiny_model
    problem = _problem(model, tok, prompt, subject, n_target)
    s0 = problem.corruption.span[0]
    restores = [Restore("mlp", 3), Restore("attn", 1), Restore("block", 5)]
    tokens = list(range(s0, problem.n_prompt))
    oracle = oracle_grid(model, problem, restores, tokens)
    # a small row budget forces several chunks per token (and cells of one token across chunks)
    _assert_equal(oracle, fast_grid(model, problem, restores, tokens, max_rows=7))
    assert oracle.p_base != oracle.p_clean  # the noise did something, so the grids are not trivially equal


def test_subject_span_edge_cases_are_covered(tiny_llama):
    _, tok = tiny_llama
    spans = {(p, s): subject_span(tok, p, s) for p, s, _ in CASES}
    n = {p: len(encode(tok, p)) for p, _, _ in CASES}
    assert spans[CASES[1][:2]][0] == 0  # subject at the start
    assert spans[CASES[2][:2]] == (n[CASES[2][0]] - 1, n[CASES[2][0]])  # one-token subject at the end
    assert spans[CASES[3][:2]][1] - spans[CASES[3][:2]][0] == 1 < spans[CASES[3][:2]][0]  # one token, mid-prompt


def test_zeroing_fast_equals_oracle(tiny_model):
    model, tok = tiny_model
    prompt = "The mother tongue of Danielle Darrieux is"
    ids = encode(tok, prompt)
    problem = PatchProblem(tuple(ids + _greedy(model, ids, 2)), len(ids), None)
    restores = [Restore("mlp", 3, "zero"), Restore("mlp", 1, "zero")]
    tokens = list(range(len(ids)))
    oracle = oracle_grid(model, problem, restores, tokens)
    fast = fast_grid(model, problem, restores, tokens)
    _assert_equal(oracle, fast)
    assert fast.p_base == fast.p_clean
    assert not np.allclose(fast.grids[restores[0]], fast.p_clean)  # zeroing changed something


def test_trace_is_reproducible_and_seeded(tiny_llama):
    model, tok = tiny_llama
    kw = dict(kinds=["mlp"], windows=[3], samples=2, noise=0.5)
    a = trace(model, tok, "Paris is the capital of", "Paris", **kw)
    b = trace(model, tok, "Paris is the capital of", "Paris", **kw)
    c = trace(model, tok, "Paris is the capital of", "Paris", seed=2, **kw)
    assert np.array_equal(a.grid("mlp", 3), b.grid("mlp", 3)) and a.p_noise == b.p_noise
    assert a.p_noise != c.p_noise


@pytest.mark.embedded
def test_fast_equals_oracle_embedded(embedded):
    model, tok = embedded
    prompt, subject = "The mother tongue of Danielle Darrieux is", "Danielle Darrieux"
    ids = encode(tok, prompt)
    span = subject_span(tok, prompt, subject)
    noise = SubjectNoise(0.35, seed=1).draw(2, span[1] - span[0], 576)
    target = encode(tok, " French language")  # multi-token target
    problem = PatchProblem(tuple(ids + target), len(ids), Corruption(span, 0.35, noise))
    restores = [Restore("mlp", 5)]
    tokens = [span[1] - 1, len(ids) - 1]  # last subject token and last prompt token (oracle is slow on CPU)
    oracle = oracle_grid(model, problem, restores, tokens)
    _assert_equal(oracle, fast_grid(model, problem, restores, tokens))
