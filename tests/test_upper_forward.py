"""UpperForward (blocks below the edited layer run once) equals the full forward, values and gradients."""

from __future__ import annotations

import pytest
import torch

from locedit.models import family_for
from locedit.models.hooks import hooked
from locedit.models.scoring import pad_id_of, pad_right
from locedit.models.tokens import encode
from locedit.models.upper import UpperForward, can_skip_lower_blocks

PROMPTS = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of", "Toko Yasuda plays the"]

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(model, tok):
    return pad_right([encode(tok, p) for p in PROMPTS], pad_id_of(tok), model.device)


def loss_and_grad(model, forward: UpperForward, site: str, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A loss over every position's logits with a free vector added at ``site``, and its gradient."""
    delta = torch.full((width,), 0.05, requires_grad=True)
    add = lambda module, inputs, output: output + delta  # noqa: E731
    rows = torch.arange(len(PROMPTS)).repeat_interleave(3)
    positions = torch.tensor([0, 2, 4] * len(PROMPTS))
    with hooked(model, outputs={site: add}):
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
        assert upper.skips == can_skip_lower_blocks(model)
        assert upper.skips == (fam.name != "gpt2")  # GPT-2 adds absolute positions to inputs_embeds
        site = fam.down_name(start)
        width = model.config.hidden_size
        with torch.no_grad():
            torch.testing.assert_close(upper.hidden(), full.hidden(), atol=1e-5, rtol=1e-5)
        loss_full, grad_full = loss_and_grad(model, full, site, width)
        loss_upper, grad_upper = loss_and_grad(model, upper, site, width)
        torch.testing.assert_close(loss_upper, loss_full, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(grad_upper, grad_full, atol=1e-4, rtol=1e-4)


def test_block_list_is_restored_even_after_an_error(tiny_llama):
    model, tok = tiny_llama
    ids, mask = batch(model, tok)
    blocks = model.model.layers
    upper = UpperForward(model, ids, mask, start=1)

    def boom(module, inputs, output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), hooked(model, outputs={"model.norm": boom}):
        upper.hidden()
    assert model.model.layers is blocks and len(blocks) == model.config.num_hidden_layers


def test_no_skip_when_asked_or_at_layer_zero(tiny_llama):
    model, tok = tiny_llama
    ids, mask = batch(model, tok)
    assert not UpperForward(model, ids, mask, start=2, skip=False).skips
    assert not UpperForward(model, ids, mask, start=0).skips
