"""Forwards of a fixed batch that change only from one position of each row on
(docs/algorithms.md#target-vector-prefix-reuse).

ROME's v* and MEMIT's z add δ at the subject's last token of every row, at one layer ℓ. Positions before
that token (the row's *prefix*) never see δ, and blocks below ℓ never do either, so the only part of a
step's forward that changes is blocks ℓ.. over the row's *suffix* (the pivot token and everything after).
:class:`SuffixForward` computes the rest once:

1. **Alignment.** Rows are laid out so that every pivot falls in the same column P: each prefix is
   left-padded to P, each suffix right-padded to S. Position ids count the real tokens only (rotary and
   absolute positions are the row's own), and the distance between two real tokens is the same as in the
   unpadded row (sliding-window layers see the same neighbours).
2. **Prefix pass** (no gradient, once): columns < P with an HF cache that keeps every position at every
   layer; its keys and values of blocks ℓ.. are the prefix of every later attention call.
3. **Suffix pass** (no gradient, once): columns P.. with that cache, recording the arguments the model
   passes to blocks ℓ.. (position embeddings, the mask over prefix + suffix, per-layer attention types)
   and the residual stream entering block ℓ; sites listed in ``reads`` are captured at the pivot.
4. **Each step** calls blocks ℓ.. directly on the suffix with the recorded arguments, the cache replaced
   by :class:`PrefixCache` (the fixed prefix keys and values in front of the suffix's own), then the
   final norm.
5. **Fewer rows** (:meth:`SuffixForward.select_rows`): rows never interact, so a forward over a subset of
   the rows indexes what steps 2 and 3 recorded (prefix keys and values, per-row block arguments, the
   residual) instead of computing anything again.

Exact: every real suffix token attends to the same keys and values, with the same positions and mask, as
in the full forward of the unaligned rows; only the float rounding of matmuls of other shapes differs.
"""

from __future__ import annotations

import copy
import inspect
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache

from locedit.models.families import Site, family_for
from locedit.models.interventions import ModuleCall, capture, module_at, recording_calls


@lru_cache(maxsize=None)
def _cache_keyword(forward_of: type) -> str:
    return "cache" if "cache" in inspect.signature(forward_of.forward).parameters else "past_key_values"


def cache_kwargs(model: nn.Module, cache: Cache | None) -> dict[str, Any]:
    """The keyword argument that hands a KV cache to ``model``'s forward: ``cache`` in the transformers
    versions that renamed it, ``past_key_values`` before."""
    return {_cache_keyword(type(model)): cache}


class PrefixCache:
    """Stands in for the HF cache inside one block call: puts fixed keys and values before the call's own."""

    def __init__(self, keys: torch.Tensor | None, values: torch.Tensor | None):
        self.keys, self.values = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if self.keys is None:
            return key_states, value_states
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


def cache_swap(cache: PrefixCache) -> Callable[[Any], Any]:
    """Argument map of a block replay (:meth:`ModuleCall.replay`): the model's HF cache becomes ``cache``."""
    return lambda value: cache if isinstance(value, Cache) else value


def full_cache() -> DynamicCache:
    """An HF cache that keeps every position at every layer, also at sliding-window layers (Gemma 3), which
    a model's own cache trims to the window; the window is still applied by the mask the model builds."""
    return DynamicCache()


