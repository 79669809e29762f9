"""MEMIT for a single fact over a window of layers (docs/algorithms.md#memit).

Step A optimises z, the residual output of the window's last block at the subject's last token
(:mod:`locedit.edit.target_value`, 6 templates in 2 groups + the KL row, clamp 0.75; the z of several facts
together with the fast engine). Step B visits the
window bottom-up on the progressively edited model: key k_i = mean of the two template-group means,
gap ρ_i = (z − h_cur) / (R − i + 1) (mapped through the MLP's post-norm where the family has one, as Gemma-3
does: :mod:`locedit.models.post_norm`), a_i = (λC_i + k_i k_iᵀ)⁻¹ k_i in float64, ΔW_i = ρ_i a_iᵀ.
``solver="sherman_morrison"`` computes a_i = C_i⁻¹k_i / (λ + k_iᵀC_i⁻¹k_i) from the cached float64 inverse;
``compat`` solves the m×m system directly as the reference does. The model is restored before return.
With the fast engine, step B of several facts runs together, the earlier layers' updates added as rank-one
activation edits instead of weight changes (:func:`_step_b_together`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.forcing import EditNoise, edit_noise
from locedit.edit.handle import EditHandle
from locedit.edit.hparams import MemitHparams
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.edit.rows import Row, context_rows, read_at
from locedit.edit.stats import SecondMoments
from locedit.edit.target_value import DeltaSchedule, TargetValue, optimize_target_value, optimize_target_values
from locedit.edit.templates import memit_templates
from locedit.models.families import Family, Site, family_for
from locedit.models.interventions import capture, module_at, recording_calls, run_until_stopped
from locedit.models.low_rank import rank_one_edits
from locedit.models.post_norm import shift_before_norm
from locedit.models.scoring import pad_id_of, pad_right


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

    With ``hp.engine == "fast"`` the requests without Fact Forcing noise are computed together: their z are
    optimised in one batch (:func:`~locedit.edit.target_value.optimize_target_values`, on the unedited model,
    as step A is) and step B runs one forward per window layer over every fact's rows, each fact's earlier
    updates added to its own rows as rank-one activation edits (:func:`_step_b_together`). Requests with
    noise, and every request with ``engine="oracle"``, run alone on the full rows with real weight changes
    (:func:`_step_b_alone`).
    """
    if stats is None:
        raise ValueError("MEMIT needs key statistics; pass stats=")
    if hp.solver == "sherman_morrison":
        solve_with = {layer: {"c_inv64": stats.inverse(layer, torch.float64)} for layer in layers}
    elif hp.solver == "compat":
        solve_with = {layer: {"c": stats.moment(layer)} for layer in layers}
    else:
        raise ValueError(f"unknown MEMIT solver {hp.solver!r}; use 'sherman_morrison' or 'compat'")
    groups = memit_templates(model, tok, hp.template_seed)  # outside the noise hook
    window = _Window(family_for(model), sorted(layers), groups, hp.mom2_update_weight, solve_with)
    fast = [i for i, r in enumerate(requests) if hp.engine == "fast" and r.noise_sigma is None]
    batch = [requests[i] for i in fast]
    targets = optimize_target_values(model, tok, batch, window.z_site, window.contexts, memit_schedule(hp))
    together = dict(zip(fast, zip(targets, _step_b_together(model, tok, batch, targets, window))))
    results = []
    for i, request in enumerate(requests):
        if i in together:
            target, (deltas, factors, residuals) = together[i]
        else:
            with edit_noise(model, tok, request) as noise:
                target = optimize_target_value(model, tok, request, window.z_site, window.contexts,
                                               memit_schedule(hp), noise)
                deltas, factors, residuals = _step_b_alone(model, tok, request, target, window, noise)
        info = {"z": target.value, "h0": target.initial, "losses": target.losses, "nlls": target.nlls,
                "gap_norms": residuals}
        results.append(MethodResult(deltas, info, low_rank=factors))
    return results


Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # parameter name -> (ρ, a), float64
StepB = tuple[dict[str, torch.Tensor], Factors, list[float]]  # deltas, their factors, gap norms


