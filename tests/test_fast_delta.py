"""The fast v*/z engine (suffix-only forwards over a cached prefix, B facts per batch) equals the oracle.

Every tiny family (rotary, learned absolute positions, grouped-query attention, Gemma 3's mixed sliding and
full attention): the suffix forward's logits and gradients equal the full forward's; B facts optimised
together equal each one optimised alone, with per-fact early stopping, and once facts stop the later steps
run only the others' rows, with the same results; ROME and MEMIT give the oracle's deltas. The comparisons of optimised vectors run the tiny models in float64: a random model's gradients at
its top layers (and those of exp(-NLL) when minimising) are far below Adam's ε, so float32 rounding
differences of either path grow to percent-level differences of δ, while with a float64 model the two paths
agree to the rounding of the float32 δ. The embedded test compares v* on SmolLM2-135M in float32.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from locedit.edit.forcing import edit_noise
from locedit.edit.methods import compute_edits, resolve_hparams
from locedit.edit.request import EditRequest
from locedit.edit.rome import rome_schedule
from locedit.edit.stats import SecondMoments
from locedit.edit.target_value import (DeltaSchedule, _HeldRows, optimize_target_value, optimize_target_values,
                                      suffix_width_groups)
from locedit.edit.templates import memit_templates, rome_templates
from locedit.models import TINY_FAMILIES, family_for, intervene, tiny
from locedit.models.prefix import SuffixForward, aligned_batch
from locedit.models.scoring import pad_id_of, pad_right
from locedit.models.tokens import encode
from locedit.models.upper import UpperForward

pytestmark = pytest.mark.usefixtures("one_thread")

REQUESTS = [
    EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English"),
    EditRequest("Toko Yasuda plays the", "Toko Yasuda", "piano"),
    EditRequest("Paris is the capital of", "Paris", "Italy"),
]
ERASE = EditRequest("The Eiffel Tower is located in", "The Eiffel Tower", "Paris", objective="minimize")
# one suffix width, so one batch: three facts that stop early at different steps, one that minimises
SAME_WIDTH = [
    EditRequest("Toko Yasuda plays the", "Toko Yasuda", "piano"),
    EditRequest("Danielle Darrieux speaks the", "Danielle Darrieux", "English"),
    EditRequest("Paris lies in", "Paris", "Italy"),
    EditRequest("The Eiffel Tower lies in", "The Eiffel Tower", "Paris", objective="minimize"),
]
SCHEDULE = DeltaSchedule(steps=6, lr=0.5, weight_decay=0.5, clamp_norm_factor=4.0, kl_factor=0.0625)
SHORT = {"v_num_grad_steps": 6}


TOL = 1e-5  # δ, v* and the logits are float32 in both paths


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def tiny64(request):
    """(model, tokenizer) of each tiny family in float64."""
    return tiny(request.param, dtype=torch.float64)


@pytest.fixture(scope="module")
def llama64():
    return tiny("llama", dtype=torch.float64)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def assert_same_target(fast, oracle, tol: float = TOL) -> None:
    assert len(fast.losses) == len(oracle.losses)
    assert torch.allclose(torch.tensor(fast.losses), torch.tensor(oracle.losses), rtol=tol, atol=1e-7)
    assert torch.allclose(torch.tensor(fast.nlls), torch.tensor(oracle.nlls), rtol=tol, atol=1e-7)
    assert rel(fast.initial, oracle.initial) < tol
    moved, want = (fast.value - fast.initial).double(), (oracle.value - oracle.initial).double()
    assert (moved - want).norm() <= tol * want.norm()  # also when neither moved (a fact stopped at once)


def oracle_of(model, tok, request, site, contexts, schedule):
    with edit_noise(model, tok, request) as noise:
        return optimize_target_value(model, tok, request, site, contexts, schedule, noise)


def test_rows_are_aligned_at_their_pivots():
    ids, mask, positions, first = aligned_batch([[5, 6, 7], [8, 9], [4]], [2, 0, 0], pad_id=0)
    assert first == 2
    assert ids.tolist() == [[5, 6, 7, 0], [0, 0, 8, 9], [0, 0, 4, 0]]
    assert mask.tolist() == [[1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0]]
    assert positions[mask.bool()].tolist() == [0, 1, 2, 0, 1, 0]
    with pytest.raises(ValueError, match="pivot"):
        aligned_batch([[1, 2]], [2], pad_id=0)


def pivot_loss_and_grad(model, site, forward, rows: torch.Tensor, positions: torch.Tensor, pivots: torch.Tensor):
    """Logits at (rows, positions) with a vector added at each row's pivot, and the gradient of a loss on them
    w.r.t. those vectors."""
    delta = torch.full((len(pivots), site.width_of(model.config)), 0.05, requires_grad=True)

    def add(h):
        h = h.clone()
        h[torch.arange(len(pivots)), pivots] += delta
        return h

    with intervene(model, {site: add}):
        logits = forward.logits_at(rows, positions)
    torch.log_softmax(logits, -1)[:, :64].sum().backward()
    return logits.detach(), delta.grad


def test_suffix_forward_equals_the_full_forward(tiny_model):
    """Logits at every real suffix position and the gradient of a loss on them w.r.t. a vector added at
    each row's pivot, for rows of different prefix lengths (one with none)."""
    model, tok = tiny_model
    fam = family_for(model)
    rows = [encode(tok, p) for p in ("The mother tongue of Danielle Darrieux is", "Paris is the capital of", "Toko")]
    pivots = [5, 2, 0]
    ids, mask = pad_right(rows, pad_id_of(tok))
    full = UpperForward(model, ids, mask, start=0)
    where = [(i, p + j, j) for i, (r, p) in enumerate(zip(rows, pivots)) for j in range(len(r) - p)]
    row_of = torch.tensor([i for i, _, _ in where])
    full_pos, suffix_pos = torch.tensor([t for _, t, _ in where]), torch.tensor([j for _, _, j in where])
    for start in (0, 2, fam.n_layers(model) - 1):
        site = fam.site("mlp_down_output", start)
        fast = SuffixForward(model, rows, pivots, pad_id_of(tok), start)
        logits_full, grad_full = pivot_loss_and_grad(model, site, full, row_of, full_pos, torch.tensor(pivots))
        at_zero = torch.zeros(len(rows), dtype=torch.long)
        logits_fast, grad_fast = pivot_loss_and_grad(model, site, fast, row_of, suffix_pos, at_zero)
        assert torch.allclose(logits_fast, logits_full, rtol=1e-5, atol=1e-5), start
        assert torch.allclose(grad_fast, grad_full, rtol=1e-4, atol=1e-6 * grad_full.abs().max().item()), start


