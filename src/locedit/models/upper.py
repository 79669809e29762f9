"""Forwards of a fixed batch that skip the blocks below a layer (docs/algorithms.md#caches: nothing is recomputed that
does not depend on the edit).

ROME's v*, MEMIT's z and constrained fine-tuning optimise something at layer ℓ or above, so every step's
forward repeats blocks 0..ℓ-1 on the same tokens with the same result. :class:`UpperForward` runs them
once, keeps the residual stream entering block ℓ, and on each call runs only blocks ℓ.. (the model's
block list is swapped for its tail and the cached states enter as ``inputs_embeds``).

Exact up to float rounding. It falls back to the full forward where the shortcut would not be exact:
families that add an absolute position embedding to ``inputs_embeds`` (GPT-2), models whose layers do
not all share one attention type (their masks are looked up by layer index), and forwards with an input
hook that changes every call (Fact Forcing noise: ``skip=False``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from locedit.models.families import family_for
from locedit.models.hooks import StopForward, run_until_stopped

ABSOLUTE_POSITION_FAMILIES = frozenset({"gpt2"})


def can_skip_lower_blocks(model: nn.Module) -> bool:
    """Whether :class:`UpperForward` can start this model at an inner block exactly."""
    if family_for(model).name in ABSOLUTE_POSITION_FAMILIES:
        return False
    layer_types = getattr(model.config, "layer_types", None)
    return not layer_types or len(set(layer_types)) == 1


def _block_list(model: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the model's list of blocks."""
    parent, _, attr = family_for(model).block.removesuffix(".{}").rpartition(".")
    return model.get_submodule(parent), attr


@contextmanager
def blocks_from(model: nn.Module, start: int) -> Iterator[None]:
    """Inside the block the model has only blocks ``start``.. (the originals come back on exit)."""
    parent, attr = _block_list(model)
    blocks = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(blocks)[start:]))
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


@torch.no_grad()
def residual_entering(model: nn.Module, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The residual stream entering block ``layer`` (its hidden-state input); the forward stops there."""
    store: dict[str, torch.Tensor] = {}

    def grab(module, args, kwargs):
        store["h"] = args[0] if args else kwargs["hidden_states"]
        raise StopForward

    handle = model.get_submodule(family_for(model).block_name(layer)).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        run_until_stopped(model.base_model, input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        handle.remove()
    return store["h"].detach().clone()


class UpperForward:
    """Final hidden states (and logits at chosen places) of one batch whose blocks below ``start`` never change."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, start: int, skip: bool = True):
        self.model, self.ids, self.mask, self.start = model, ids, mask, start
        self.residual = (residual_entering(model, start, ids, mask)
                         if skip and start > 0 and can_skip_lower_blocks(model) else None)

    @property
    def skips(self) -> bool:
        return self.residual is not None

    def hidden(self) -> torch.Tensor:
        """The last hidden state (after the final norm), [rows, tokens, d_model]."""
        base = self.model.base_model
        if self.residual is None:
            return base(input_ids=self.ids, attention_mask=self.mask, use_cache=False).last_hidden_state
        with blocks_from(self.model, self.start):
            return base(inputs_embeds=self.residual, attention_mask=self.mask, use_cache=False).last_hidden_state

    def logits_at(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """float32 logits at (rows, positions) only: the final hidden states there through the unembedding."""
        return self.model.get_output_embeddings()(self.hidden()[rows, positions]).float()
