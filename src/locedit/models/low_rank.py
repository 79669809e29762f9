"""Rank-one weight edits applied as activation edits, a different one on each row of a batch (Hase et al. 2023,
Sec. 3.2 for ROME's and MEMIT's rank-one updates).

An edited down projection maps a key k to (W + left rightᵀ) k = W k + left (rightᵀ k). Adding
``left_i (right_iᵀ k)`` to the projection's output on the rows of fact i, with k that projection's own
input on those rows, gives every row the output of its own fact's edited weights while the weights stay
untouched: the post-edit states of B facts come out of one forward. Each edited layer is one pair of sites
(``mlp_down_input`` read, ``mlp_down_output`` changed), so MEMIT's layers compose as they do in the model.

>>> import torch
>>> from locedit.models import tiny, family_for
>>> model, tok = tiny("llama")
>>> fam = family_for(model)
>>> name = f"{fam.down_name(2)}.weight"
>>> d_model, d_mlp = fam.down_weight(model, 2).shape
>>> factors = {name: (torch.randn(d_model), torch.randn(d_mlp))}
>>> ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
>>> with rank_one_edits(model, [factors, {}]):        # row 0 edited, row 1 not
...     edited = model(input_ids=ids).logits
>>> plain = model(input_ids=ids).logits
>>> bool(torch.equal(edited[1], plain[1])), bool(torch.allclose(edited[0], plain[0]))
(True, False)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from locedit.models.families import family_for
from locedit.models.interventions import Edit, intervene

Factors = tuple[torch.Tensor, torch.Tensor]  # (left [d_model], right [d_mlp]) of one down projection's update
LowRank = Mapping[str, Factors]  # parameter name -> factors (:attr:`locedit.edit.result.MethodResult.low_rank`)


def factors_by_layer(model: nn.Module, low_rank: LowRank) -> dict[int, Factors]:
    """``low_rank`` keyed by layer; an error for a parameter that is not a down-projection weight."""
    fam = family_for(model)
    layer_of = {f"{fam.down_name(layer)}.weight": layer for layer in range(fam.n_layers(model))}
    unknown = sorted(set(low_rank) - set(layer_of))
    if unknown:
        raise ValueError(f"rank-one factors of {', '.join(unknown)}: only down-projection weights can be "
                         "evaluated as activation edits")
    return {layer_of[name]: factors for name, factors in low_rank.items()}


def _row_factors(per_row: Sequence[Mapping[int, Factors]], layer: int, device: torch.device,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows, d_model] lefts and [rows, d_mlp] rights at ``layer`` (zeros for rows its edit does not touch)."""
    some_left, some_right = next(factors[layer] for factors in per_row if layer in factors)
    left = torch.zeros(len(per_row), some_left.shape[0], dtype=dtype, device=device)
    right = torch.zeros(len(per_row), some_right.shape[0], dtype=dtype, device=device)
    for row, factors in enumerate(per_row):
        if layer in factors:
            left[row], right[row] = (t.detach().to(device=device, dtype=dtype) for t in factors[layer])
    return left, right


def _rank_one_pair(left: torch.Tensor, right: torch.Tensor) -> tuple[Edit, Edit]:
    """(read the key, add left (rightᵀ key)) edits of one down projection."""
    keys: list[torch.Tensor] = []

    def read(key: torch.Tensor) -> None:
        keys.append(key)

    def add(value: torch.Tensor) -> torch.Tensor:
        key = keys.pop()
        if key.shape[0] != left.shape[0]:
            raise ValueError(f"rank-one edits were set for {left.shape[0]} rows, the forward has {key.shape[0]}")
        coef = torch.einsum("btm,bm->bt", key.to(right.dtype), right)
        return value + (coef[..., None] * left[:, None, :]).to(value.dtype)

    return read, add


@contextmanager
def rank_one_edits(model: nn.Module, per_row: Sequence[LowRank]) -> Iterator[None]:
    """Every forward inside the block runs row r under the rank-one edits ``per_row[r]`` (parameter name ->
    factors; empty: the unedited model), without touching the weights; removed on exit. The additions are
    computed in float32, or in float64 for a float64 model."""
    by_layer = [factors_by_layer(model, low_rank) for low_rank in per_row]
    fam = family_for(model)
    edits: dict = {}
    for layer in sorted({layer for factors in by_layer for layer in factors}):
        dtype = torch.promote_types(fam.down_weight(model, layer).dtype, torch.float32)
        read, add = _rank_one_pair(*_row_factors(by_layer, layer, model.device, dtype))
        edits[fam.site("mlp_down_input", layer)] = read
        edits[fam.site("mlp_down_output", layer)] = add
    with intervene(model, edits):
        yield