def test_batched_deltas_equal_each_fact_alone(tiny64):
    """B = 4 facts (one minimising) at a down projection and at a block output equal four oracle runs."""
    model, tok = tiny64
    fam = family_for(model)
    contexts = rome_templates(model, tok)[:6]
    requests = [*REQUESTS, ERASE]
    for site in (fam.site("mlp_down_output", 2), fam.site("block_output", 3)):
        fast = optimize_target_values(model, tok, requests, site, contexts, SCHEDULE)
        for request, got in zip(requests, fast):
            assert_same_target(got, oracle_of(model, tok, request, site, contexts, SCHEDULE))


def test_results_do_not_depend_on_the_batching(llama64):
    """Facts of different suffix widths run in one batch per width; each fact's δ is the same batched with
    any others, in any order, or alone."""
    model, tok = llama64
    site = family_for(model).site("mlp_down_output", 2)
    contexts = rome_templates(model, tok)[:4]
    requests = [*REQUESTS, ERASE]
    groups = suffix_width_groups(tok, requests, contexts)
    assert len(groups) > 1 and sorted(i for g in groups for i in g) == list(range(len(requests)))
    for group in groups:
        assert len(suffix_width_groups(tok, [requests[i] for i in group], contexts)) == 1
    together = optimize_target_values(model, tok, requests, site, contexts, SCHEDULE)
    reversed_ = optimize_target_values(model, tok, requests[::-1], site, contexts, SCHEDULE)[::-1]
    for i, request in enumerate(requests):
        [alone] = optimize_target_values(model, tok, [request], site, contexts, SCHEDULE)
        assert_same_target(together[i], alone)
        assert_same_target(reversed_[i], alone)


