"""Batched evaluation: rank-one edits as activation edits equal the applied weight deltas, B facts per forward."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from locedit.data.fact import Fact
from locedit.edit.handle import EditHandle, snapshot, weights_equal
from locedit.edit.methods import compute_edits, resolve_hparams
from locedit.edit.problems import ProblemContext, get_problem
from locedit.edit.stats import SecondMoments
from locedit.evaluate.batched import evaluate_states
from locedit.evaluate.essence import essence_texts
from locedit.evaluate.evaluation import GROUPS, evaluate_state
from locedit.models.low_rank import factors_by_layer, rank_one_edits
from locedit.models import family_for, tiny

FACTS = (
    Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English",
         paraphrase_prompts=("Danielle Darrieux grew up speaking", "Danielle Darrieux, a native speaker of"),
         neighborhood_prompts=("The mother tongue of Léon Blum is", "Michel Rocard's mother tongue is"),
         attribute_prompts=("Jean Gabin speaks",)),
    Fact(1, "Vladimir Putin", "The native language of Vladimir Putin is", "Russian", "French",
         paraphrase_prompts=("Vladimir Putin grew up speaking",), neighborhood_prompts=("Leo Tolstoy spoke",)),
    Fact(2, "the Eiffel Tower", "the Eiffel Tower is located in the city of", "Paris", "Rome"),
)
FAST = {"rome": {"v_num_grad_steps": 6}, "memit": {"v_num_grad_steps": 6, "mom2_update_weight": 50.0}}
TOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def _prepared(model, tok, problem="error-injection"):
    ctx = ProblemContext(model, tok)
    return [get_problem(problem).prepare(ctx, f) for f in FACTS]


def _results(model, tok, prepared, method, corpus_file, layer=3):
    hp = resolve_hparams(method, model, "error-injection", FAST[method])
    results = compute_edits(model, tok, [p.request for p in prepared], method, layer, hp,
                            SecondMoments(model, tok, corpus_file, 1500))
    assert all(sorted(r.low_rank) == sorted(r.deltas) for r in results)
    return results


def _applied(model, tok, prepared, results, texts):
    """The oracle: each fact's real weight deltas applied, evaluate_state, restored."""
    out = []
    for p, r, t in zip(prepared, results, texts):
        with EditHandle(model, r.deltas):
            out.append(evaluate_state(model, tok, p, essence_texts=t))
    return out


def assert_same(batched, oracle):
    for b, o in zip(batched, oracle):
        for g in GROUPS:
            assert len(b.logp_new[g]) == len(o.logp_new[g])
            for x, y in zip(b.logp_new[g] + b.logp_base[g], o.logp_new[g] + o.logp_base[g]):
                assert abs(x - y) < TOL, (g, x, y)
        assert (b.essence_ppl is None) == (o.essence_ppl is None)
        if o.essence_ppl is not None:
            assert math.isclose(b.essence_ppl, o.essence_ppl, rel_tol=TOL)


@pytest.mark.parametrize("method", ["rome", "memit"])
def test_rank_one_evaluation_equals_applied_deltas(method, tiny_model, corpus_file):
    model, tok = tiny_model
    snap = snapshot(model)
    prepared = _prepared(model, tok)
    results = _results(model, tok, prepared, method, corpus_file)
    texts = [essence_texts(model, tok, f.subject, n=2, length=12, use_cache=False) for f in FACTS]
    texts[1] = None  # a fact scored without essence beside two with
    oracle = _applied(model, tok, prepared, results, texts)
    batched = evaluate_states(model, tok, prepared, low_rank=[r.low_rank for r in results], essence_texts=texts)
    assert weights_equal(model, snap)
    assert_same(batched, oracle)
    plain = evaluate_states(model, tok, prepared, essence_texts=texts)  # the edits did change the scores
    assert max(abs(a - b) for p, q in zip(plain, batched) for a, b in zip(p.logp_new["rewrite"], q.logp_new["rewrite"])) > 1e-3
    assert_same(plain, [evaluate_state(model, tok, p, essence_texts=t) for p, t in zip(prepared, texts)])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fact_forcing_noise_is_drawn_per_fact_as_alone(family, corpus_file):
    model, tok = tiny(family)
    prepared = [replace(p, eval_sigma=0.5) for p in _prepared(model, tok)]
    results = _results(model, tok, prepared, "rome", corpus_file, layer=2)
    texts = [[f"{f.subject} is a city and {f.subject} is a river", "It is not"] for f in FACTS]  # one text lacks it
    oracle = _applied(model, tok, prepared, results, texts)
    batched = evaluate_states(model, tok, prepared, low_rank=[r.low_rank for r in results], essence_texts=texts)
    assert_same(batched, oracle)
    clean = evaluate_states(model, tok, [replace(p, eval_sigma=None) for p in prepared],
                            low_rank=[r.low_rank for r in results], essence_texts=texts)
    assert abs(clean[0].logp_new["rewrite"][0] - batched[0].logp_new["rewrite"][0]) > 1e-4  # the noise is there


def test_small_forwards_give_the_same_scores(tiny_llama, corpus_file):
    model, tok = tiny_llama
    prepared = _prepared(model, tok)
    results = _results(model, tok, prepared, "memit", corpus_file)
    low_rank = [r.low_rank for r in results]
    texts = [["One two three four five", "six seven eight"]] * 3
    assert_same(evaluate_states(model, tok, prepared, low_rank=low_rank, essence_texts=texts, max_rows=4),
                evaluate_states(model, tok, prepared, low_rank=low_rank, essence_texts=texts))


def test_rank_one_edits_check_their_input(tiny_llama):
    model, _ = tiny_llama
    fam = family_for(model)
    d_model, d_mlp = fam.down_weight(model, 1).shape
    with pytest.raises(ValueError, match="only down-projection weights"):
        factors_by_layer(model, {"model.embed_tokens.weight": (torch.ones(d_model), torch.ones(d_mlp))})
    with pytest.raises(ValueError, match="set for 2 rows, the forward has 1"):
        with rank_one_edits(model, [{f"{fam.down_name(1)}.weight": (torch.ones(d_model), torch.ones(d_mlp))}, {}]):
            model(input_ids=torch.tensor([[3, 4]]))
    assert not model._forward_hooks and not fam.module(model, fam.mlp_down, 1)._forward_hooks
