"""Fine-tuning B facts in one batch (finetune_many) equals fine-tuning each alone (finetune).

The per-fact Adam equals torch.optim.Adam bit for bit, also when a fact skips steps and resumes. On every tiny
family (GPT-2's Conv1D down projection with a bias included), FT-1 and FT-5, maximising and minimising, each
fact's deltas, losses and step counts equal the one-by-one oracle's, also when facts stop at different
iterations, and the weights are never touched. The tiny models run in float64: the oracle trains the weights
themselves (W + Δ, rounded to W's precision at every step) while the batch trains Δ alone, so in float32 the
deltas differ by about 1e-6 (relative) and a random model's perplexities in the thousands by about 1e-7.
Fact Forcing requests are trained together as well: each fact's noise, drawn per forward from its own
stream, is bit for bit the noise of its one-by-one edit, and its result equals that edit's.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest
import torch

from locedit.data.loaders import load_demo_facts
from locedit.edit.fact_adam import FactAdam
from locedit.edit.finetune import finetune, finetune_many
from locedit.edit.handle import snapshot, weights_equal
from locedit.edit.hparams import FtHparams
from locedit.edit.methods import compute_edits, edit_layers, get_method
from locedit.edit.request import EditRequest
from locedit.models import TINY_FAMILIES, tiny
from locedit.models.families import family_for
from locedit.models.interventions import intervene
from locedit.models.tokens import encode, subject_span, target_ids
from locedit.study.benchmark import compare_method

pytestmark = pytest.mark.usefixtures("one_thread")

REQUESTS = [
    EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English"),
    EditRequest("Toko Yasuda plays the", "Toko Yasuda", "piano"),
    EditRequest("The Eiffel Tower is located in", "The Eiffel Tower", "Paris", objective="minimize"),
]
# Fact Forcing requests: subjects at different places of prompts of different lengths, both noise modes
FF_REQUESTS = [
    replace(REQUESTS[0], noise_sigma=0.5, noise_seed=3),
    replace(REQUESTS[1], noise_sigma=0.3, noise_seed=7, noise_mode="fixed"),
    EditRequest("In Paris, the Eiffel Tower stands near the", "the Eiffel Tower", "Seine river", noise_sigma=0.5),
]
# A random model's p(target) is about 1e-5: a threshold below it lets Fact Erasure take steps too.
HP = FtHparams(lr=5e-4, num_steps=6, norm_constraint=0.02, loss_threshold=1e-9)
TOL = 1e-6


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny64(request):
    """(model, tokenizer) of each tiny family in float64."""
    return tiny(request.param, dtype=torch.float64)


def assert_same_result(batched, alone) -> None:
    assert batched.deltas.keys() == alone.deltas.keys() and not batched.low_rank
    for name, delta in alone.deltas.items():
        assert batched.deltas[name].shape == delta.shape and batched.deltas[name].dtype == delta.dtype
        assert float((batched.deltas[name] - delta).norm()) <= TOL * float(delta.norm()), name
    assert batched.info["steps_taken"] == alone.info["steps_taken"]
    assert len(batched.info["losses"]) == len(alone.info["losses"])
    assert torch.allclose(torch.tensor(batched.info["losses"]), torch.tensor(alone.info["losses"]), rtol=TOL, atol=0)


def test_fact_adam_equals_torch_adam_with_skipped_steps():
    torch.manual_seed(0)
    schedule = [[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]]  # each fact skips, then resumes
    for dtype in (torch.float32, torch.float64):
        start = torch.randn(3, 4, 5, dtype=dtype)
        stacked, bias = start.clone(), torch.zeros(3, 5, dtype=dtype)
        opt = FactAdam([stacked, bias], lr=5e-4)
        alone = [(start[i].clone().requires_grad_(True), torch.zeros(5, dtype=dtype, requires_grad=True))
                 for i in range(3)]
        refs = [torch.optim.Adam(list(pair), lr=5e-4, weight_decay=0.0) for pair in alone]
        for k, mask in enumerate(schedule):
            stacked.grad = torch.randn(3, 4, 5, dtype=dtype) * 10.0 ** -k  # down to below Adam's ε
            bias.grad = torch.randn(3, 5, dtype=dtype)
            opt.step([bool(on) for on in mask])
            for i, on in enumerate(mask):
                if on:
                    alone[i][0].grad, alone[i][1].grad = stacked.grad[i].clone(), bias.grad[i].clone()
                    refs[i].step()
        assert opt.steps == [5, 3, 4]
        for i, (weight, b) in enumerate(alone):
            assert torch.equal(stacked[i], weight.detach()) and torch.equal(bias[i], b.detach())


def test_fact_adam_needs_one_mask_entry_per_fact():
    with pytest.raises(ValueError, match="one mask entry per fact"):
        FactAdam([torch.zeros(2, 3)], lr=0.1).step([True])


@pytest.mark.parametrize("method", ["ft-1", "ft-5"])
def test_finetune_many_equals_finetune_per_fact(tiny64, method):
    model, tok = tiny64
    layers = edit_layers(model, 2, replace(HP, window=get_method(method).window))
    snap = snapshot(model)
    batched = finetune_many(model, tok, REQUESTS, layers, HP)
    assert weights_equal(model, snap)
    for request, result in zip(REQUESTS, batched):
        alone = finetune(model, tok, request, layers, HP)
        assert result.info["steps_taken"] == HP.num_steps  # every fact, erasure included, trained throughout
        assert_same_result(result, alone)
    assert weights_equal(model, snap)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_facts_stop_at_different_iterations(family):
    model, tok = tiny(family, dtype=torch.float64)
    layers = [1, 2, 3]
    probe = finetune(model, tok, REQUESTS[0], layers, replace(HP, num_steps=10))
    # the first fact falls below the threshold after 4 steps; the others train on, or stop from the start
    hp = replace(HP, num_steps=10, patience=2, loss_threshold=probe.info["losses"][4] * (1 + 1e-9))
    batched = finetune_many(model, tok, REQUESTS, layers, hp)
    for request, result in zip(REQUESTS, batched):
        assert_same_result(result, finetune(model, tok, request, layers, hp))
    assert batched[0].info["steps_taken"] == 4 and len(batched[0].info["losses"]) == 6
    assert len({len(r.info["losses"]) for r in batched}) > 1


@pytest.mark.parametrize("method", ["ft-1", "ft-5"])
def test_fact_forcing_requests_trained_together_equal_finetune(tiny64, method):
    model, tok = tiny64
    hp = replace(HP, n_copies=3, num_steps=4, window=get_method(method).window)
    layers = edit_layers(model, 2, hp)
    spans = [subject_span(tok, r.prompt, r.subject) for r in FF_REQUESTS]
    lengths = [len(encode(tok, r.prompt)) + len(target_ids(tok, r.target)) for r in FF_REQUESTS]
    assert len(set(spans)) == len(spans) and len(set(lengths)) > 1
    snap = snapshot(model)
    batched = finetune_many(model, tok, FF_REQUESTS, layers, hp)
    assert weights_equal(model, snap)
    for request, result in zip(FF_REQUESTS, batched):
        assert result.info["steps_taken"] == hp.num_steps
        assert_same_result(result, finetune(model, tok, request, layers, hp))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fact_forcing_facts_stop_at_different_iterations(family):
    model, tok = tiny(family, dtype=torch.float64)
    layers, hp = [1, 2, 3], replace(HP, n_copies=3, num_steps=10, patience=2)
    probe = finetune(model, tok, FF_REQUESTS[0], layers, hp)
    hp = replace(hp, loss_threshold=statistics.median(probe.info["losses"]))  # noised losses go up and down
    batched = finetune_many(model, tok, FF_REQUESTS, layers, hp)
    for request, result in zip(FF_REQUESTS, batched):
        assert_same_result(result, finetune(model, tok, request, layers, hp))
    assert len({len(r.info["losses"]) for r in batched}) > 1


def test_mixed_fact_forcing_and_plain_requests(tiny64):
    model, tok = tiny64
    requests = [REQUESTS[0], FF_REQUESTS[1], REQUESTS[2], FF_REQUESTS[0]]
    hp = replace(HP, n_copies=3, num_steps=3)
    batched = finetune_many(model, tok, requests, [2], hp)
    for request, result in zip(requests, batched):
        assert_same_result(result, finetune(model, tok, request, [2], hp))


def embeddings_per_forward(model, run) -> list[torch.Tensor]:
    """The input of the first block (noised embeddings) in each forward of ``run()``."""
    seen: list[torch.Tensor] = []
    with intervene(model, {family_for(model).site("block_input", 0): lambda h: seen.append(h.detach().clone())}):
        run()
    return seen


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_each_fact_draws_the_noise_of_its_own_edit(family):
    model, tok = tiny(family, dtype=torch.float64)
    hp = replace(HP, n_copies=3, num_steps=3)
    batched = embeddings_per_forward(model, lambda: finetune_many(model, tok, FF_REQUESTS, [2], hp))
    assert len(batched) == hp.num_steps
    for i, request in enumerate(FF_REQUESTS):
        alone = embeddings_per_forward(model, lambda: finetune(model, tok, request, [2], hp))
        clean = embeddings_per_forward(model, lambda: finetune(model, tok, replace(request, noise_sigma=None), [2],
                                                               replace(hp, num_steps=1)))[0]
        s0, s1 = subject_span(tok, request.prompt, request.subject)
        rows, length = slice(i * hp.n_copies, (i + 1) * hp.n_copies), alone[0].shape[1]
        for step, (mine, oracle) in enumerate(zip(batched, alone)):
            assert torch.equal(mine[rows, :length], oracle), (request.subject, step)
            noise = oracle - clean
            assert torch.equal(noise[:, :s0], torch.zeros_like(noise[:, :s0]))
            assert torch.equal(noise[:, s1:], torch.zeros_like(noise[:, s1:]))
            assert bool((noise[:, s0:s1] != 0).all())
        assert not torch.equal(alone[0], alone[1])  # fresh noise in every forward


def test_ft_methods_compute_edits_together(tiny64):
    model, tok = tiny64
    assert get_method("ft-1").compute_many is finetune_many and get_method("ft-5").compute_many is finetune_many
    hp = replace(HP, window=5, num_steps=3)
    results = compute_edits(model, tok, [REQUESTS[0], replace(REQUESTS[1], subject="Marie Curie"), REQUESTS[2]],
                            "ft-5", 2, hp)
    assert isinstance(results[1], ValueError) and "Marie Curie" in str(results[1])
    for request, result in ((REQUESTS[0], results[0]), (REQUESTS[2], results[2])):
        assert_same_result(result, finetune(model, tok, request, edit_layers(model, 2, hp), hp))
        assert result.info["edit_seconds"] > 0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["ft-1", "ft-5"])
def test_bench_compare_finds_equal_scores(family, method):
    model, tok = tiny(family, dtype=torch.float64)
    report = compare_method(model, tok, load_demo_facts()[:2], method, 2, "error-injection", batch=2,
                            hparams={"num_steps": 4})
    assert report["compared"] == 2 and report["oracle_failed"] == report["fast_failed"] == 0
    assert report["max_score_diff"] < 1e-4  # essence included