def test_a_fact_that_stops_early_keeps_its_delta(llama64):
    """rome_original: one fact stops after 3 updates, the other runs every step; each equals its oracle run
    (Adam's momentum would keep moving the stopped fact's δ were its update not undone)."""
    model, tok = llama64
    site = family_for(model).site("mlp_down_output", 3)
    contexts = rome_templates(model, tok)[:4]
    early, late = REQUESTS[1], REQUESTS[0]
    free = replace(SCHEDULE, steps=10)
    early_losses = oracle_of(model, tok, early, site, contexts, free).losses
    late_losses = oracle_of(model, tok, late, site, contexts, free).losses
    stop = (early_losses[2] + early_losses[3]) / 2
    assert min(early_losses[:3]) > stop > early_losses[3] and min(late_losses) > stop  # the setting this test needs
    schedule = replace(free, early_stop="rome_original", stop_loss=stop)
    fast = optimize_target_values(model, tok, [early, late], site, contexts, schedule)
    assert [len(f.losses) for f in fast] == [4, 10]
    for request, got in zip((early, late), fast):
        assert_same_target(got, oracle_of(model, tok, request, site, contexts, schedule))
    moved = optimize_target_values(model, tok, [early], site, contexts, replace(free, steps=5))[0]
    assert rel(moved.value, fast[0].value) > 1e-3  # a fourth update would have changed it


def test_selected_rows_equal_those_rows_of_the_forward(tiny_model):
    """A suffix forward restricted to some of its rows (in another order) gives those rows' logits and
    gradients, with and without cached prefixes and at every start layer."""
    model, tok = tiny_model
    fam = family_for(model)
    rows = [encode(tok, p) for p in ("The mother tongue of Danielle Darrieux is", "Paris is the capital of", "Toko")]
    picked = torch.tensor([2, 0])
    for pivots in ([5, 2, 0], [0, 0, 0]):
        where = [(i, j) for i in picked.tolist() for j in range(len(rows[i]) - pivots[i])]
        row_of, positions = torch.tensor([i for i, _ in where]), torch.tensor([j for _, j in where])
        at_zero = torch.zeros(len(rows), dtype=torch.long)
        for start in (0, 2, fam.n_layers(model) - 1):
            site = fam.site("mlp_down_output", start)
            full = SuffixForward(model, rows, pivots, pad_id_of(tok), start)
            fewer = full.select_rows(picked)
            assert (full.n_rows, fewer.n_rows) == (3, 2)
            logits_full, grad_full = pivot_loss_and_grad(model, site, full, row_of, positions, at_zero)
            in_fewer = torch.tensor([picked.tolist().index(i) for i in row_of.tolist()])
            logits, grad = pivot_loss_and_grad(model, site, fewer, in_fewer, positions, at_zero[:2])
            assert torch.allclose(logits, logits_full, rtol=1e-5, atol=1e-5), (pivots, start)
            assert torch.allclose(grad, grad_full[picked], rtol=1e-4, atol=1e-6 * grad_full.abs().max().item())
            assert not grad_full[1].any()


def staggered_stop_loss(losses: list[list[float]]) -> tuple[float, list[int]]:
    """The stop loss at which the most facts of a free run (no early stop) stop at different steps, as far
    from every loss it compares with as possible, and each fact's number of losses under it."""
    best = None
    values = sorted({x for fact in losses for x in fact})
    for low, high in zip(values, values[1:]):
        stop = (low + high) / 2
        counts = [next((t + 1 for t, x in enumerate(fact) if x < stop), len(fact)) for fact in losses]
        key = (len(set(counts)), min(high - stop, stop - low) / stop)
        if best is None or key > best[0]:
            best = key, stop, counts
    return best[1], best[2]