@dataclass(frozen=True)
class _Window:
    """The layers MEMIT edits and what step B needs at each of them."""

    fam: Family
    layers: list[int]  # ascending
    groups: list[list[str]]  # the context templates in their groups
    lam: float  # mom2_update_weight
    solve_with: dict[int, dict[str, torch.Tensor]]  # layer -> update_direction's keyword

    @property
    def contexts(self) -> list[str]:
        return [c for g in self.groups for c in g]

    @property
    def z_site(self) -> Site:
        return self.fam.site("block_output", self.layers[-1])

    def update(self, model: nn.Module, j: int, keys: torch.Tensor, gap: torch.Tensor,
               out: torch.Tensor) -> tuple[str, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(parameter name, ΔW, (ρ, a)) of the window's ``j``-th layer from the template keys read at it, the
        gap z − h_cur and the down projection's output ``out`` on the plain prompt. The layer's share of the gap
        is a change of the residual stream; where a post-norm sits between the MLP and the stream, ρ is the
        change of ``out`` that moves the norm's output by that share (:func:`shift_before_norm`)."""
        layer = self.layers[j]
        weight = self.fam.down_weight(model, layer)
        k = group_mean_key(keys, self.groups)
        rho = gap / (len(self.layers) - j)
        norm = self.fam.post_norm(model, layer)
        if norm is not None:
            rho = shift_before_norm(norm, out.to(weight.dtype), rho).float()
        a = update_direction(k, self.lam, **self.solve_with[layer])
        delta = self.fam.down_update(torch.outer(rho.double(), a).to(weight.dtype)).contiguous()
        return f"{self.fam.down_name(layer)}.weight", delta, (rho.double(), a)


def _step_b_alone(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, target: TargetValue,
                  window: _Window, noise: EditNoise) -> StepB:
    """Step B of one request on its progressively edited model (real weight changes, restored on return):
    per layer, one forward reads the keys, another h_cur; a last one reads h_cur after every update."""
    rows = context_rows(tok, window.contexts, request)
    plain = context_rows(tok, ["{}"], request)
    residuals: list[float] = []
    factors: Factors = {}
    with EditHandle(model) as running:
        for j, layer in enumerate(window.layers):
            [keys] = read_at(model, tok, [window.fam.site("mlp_down_input", layer)], rows, noise)
            out, h_cur = read_at(model, tok, [window.fam.site("mlp_down_output", layer), window.z_site], plain, noise)
            gap = target.value - h_cur[0]
            residuals.append(float(gap.norm()))
            name, delta, factors[name] = window.update(model, j, keys, gap, out[0])
            running.apply({name: delta})
        deltas = dict(running.deltas)
        [h_final] = read_at(model, tok, [window.z_site], plain, noise)
    residuals.append(float((target.value - h_final[0]).norm()))
    return deltas, factors, residuals


class _WindowReplay:
    """Forwards of fixed rows that differ only from the window's first block on: the blocks below the window run
    once (their calls to the window's blocks recorded, as :class:`~locedit.models.upper.UpperForward` does), and
    each read calls the window's blocks directly, under whatever rank-one edits are in force."""

    @torch.no_grad()
    def __init__(self, model: nn.Module, tok: PreTrainedTokenizerBase, rows: Sequence[Row], window: _Window):
        ids, mask = pad_right([r.ids for r in rows], pad_id_of(tok), model.device)
        sites = [window.fam.site("block_input", layer) for layer in range(window.layers[0], window.layers[-1] + 1)]
        with recording_calls(model, sites) as calls, capture(model, [window.z_site], stop_after=window.z_site):
            run_until_stopped(model, input_ids=ids, attention_mask=mask, use_cache=False)
        self.model, self.calls = model, calls
        self.blocks = [module_at(model, site) for site in sites]
        self.at = torch.arange(len(rows), device=ids.device), torch.tensor([r.index for r in rows], device=ids.device)

    @torch.no_grad()
    def read(self, sites: Sequence[Site]) -> list[torch.Tensor]:
        """Each site's activation at each row's subject-last index, float32 [rows, width]: the window's blocks
        run from the recorded residual stream entering them."""
        with capture(self.model, sites) as got:
            hidden = self.calls[0].hidden
            for block, call in zip(self.blocks, self.calls):
                hidden = call.replay(block, hidden)
        return [got[site][self.at].float() for site in sites]


def _step_b_together(model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest],
                     targets: Sequence[TargetValue], window: _Window) -> list[StepB]:
    """Step B of each request (no Fact Forcing noise), equal to :func:`_step_b_alone` up to float rounding.

    The rows of fact i are its context rows and its plain prompt. Per window layer ONE read over every fact's
    rows gives the keys at that layer (context rows) and h_cur (plain row), with fact i's updates of the
    layers below added to its own rows as rank-one activation edits
    (:func:`~locedit.models.low_rank.rank_one_edits`: W k + ρ (aᵀ k) is (W + ρ aᵀ) k); a last read gives
    h_cur after every update. The weights are never changed, and the blocks below the window run once
    (:class:`_WindowReplay`: the updates change nothing below it).
    """
    if not requests:
        return []
    n_contexts = len(window.contexts)
    rows = [row for request in requests for row in context_rows(tok, [*window.contexts, "{}"], request)]
    per_fact = n_contexts + 1
    replay = _WindowReplay(model, tok, rows, window)
    deltas: list[dict[str, torch.Tensor]] = [{} for _ in requests]
    factors: list[Factors] = [{} for _ in requests]
    residuals: list[list[float]] = [[] for _ in requests]
    for j, layer in enumerate(window.layers):
        sites = [window.fam.site("mlp_down_input", layer), window.fam.site("mlp_down_output", layer), window.z_site]
        with rank_one_edits(model, [f for f in factors for _ in range(per_fact)]):
            keys, outs, h_cur = replay.read(sites)
        for i, target in enumerate(targets):
            plain = i * per_fact + n_contexts
            gap = target.value - h_cur[plain]
            residuals[i].append(float(gap.norm()))
            keys_i = keys[i * per_fact: plain]
            name, deltas[i][name], factors[i][name] = window.update(model, j, keys_i, gap, outs[plain])
    with rank_one_edits(model, [f for f in factors for _ in range(per_fact)]):
        [h_final] = replay.read([window.z_site])
    for i, target in enumerate(targets):
        residuals[i].append(float((target.value - h_final[i * per_fact + n_contexts]).norm()))
    return list(zip(deltas, factors, residuals))
