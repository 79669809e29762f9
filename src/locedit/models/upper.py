"""Forwards of a fixed batch that skip the blocks below a layer (docs/algorithms.md#caches: nothing is recomputed that
does not depend on the edit).

ROME's v*, MEMIT's z and constrained fine-tuning optimise something at layer ℓ or above, so every step's
forward repeats blocks 0..ℓ-1 on the same tokens with the same result. :class:`UpperForward` runs the
model once, recording the residual stream entering block ℓ and the arguments the model passes to each
block ℓ.. (:func:`~locedit.models.interventions.recording_calls`); each call then runs only those blocks,
called directly with their recorded arguments, and the final norm.

Exact: the upper blocks see the same inputs and arguments as in the full forward, whatever the family
adds before the first block (absolute positions) or passes per layer (attention types). A forward with
an input edit that changes every call (Fact Forcing noise) must not skip: ``skip=False``.
"""

from __future__ import annotations

import torch
from torch import nn

from locedit.models.families import family_for
from locedit.models.interventions import ModuleCall, module_at, recording_calls


@torch.no_grad()
def upper_block_calls(model: nn.Module, start: int, ids: torch.Tensor, mask: torch.Tensor) -> list[ModuleCall]:
    """The calls of blocks ``start``.. in one forward of the batch; the first one's hidden state is the
    residual stream entering block ``start``."""
    fam = family_for(model)
    with recording_calls(model, [fam.site("block_input", layer) for layer in range(start, fam.n_layers(model))]) as calls:
        model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
    return calls  # type: ignore[return-value]


class UpperForward:
    """Final hidden states (and logits at chosen places) of one batch whose blocks below ``start`` never change."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, start: int, skip: bool = True):
        self.model, self.ids, self.mask, self.start = model, ids, mask, start
        self.calls = upper_block_calls(model, start, ids, mask) if skip and start > 0 else None
        if self.calls is not None:
            fam = family_for(model)
            self.residual = self.calls[0].hidden.detach().clone()
            self.blocks = [module_at(model, fam.site("block_input", layer)) for layer in range(start, fam.n_layers(model))]
            self.final_norm = fam.module(model, fam.final_norm)

    @property
    def skips(self) -> bool:
        return self.calls is not None

    def hidden(self) -> torch.Tensor:
        """The last hidden state (after the final norm), [rows, tokens, d_model]."""
        if self.calls is None:
            return self.model.base_model(input_ids=self.ids, attention_mask=self.mask, use_cache=False).last_hidden_state
        hidden = self.residual
        for block, call in zip(self.blocks, self.calls):
            hidden = call.replay(block, hidden)
        return self.final_norm(hidden)

    def logits_at(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """float32 logits at (rows, positions) only: the final hidden states there through the unembedding."""
        return self.model.get_output_embeddings()(self.hidden()[rows, positions]).float()
