"""ROME: a rank-one update of one layer's MLP down projection (docs/algorithms.md#rome).

u  = C⁻¹ k̄ / ‖C⁻¹ k̄‖ with k̄ the mean key over the 21 context templates (step A);
v* = the down projection's output at the subject that makes the model say the target (step B,
     :mod:`locedit.edit.target_value`);
W ← W + r uᵀ with r = (v* − o*) / (uᵀ k*), k*/o* the key and output at the plain prompt (step C), so the
edited projection maps k* exactly to v*. The bias is untouched.

:func:`rome_many` computes several requests at one layer with one batched step B (the fast engine of
:mod:`locedit.edit.target_value`, whose first forward also gives k̄, k* and o*); :func:`rome` is its
one-request case.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.forcing import EditNoise, edit_noise
from locedit.edit.hparams import RomeHparams
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.edit.rows import context_rows, read_at
from locedit.edit.stats import SecondMoments
from locedit.edit.target_value import DeltaSchedule, TargetValue, optimize_target_value, optimize_target_values
from locedit.edit.templates import rome_templates
from locedit.models.families import Family, family_for


def key_direction(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, layer: int,
                  contexts: Sequence[str], c_inv: torch.Tensor | None, noise: EditNoise) -> torch.Tensor:
    """u: the unit vector C⁻¹ k̄ (or k̄ without the second-moment adjustment)."""
    key = family_for(model).site("mlp_down_input", layer)
    [keys] = read_at(model, tok, [key], context_rows(tok, contexts, request), noise)
    return unit_direction(keys, c_inv)


def unit_direction(keys: torch.Tensor, c_inv: torch.Tensor | None) -> torch.Tensor:
    """C⁻¹ k̄ / ‖C⁻¹ k̄‖ (or k̄ / ‖k̄‖) with k̄ the mean of ``keys`` [contexts, d_mlp]."""
    u = keys.mean(0)
    if c_inv is not None:
        u = c_inv.float() @ u
    return u / u.norm()


def rome_schedule(hp: RomeHparams) -> DeltaSchedule:
    return DeltaSchedule(steps=hp.v_num_grad_steps, lr=hp.v_lr, weight_decay=hp.v_weight_decay,
                         clamp_norm_factor=hp.clamp_norm_factor, kl_factor=hp.kl_factor, early_stop=hp.early_stop,
                         skip_final_when_minimizing=False)


def rome(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, layers: Sequence[int],
         hp: RomeHparams, stats: SecondMoments | None) -> MethodResult:
    """The rank-one delta of the down projection at ``layers[0]`` for ``request``."""
    return rome_many(model, tok, [request], layers, hp, stats)[0]


def rome_many(model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest], layers: Sequence[int],
              hp: RomeHparams, stats: SecondMoments | None) -> list[MethodResult]:
    """The rank-one delta of the down projection at ``layers[0]`` for each request, each one as :func:`rome`
    computes it alone.

    With ``hp.engine == "fast"`` the requests without Fact Forcing noise share one
    :func:`~locedit.edit.target_value.optimize_target_values`, whose first forward also gives k̄ (over the
    context rows), k* and o* (the first context template is the plain prompt, "{}"). Requests with noise,
    and every request with ``engine="oracle"``, are computed one by one on the full rows.
    """
    if len(layers) != 1:
        raise ValueError(f"ROME edits exactly one layer, got {list(layers)}")
    layer = layers[0]
    fam = family_for(model)
    contexts = rome_templates(model, tok, hp.template_seed)  # outside the noise hook
    c_inv = stats.inverse(layer, torch.float32) if hp.mom2_adjustment and stats is not None else None
    if hp.mom2_adjustment and stats is None:
        raise ValueError("ROME with mom2_adjustment needs key statistics; pass stats= or set mom2_adjustment=False")
    if contexts[0] != "{}":
        raise ValueError(f"ROME's first context template must be the plain prompt '{{}}', got {contexts[0]!r}")
    key, value = fam.site("mlp_down_input", layer), fam.site("mlp_down_output", layer)
    fast = [i for i, r in enumerate(requests) if hp.engine == "fast" and r.noise_sigma is None]
    results: dict[int, MethodResult] = {}
    targets = optimize_target_values(model, tok, [requests[i] for i in fast], value, contexts, rome_schedule(hp),
                                     reads=[key, value])
    for i, target in zip(fast, targets):
        keys = target.reads[key]
        results[i] = _rank_one(fam, model, layer, unit_direction(keys, c_inv), keys[0], target.reads[value][0], target)
    for i, request in enumerate(requests):
        if i in results:
            continue
        with edit_noise(model, tok, request) as noise:
            u = key_direction(model, tok, request, layer, contexts, c_inv, noise)
            target = optimize_target_value(model, tok, request, value, contexts, rome_schedule(hp), noise)
            k_star, o_star = read_at(model, tok, [key, value], context_rows(tok, ["{}"], request), noise)
        results[i] = _rank_one(fam, model, layer, u, k_star[0], o_star[0], target)
    return [results[i] for i in range(len(requests))]


def _rank_one(fam: Family, model: nn.Module, layer: int, u: torch.Tensor, k_star: torch.Tensor, o_star: torch.Tensor,
              target: TargetValue) -> MethodResult:
    """W ← W + r uᵀ with r = (v* − o*) / (uᵀ k*), and its diagnostics."""
    r = (target.value - o_star) / (u @ k_star)
    weight = fam.down_weight(model, layer)
    delta = fam.down_update(torch.outer(r, u)).to(weight.dtype).contiguous()
    info = {"u": u, "k_star": k_star, "o_star": o_star, "v_star": target.value, "v0": target.initial,
            "losses": target.losses, "nlls": target.nlls, "delta_norm": float((target.value - target.initial).norm())}
    name = f"{fam.down_name(layer)}.weight"
    return MethodResult({name: delta}, info, low_rank={name: (r, u)})
