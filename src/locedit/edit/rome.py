"""ROME: a rank-one update of one layer's MLP down projection (docs/algorithms.md#rome).

u  = C⁻¹ k̄ / ‖C⁻¹ k̄‖ with k̄ the mean key over the 21 context templates (step A);
v* = the down projection's output at the subject that makes the model say the target (step B,
     :mod:`locedit.edit.target_value`);
W ← W + r uᵀ with r = (v* − o*) / (uᵀ k*), k*/o* the key and output at the plain prompt (step C), so the
edited projection maps k* exactly to v*. The bias is untouched.
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
from locedit.edit.target_value import DeltaSchedule, optimize_target_value
from locedit.edit.templates import rome_templates
from locedit.models.families import family_for


def key_direction(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, layer: int,
                  contexts: Sequence[str], c_inv: torch.Tensor | None, noise: EditNoise) -> torch.Tensor:
    """u: the unit vector C⁻¹ k̄ (or k̄ without the second-moment adjustment)."""
    key = family_for(model).site("mlp_down_input", layer)
    [keys] = read_at(model, tok, [key], context_rows(tok, contexts, request), noise)
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
    if len(layers) != 1:
        raise ValueError(f"ROME edits exactly one layer, got {list(layers)}")
    layer = layers[0]
    fam = family_for(model)
    contexts = rome_templates(model, tok, hp.template_seed)  # outside the noise hook
    c_inv = stats.inverse(layer, torch.float32) if hp.mom2_adjustment and stats is not None else None
    if hp.mom2_adjustment and stats is None:
        raise ValueError("ROME with mom2_adjustment needs key statistics; pass stats= or set mom2_adjustment=False")
    key, value = fam.site("mlp_down_input", layer), fam.site("mlp_down_output", layer)
    with edit_noise(model, tok, request) as noise:
        u = key_direction(model, tok, request, layer, contexts, c_inv, noise)
        target = optimize_target_value(model, tok, request, value, contexts, rome_schedule(hp), noise)
        k_star, o_star = read_at(model, tok, [key, value], context_rows(tok, ["{}"], request), noise)
    k_star, o_star = k_star[0], o_star[0]
    r = (target.value - o_star) / (u @ k_star)
    weight = fam.down_weight(model, layer)
    delta = fam.down_update(torch.outer(r, u)).to(weight.dtype).contiguous()
    info = {"u": u, "k_star": k_star, "o_star": o_star, "v_star": target.value, "v0": target.initial,
            "losses": target.losses, "nlls": target.nlls, "delta_norm": float((target.value - target.initial).norm())}
    name = f"{fam.down_name(layer)}.weight"
    return MethodResult({name: delta}, info, low_rank={name: (r, u)})