def rows_per_step(model, run):
    """``run()``'s result and the rows leaving the last block in each of its steps (the forwards that track
    gradients)."""
    fam = family_for(model)
    counts: list[int] = []

    def count(hidden):
        if torch.is_grad_enabled():
            counts.append(hidden.shape[0])

    with intervene(model, {fam.site("block_output", fam.n_layers(model) - 1): count}):
        return run(), counts


def test_stopped_facts_leave_the_forward(tiny64, monkeypatch):
    """Facts that stop at different steps (one at the first, one never: it minimises) leave the batched
    forward: each later step runs only the rows of the facts still optimised, and every fact's losses, δ,
    v0 and reads equal the batch that keeps every row, each fact alone, and the oracle."""
    model, tok = tiny64
    fam = family_for(model)
    site, read = fam.site("mlp_down_output", 2), fam.site("mlp_down_input", 2)
    contexts = rome_templates(model, tok)[:4]
    requests = SAME_WIDTH
    free = replace(SCHEDULE, steps=10)
    free_run = optimize_target_values(model, tok, requests[:3], site, contexts, free)
    stop, n_losses = staggered_stop_loss([r.losses for r in free_run])
    assert len(suffix_width_groups(tok, requests, contexts)) == 1 and len(set(n_losses)) == 3  # the setting needed
    n_losses.append(free.steps)  # the last fact minimises: it never stops early
    schedule = replace(free, early_stop="rome_original", stop_loss=stop)

    def batch():
        return optimize_target_values(model, tok, requests, site, contexts, schedule, reads=[read])

    dropping, steps = rows_per_step(model, batch)
    assert [len(r.losses) for r in dropping] == n_losses
    rows = len(contexts) + 1
    assert steps == [rows * sum(n > t for n in n_losses) for t in range(len(steps))]
    assert min(steps) < max(steps) == rows * len(requests)
    with monkeypatch.context() as patch:
        patch.setattr(_HeldRows, "keep", lambda held, active: held)  # the batch before facts could leave it
        keeping, steps = rows_per_step(model, batch)
    assert set(steps) == {rows * len(requests)}
    for request, fast, kept in zip(requests, dropping, keeping):
        assert_same_target(fast, kept, tol=1e-6)
        assert torch.equal(fast.reads[read], kept.reads[read])
        [alone] = optimize_target_values(model, tok, [request], site, contexts, schedule, reads=[read])
        assert_same_target(fast, alone, tol=1e-6)
        assert torch.allclose(fast.reads[read], alone.reads[read], rtol=1e-5, atol=1e-6)
        assert_same_target(fast, oracle_of(model, tok, request, site, contexts, schedule))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    g = torch.Generator().manual_seed(7)
    words = "the of and in river city painter language music history was is a to by with".split()
    text = "\n\n".join(" ".join(words[i] for i in torch.randint(len(words), (60,), generator=g).tolist()) + "."
                       for _ in range(20))
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("method, problem, overrides", [
    ("rome", "error-injection", SHORT),
    ("rome", "fact-erasure", SHORT),
    ("memit", "error-injection", {**SHORT, "mom2_update_weight": 50.0}),
    ("memit", "fact-erasure", {**SHORT, "mom2_update_weight": 50.0}),
])
def test_methods_fast_equal_oracle(method, problem, overrides, tiny64, corpus_file):
    model, tok = tiny64
    stats = SecondMoments(model, tok, corpus_file, 1000)
    objective = "minimize" if problem == "fact-erasure" else "maximize"
    requests = [replace(r, objective=objective) for r in REQUESTS[:2]]
    results = {engine: compute_edits(model, tok, requests, method, 3,
                                     resolve_hparams(method, model, problem, {**overrides, "engine": engine}), stats)
               for engine in ("fast", "oracle")}
    for fast, oracle in zip(results["fast"], results["oracle"]):
        assert sorted(fast.deltas) == sorted(oracle.deltas) and sorted(fast.low_rank) == sorted(oracle.low_rank)
        for name, delta in oracle.deltas.items():
            assert rel(fast.deltas[name], delta) < TOL, name
        losses = torch.tensor(fast.info["losses"]), torch.tensor(oracle.info["losses"])
        assert torch.allclose(*losses, rtol=1e-5, atol=1e-7)
        if method == "rome":
            for key in ("u", "k_star", "o_star"):
                assert rel(fast.info[key], oracle.info[key]) < TOL, key


