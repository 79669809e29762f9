"""UpperForward (blocks below the edited layer run once) equals the full forward bit for bit, values and gradients."""

from __future__ import annotations

import pytest
import torch

from locedit.models import Site, family_for, intervene
from locedit.models.interventions import active_edits
from locedit.models.scoring import pad_id_of, pad_right
from locedit.models.tokens import encode
from locedit.models.upper import UpperForward

PROMPTS = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of", "Toko Yasuda plays the"]

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(model, tok):
    return pad_right([encode(tok, p) for p in PROMPTS], pad_id_of(tok), model.device)


def loss_and_grad(model, forward: UpperForward, site: Site) -> tuple[torch.Tensor, torch.Tensor]:
    """A loss over every position's logits with a free vector added at ``site``, and its gradient."""
    delta = torch.full((site.width_of(model.config),), 0.05, requires_grad=True)
    rows = torch.arange(len(PROMPTS)).repeat_interleave(3)
    positions = torch.tensor([0, 2, 4] * len(PROMPTS))
    with intervene(model, {site: lambda h: h + delta}):
        loss = torch.log_softmax(forward.logits_at(rows, positions), -1)[:, :50].sum()
    loss.backward()
    return loss.detach(), delta.grad


def test_upper_forward_equals_the_full_forward(tiny_model):
    model, tok = tiny_model
    fam = family_for(model)
    ids, mask = batch(model, tok)
    full = UpperForward(model, ids, mask, start=0)
    assert not full.skips
    for start in (1, fam.n_layers(model) - 1):
        upper = UpperForward(model, ids, mask, start=start)
        assert upper.skips  # every family, GPT-2's absolute positions included: they are in the residual
        site = fam.site("mlp_down_output", start)
        with torch.no_grad():
            assert torch.equal(upper.hidden(), full.hidden())
        loss_full, grad_full = loss_and_grad(model, full, site)
        loss_upper, grad_upper = loss_and_grad(model, upper, site)
        assert torch.equal(loss_upper, loss_full)
        assert torch.equal(grad_upper, grad_full)


def test_model_is_untouched_after_an_error(tiny_llama):
    model, tok = tiny_llama
    ids, mask = batch(model, tok)
    blocks = list(model.model.layers)
    before = UpperForward(model, ids, mask, start=0).hidden()
    upper = UpperForward(model, ids, mask, start=1)

    def boom(hidden):
        raise RuntimeError("boom")

    last = family_for(model).site("block_output", model.config.num_hidden_layers - 1)
    with pytest.raises(RuntimeError, match="boom"), intervene(model, {last: boom}):
        upper.hidden()
    assert list(model.model.layers) == blocks and not active_edits(model)
    assert torch.equal(UpperForward(model, ids, mask, start=0).hidden(), before)
    assert torch.equal(upper.hidden(), before)


def test_no_skip_when_asked_or_at_layer_zero(tiny_llama):
    model, tok = tiny_llama
    ids, mask = batch(model, tok)
    assert not UpperForward(model, ids, mask, start=2, skip=False).skips
    assert not UpperForward(model, ids, mask, start=0).skips