def layer_kv(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of ``layer`` from an HF cache (transformers 5 ``layers`` or 4.x ``key_cache``)."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    if hasattr(cache, "key_cache"):
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache[layer][0], cache[layer][1]


def aligned_batch(rows: Sequence[Sequence[int]], pivots: Sequence[int], pad_id: int,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(ids, mask, position ids, P) of ``rows`` with every ``pivots[i]`` moved to column P = max(pivots)."""
    if len(rows) != len(pivots) or not all(0 <= p < len(r) for r, p in zip(rows, pivots)):
        raise ValueError("every row needs a pivot inside it")
    width = max(pivots) + max(len(r) - p for r, p in zip(rows, pivots))
    first = max(pivots)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, p) in enumerate(zip(rows, pivots)):
        ids[i, first - p: first - p + len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, first - p: first - p + len(r)] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device), first


def rows_of(value: Any, rows: torch.Tensor, n_rows: int) -> Any:
    """``value`` (a recorded block argument: tensor, or tuple, list or dict of them) at ``rows`` of its
    ``n_rows``: a tensor of two or more dimensions whose first one is ``n_rows`` is per row (hidden state,
    mask, position ids and embeddings), anything else is shared (a mask or position embeddings broadcast
    over the batch, flags, the cache) and kept as it is."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.dim() >= 2 and value.shape[0] == n_rows else value
    if isinstance(value, (tuple, list)):
        return type(value)(rows_of(v, rows, n_rows) for v in value)
    if isinstance(value, dict):
        return {k: rows_of(v, rows, n_rows) for k, v in value.items()}
    return value


class SuffixForward:
    """Final hidden states over the suffixes of a fixed batch whose rows change only at blocks ``start``.. and
    only from each row's pivot on (see the module docstring). Suffix position 0 is every row's pivot."""

    def __init__(self, model: nn.Module, rows: Sequence[Sequence[int]], pivots: Sequence[int], pad_id: int,
                 start: int, reads: Sequence[Site] = ()):
        fam = family_for(model)
        self.model = model
        ids, mask, positions, first = aligned_batch(rows, pivots, pad_id, model.device)
        self.mask = mask[:, first:]
        block_sites = [fam.site("block_input", layer) for layer in range(start, fam.n_layers(model))]
        with torch.no_grad():
            cache = full_cache() if first > 0 else None
            if cache is not None:
                model.base_model(input_ids=ids[:, :first], attention_mask=mask[:, :first],
                                 position_ids=positions[:, :first], use_cache=True, **cache_kwargs(model.base_model, cache))
            self.prefix = [layer_kv(cache, layer) if cache is not None else (None, None)
                           for layer in range(start, fam.n_layers(model))]
            with recording_calls(model, block_sites) as calls, capture(model, reads) as got:
                model.base_model(input_ids=ids[:, first:], attention_mask=mask, position_ids=positions[:, first:],
                                 use_cache=cache is not None, **cache_kwargs(model.base_model, cache))
        self.calls: list[ModuleCall] = calls  # type: ignore[assignment]
        self.residual = self.calls[0].hidden.detach().clone()
        self.reads = {site: got[site][:, 0].float().clone() for site in reads}
        self.blocks = [module_at(model, site) for site in block_sites]
        self.final_norm = fam.module(model, fam.final_norm)

    @property
    def n_rows(self) -> int:
        """How many rows each step runs through blocks ``start``.."""
        return self.residual.shape[0]

    def select_rows(self, rows: torch.Tensor) -> SuffixForward:
        """This forward over ``rows`` only (indices of its rows, in that order), from what it recorded: the
        same numbers for those rows, up to the rounding of matmuls of other shapes."""
        if rows.numel() == 0:
            raise ValueError("select at least one row")
        rows = rows.to(self.residual.device)
        picked = copy.copy(self)
        picked.mask = self.mask[rows]
        picked.prefix = [(keys[rows], values[rows]) if keys is not None else (None, None)
                         for keys, values in self.prefix]
        n_rows = self.n_rows
        picked.calls = [ModuleCall(rows_of(call.args, rows, n_rows), rows_of(call.kwargs, rows, n_rows))
                        for call in self.calls]
        picked.residual = self.residual[rows]
        picked.reads = {site: read[rows] for site, read in self.reads.items()}
        return picked

    def hidden(self) -> torch.Tensor:
        """The last hidden state (after the final norm) over the suffixes, [rows, S, d_model]."""
        hidden = self.residual
        for block, call, (keys, values) in zip(self.blocks, self.calls, self.prefix):
            hidden = call.replay(block, hidden, cache_swap(PrefixCache(keys, values)))
        return self.final_norm(hidden)

    def logits_at(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """float32 logits at (rows, suffix positions) only."""
        return self.model.get_output_embeddings()(self.hidden()[rows, positions]).float()
