"""Exact restore: edits never leave a trace in the weights, also after exceptions."""

from __future__ import annotations

import itertools

import pytest
import torch

from locedit.edit.handle import EditHandle, snapshot, weights_equal
from locedit.edit.methods import resolve_hparams
from locedit.edit.methods import apply_edit
from locedit.edit.request import EditRequest
from locedit.edit.stats import SecondMoments
from locedit.models import TINY_FAMILIES, tiny

FAST = {"rome": {"v_num_grad_steps": 2}, "memit": {"v_num_grad_steps": 2, "mom2_update_weight": 50.0},
        "ft-1": {"num_steps": 2, "norm_constraint": 1e-2, "loss_threshold": 1e-6},
        "ft-5": {"num_steps": 2, "norm_constraint": 1e-2, "loss_threshold": 1e-6}}
PROBLEMS = {"maximize": "error-injection", "minimize": "fact-erasure"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt2_stats(tiny_gpt2, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("\n\n".join(f"paragraph {i} about rivers, cities and painters of the north." * 3 for i in range(40)))
    model, tok = tiny_gpt2
    return SecondMoments(model, tok, path, 1200)


def test_hundred_mixed_edits_restore_bitwise(tiny_gpt2, gpt2_stats):
    """GPT-2 has Conv1D weights and biases, so both layouts and bias restores are exercised."""
    model, tok = tiny_gpt2
    snap = snapshot(model)
    combos = itertools.cycle(itertools.product(("rome", "memit", "ft-1", "ft-5"), range(6), ("maximize", "minimize")))
    changed = 0
    for i, (method, layer, objective) in zip(range(100), combos):
        hp = resolve_hparams(method, model, PROBLEMS[objective], FAST[method])
        target = "Paris" if objective == "maximize" else "French"
        req = EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", target, objective=objective,
                          noise_sigma=0.3 if i % 7 == 0 else None)
        with apply_edit(model, tok, req, method, (layer + i) % 6, hparams=hp, stats=gpt2_stats) as h:
            changed += not weights_equal(model, snap)
            params = dict(model.named_parameters())
            for name, delta in h.deltas.items():  # the handle's deltas are what was added
                assert torch.allclose(params[name] - snap[name], delta, atol=1e-6)
        assert weights_equal(model, snap), f"edit {i} ({method}, layer {layer}) left the weights changed"
    assert changed == 100
    assert not any(p.requires_grad for p in model.parameters())


def test_restore_after_an_exception_inside_the_block(tiny_gpt2, gpt2_stats):
    model, tok = tiny_gpt2
    snap = snapshot(model)
    req = EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "Paris")
    hp = resolve_hparams("rome", model, "error-injection", FAST["rome"])
    with pytest.raises(ZeroDivisionError):
        with apply_edit(model, tok, req, "rome", 2, hparams=hp, stats=gpt2_stats):
            assert not weights_equal(model, snap)
            1 / 0
    assert weights_equal(model, snap)


def test_handle_restore_is_idempotent_and_accumulates(tiny_llama):
    model, _ = tiny_llama
    snap = snapshot(model)
    name = "model.layers.1.mlp.down_proj.weight"
    delta = torch.full_like(snap[name], 1e-3)
    handle = EditHandle(model, {name: delta}, method="manual", layers=[1])
    handle.apply({name: delta})
    assert torch.allclose(dict(model.named_parameters())[name], snap[name] + 2e-3)
    assert torch.equal(handle.deltas[name], 2 * delta)
    handle.restore()
    handle.restore()
    assert weights_equal(model, snap) and not handle.applied
    with pytest.raises(KeyError, match="no parameter"):
        EditHandle(model, {"nope.weight": delta})
    with pytest.raises(ValueError, match="shape"):
        EditHandle(model, {name: delta.T})
    assert weights_equal(model, snap)


# -- restore at scale: 1,000 mixed edits over every tiny family ---------------------------------------
REQUESTS = {  # problem -> (objective, which target, subject noise), the request shape each problem edits with
    "error-injection": ("maximize", "Paris", None), "tracing-reversal": ("maximize", "French", 0.3),
    "fact-erasure": ("minimize", "French", None), "fact-amplification": ("maximize", "French", None),
    "fact-forcing": ("maximize", "French", 0.3)}
EDITS_PER_FAMILY = 200


def state(model) -> dict[str, torch.Tensor]:
    """Clones of every parameter and every buffer."""
    return {f"{kind}:{name}": t.detach().clone()
            for kind, items in (("param", model.named_parameters()), ("buffer", model.named_buffers()))
            for name, t in items}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_thousand_mixed_edits_over_every_family_restore_every_tensor_bitwise(family, tmp_path):
    """200 edits per family x 5 families: every method, every problem, every layer, then bitwise equality."""
    model, tok = tiny(family)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(f"paragraph {i} about rivers, cities and painters of the north." * 3
                                  for i in range(40)))
    stats = SecondMoments(model, tok, corpus, 1200)
    before = state(model)
    combos = itertools.cycle(itertools.product(FAST, REQUESTS, range(6)))
    changed = 0
    for i, (method, problem, layer) in zip(range(EDITS_PER_FAMILY), combos):
        objective, target, sigma = REQUESTS[problem]
        hp = resolve_hparams(method, model, problem, FAST[method])
        req = EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", target,
                          objective=objective, noise_sigma=sigma)
        with apply_edit(model, tok, req, method, layer, hparams=hp, stats=stats):
            changed += any(not torch.equal(p, before[f"param:{n}"]) for n, p in model.named_parameters())
    after = state(model)
    assert after.keys() == before.keys()
    assert [n for n in before if not torch.equal(before[n], after[n])] == []
    # a fine-tuning edit whose loss starts below its threshold leaves the weights as they are
    assert changed >= 0.85 * EDITS_PER_FAMILY