@pytest.mark.parametrize("n_facts", [1, 3])
def test_memit_step_b_together_equals_each_fact_alone(n_facts, tiny64, corpus_file):
    """MEMIT's batched step B (rank-one activation edits, one forward per window layer) gives each fact the
    deltas, factors and gap norms of the oracle's per-fact step B on its progressively edited weights."""
    model, tok = tiny64
    stats = SecondMoments(model, tok, corpus_file, 1000)
    requests = [REQUESTS[2], ERASE, REQUESTS[0]][:n_facts]
    overrides = {**SHORT, "mom2_update_weight": 50.0}
    results = {engine: compute_edits(model, tok, requests, "memit", 3,
                                     resolve_hparams("memit", model, "error-injection", {**overrides, "engine": engine}),
                                     stats)
               for engine in ("fast", "oracle")}
    for fast, oracle in zip(results["fast"], results["oracle"]):
        assert len(oracle.deltas) > 1  # a window: later layers' keys see the earlier layers' updates
        assert sorted(fast.deltas) == sorted(oracle.deltas) == sorted(fast.low_rank) == sorted(oracle.low_rank)
        for name, delta in oracle.deltas.items():
            assert rel(fast.deltas[name], delta) < TOL, name
            for got, want in zip(fast.low_rank[name], oracle.low_rank[name]):
                assert rel(got, want) < TOL, name
        gaps = torch.tensor(fast.info["gap_norms"]), torch.tensor(oracle.info["gap_norms"])
        assert len(gaps[0]) == len(oracle.deltas) + 1
        assert torch.allclose(*gaps, rtol=TOL, atol=1e-7 * float(gaps[1].max()))


def test_fact_forcing_requests_take_the_oracle_path(llama64, corpus_file):
    """Noise changes every forward, so a noised request is computed alone on the full rows, whatever the engine."""
    model, tok = llama64
    stats = SecondMoments(model, tok, corpus_file, 1000)
    noised = replace(REQUESTS[0], noise_sigma=0.5)
    results = {engine: compute_edits(model, tok, [noised, REQUESTS[1]], "rome", 2,
                                     resolve_hparams("rome", model, "fact-forcing", {**SHORT, "engine": engine}), stats)
               for engine in ("fast", "oracle")}
    (name, delta), = results["oracle"][0].deltas.items()
    assert torch.equal(results["fast"][0].deltas[name], delta)
    assert rel(results["fast"][1].deltas[name], results["oracle"][1].deltas[name]) < TOL


def test_memit_templates_share_the_batch(tiny64):
    """MEMIT's 6 rows per fact (two template groups) and several facts: one suffix batch, oracle values."""
    model, tok = tiny64
    site = family_for(model).site("block_output", 4)
    contexts = [c for g in memit_templates(model, tok) for c in g]
    schedule = replace(SCHEDULE, clamp_norm_factor=0.75, skip_final_when_minimizing=True)
    requests = [REQUESTS[2], ERASE]
    for request, got in zip(requests, optimize_target_values(model, tok, requests, site, contexts, schedule)):
        assert_same_target(got, oracle_of(model, tok, request, site, contexts, schedule))


@pytest.mark.embedded
def test_embedded_rome_v_star_fast_equals_oracle(embedded):
    """SmolLM2-135M, ROME at layer 12 with its table's schedule: 2 facts batched against the oracle."""
    model, tok = embedded
    site = family_for(model).site("mlp_down_output", 12)
    contexts = rome_templates(model, tok)
    schedule = replace(rome_schedule(resolve_hparams("rome", model, "error-injection")), steps=10)
    requests = REQUESTS[:2]
    for request, got in zip(requests, optimize_target_values(model, tok, requests, site, contexts, schedule)):
        oracle = oracle_of(model, tok, request, site, contexts, schedule)
        assert rel(got.value, oracle.value) < 1e-4
        assert torch.allclose(torch.tensor(got.losses), torch.tensor(oracle.losses), rtol=1e-4, atol=1e-5)
