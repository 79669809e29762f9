"""Fine-tuning B facts in one batch (finetune_many) equals fine-tuning each alone (finetune).

The per-fact Adam equals torch.optim.Adam bit for bit, also when a fact skips steps and resumes. On every tiny
family (GPT-2's Conv1D down projection with a bias included), FT-1 and FT-5, maximising and minimising, each
fact's deltas, losses and step counts equal the one-by-one oracle's, also when facts stop at different
iterations, and the weights are never touched. The tiny models run in float64: the oracle trains the weights
themselves (W + Δ, rounded to W's precision at every step) while the batch trains Δ alone, so in float32 the
deltas differ by about 1e-6 (relative) and a random model's perplexities in the thousands by about 1e-7.
"""

from __future__ import annotations

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
from locedit.study.benchmark import compare_method

pytestmark = pytest.mark.usefixtures("one_thread")

REQUESTS = [
    EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English"),
    EditRequest("Toko Yasuda plays the", "Toko Yasuda", "piano"),
    EditRequest("The Eiffel Tower is located in", "The Eiffel Tower", "Paris", objective="minimize"),
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


def test_noised_requests_are_trained_alone(tiny64):
    model, tok = tiny64
    noised = replace(REQUESTS[1], noise_sigma=0.5, noise_seed=3)
    hp = replace(HP, n_copies=3, num_steps=3)
    batched = finetune_many(model, tok, [REQUESTS[0], noised, REQUESTS[2]], [2], hp)
    for request, result in zip([REQUESTS[0], noised, REQUESTS[2]], batched):
        assert_same_result(result, finetune(model, tok, request, [2], hp))


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
