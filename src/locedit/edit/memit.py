"""MEMIT for a single fact over a window of layers (docs/algorithms.md#memit).

Step A optimises z, the residual output of the window's last block at the subject's last token
(:mod:`locedit.edit.target_value`, 6 templates in 2 groups + the KL row, clamp 0.75; the z of several facts
together with the fast engine). Step B visits the
window bottom-up on the progressively edited model: key k_i = mean of the two template-group means,
gap ρ_i = (z − h_cur) / (R − i + 1), a_i = (λC_i + k_i k_iᵀ)⁻¹ k_i in float64, ΔW_i = ρ_i a_iᵀ.
``solver="sherman_morrison"`` computes a_i = C_i⁻¹k_i / (λ + k_iᵀC_i⁻¹k_i) from the cached float64 inverse;
``compat`` solves the m×m system directly as the reference does. The model is restored before return.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.forcing import edit_noise
from locedit.edit.handle import EditHandle
from locedit.edit.hparams import MemitHparams
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.edit.rows import context_rows, read_at
from locedit.edit.stats import SecondMoments
from locedit.edit.target_value import DeltaSchedule, optimize_target_value, optimize_target_values
from locedit.edit.templates import memit_templates
from locedit.models.families import family_for


def update_direction(k: torch.Tensor, lam: float, *, c_inv64: torch.Tensor | None = None,
                     c: torch.Tensor | None = None) -> torch.Tensor:
    """a = (λC + kkᵀ)⁻¹ k in float64: Sherman–Morrison from C⁻¹, or the direct solve from C (compat)."""
    k64 = k.double()
    if c_inv64 is not None:
        ck = c_inv64 @ k64
        return ck / (lam + k64 @ ck)
    if c is None:
        raise ValueError("update_direction needs c_inv64 (Sherman–Morrison) or c (direct solve)")
    return torch.linalg.solve(lam * c.double() + torch.outer(k64, k64), k64)


def group_mean_key(keys: torch.Tensor, groups: Sequence[Sequence[str]]) -> torch.Tensor:
    """Mean over templates within each group, then the mean of the group means."""
    means, start = [], 0
    for g in groups:
        means.append(keys[start:start + len(g)].mean(0))
        start += len(g)
    return torch.stack(means).mean(0)


def memit_schedule(hp: MemitHparams) -> DeltaSchedule:
    return DeltaSchedule(steps=hp.v_num_grad_steps, lr=hp.v_lr, weight_decay=hp.v_weight_decay,
                         clamp_norm_factor=hp.clamp_norm_factor, kl_factor=hp.kl_factor, early_stop=hp.early_stop,
                         skip_final_when_minimizing=True)


def memit(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, layers: Sequence[int],
          hp: MemitHparams, stats: SecondMoments | None) -> MethodResult:
    """Deltas of the down projections of ``layers`` (ascending window) for ``request``."""
    return memit_many(model, tok, [request], layers, hp, stats)[0]


def memit_many(model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest], layers: Sequence[int],
               hp: MemitHparams, stats: SecondMoments | None) -> list[MethodResult]:
    """Deltas of the down projections of ``layers`` for each request, each one as :func:`memit` computes it alone.

    With ``hp.engine == "fast"`` the z of the requests without Fact Forcing noise are optimised together
    (:func:`~locedit.edit.target_value.optimize_target_values`, on the unedited model, as step A is); step B
    runs per request on its own progressively edited model. Requests with noise, and every request with
    ``engine="oracle"``, optimise z alone on the full rows.
    """
    if stats is None:
        raise ValueError("MEMIT needs key statistics; pass stats=")
    layers = sorted(layers)
    fam = family_for(model)
    groups = memit_templates(model, tok, hp.template_seed)  # outside the noise hook
    contexts = [c for g in groups for c in g]
    if hp.solver == "sherman_morrison":
        solve_with = {layer: {"c_inv64": stats.inverse(layer, torch.float64)} for layer in layers}
    elif hp.solver == "compat":
        solve_with = {layer: {"c": stats.moment(layer)} for layer in layers}
    else:
        raise ValueError(f"unknown MEMIT solver {hp.solver!r}; use 'sherman_morrison' or 'compat'")
    z_site = fam.site("block_output", layers[-1])
    fast = [i for i, r in enumerate(requests) if hp.engine == "fast" and r.noise_sigma is None]
    targets = dict(zip(fast, optimize_target_values(model, tok, [requests[i] for i in fast], z_site, contexts,
                                                    memit_schedule(hp))))
    results = []
    for i, request in enumerate(requests):
        with edit_noise(model, tok, request) as noise, EditHandle(model) as running:
            target = targets[i] if i in targets else optimize_target_value(model, tok, request, z_site, contexts,
                                                                           memit_schedule(hp), noise)
            rows = context_rows(tok, contexts, request)
            plain = context_rows(tok, ["{}"], request)
            residuals: list[float] = []
            factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for j, layer in enumerate(layers):
                [keys] = read_at(model, tok, [fam.site("mlp_down_input", layer)], rows, noise)
                k = group_mean_key(keys, groups)
                [h_cur] = read_at(model, tok, [z_site], plain, noise)
                gap = target.value - h_cur[0]
                residuals.append(float(gap.norm()))
                rho = gap / (len(layers) - j)
                a = update_direction(k, hp.mom2_update_weight, **solve_with[layer])
                weight = fam.down_weight(model, layer)
                delta = fam.down_update(torch.outer(rho.double(), a).to(weight.dtype)).contiguous()
                name = f"{fam.down_name(layer)}.weight"
                factors[name] = (rho.double(), a)
                running.apply({name: delta})
            deltas = dict(running.deltas)
            [h_final] = read_at(model, tok, [z_site], plain, noise)
        residuals.append(float((target.value - h_final[0]).norm()))
        info = {"z": target.value, "h0": target.initial, "losses": target.losses, "nlls": target.nlls,
                "gap_norms": residuals}
        results.append(MethodResult(deltas, info, low_rank=factors))
    return results
