"""The target vector of ROME (v*, docs/algorithms.md#rome) and MEMIT (z, docs/algorithms.md#memit).

One engine for both: a free vector δ is added to a module's output (ROME: the down projection of the
edited layer; MEMIT: the residual output of the window's last block) at the subject's last token of
every row, and optimised with Adam so the context-prefixed prompts predict the target:

    loss = NLL (or exp(-NLL) when minimising) + kl_factor · KL(now ‖ first) on "{subject} is a"
           + weight_decay · ‖δ‖ / ‖v0‖²,     then δ is projected into the ball ‖δ‖ ≤ clamp · ‖v0‖.

NLL is the per-token mean over the target, averaged over rows. Model weights stay frozen; gradients
reach only the layers above the site, and the blocks below it run once per edit. Stopping follows the reference: ``compat`` never stops early
(its patience counter cannot fire), ``rome_original`` stops once loss < 0.05 (maximising only); the
last iteration skips its update unless minimising with ``skip_final_when_minimizing=False`` (ROME FE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.forcing import EditNoise
from locedit.edit.hparams import EarlyStop
from locedit.edit.request import EditRequest
from locedit.edit.rows import context_rows, kl_row
from locedit.models.families import Site
from locedit.models.interventions import intervene
from locedit.models.scoring import pad_id_of, pad_right
from locedit.models.tokens import target_ids
from locedit.models.upper import UpperForward

ROME_ORIGINAL_STOP = 0.05


@dataclass(frozen=True)
class DeltaSchedule:
    """Optimisation settings of δ (taken from the method's hyperparameters)."""

    steps: int
    lr: float
    weight_decay: float
    clamp_norm_factor: float
    kl_factor: float
    early_stop: EarlyStop = "compat"
    skip_final_when_minimizing: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"v_num_grad_steps must be >= 1, got {self.steps}")


@dataclass
class TargetValue:
    """v0 + δ at the site, the initial value v0, and the per-iteration losses."""

    value: torch.Tensor
    initial: torch.Tensor
    losses: list[float] = field(default_factory=list)
    nlls: list[float] = field(default_factory=list)


def optimize_target_value(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, site: Site,
                          contexts: Sequence[str], schedule: DeltaSchedule, noise: EditNoise) -> TargetValue:
    """Optimise δ at ``site`` (an output site of block ``site.layer``) over ``contexts`` for ``request``; see
    the module docstring. Blocks below that layer run once, not once per step (:class:`UpperForward`)."""
    if site.position != "output" or site.layer is None:
        raise ValueError(f"δ is added to the output of a block's module, not to {site}")
    rows = context_rows(tok, contexts, request)
    kl = kl_row(tok, request)
    y = target_ids(tok, request.target)
    n_rows, k = len(rows), len(y)
    ids, mask = pad_right([list(r.ids) + y[:-1] for r in rows] + [list(kl.ids)], pad_id_of(tok), model.device)
    texts = [r.text for r in rows] + [kl.text]
    device = ids.device
    lookup = torch.tensor([r.index for r in rows] + [kl.index], device=device)
    every = torch.arange(n_rows + 1, device=device)
    label_rows = torch.arange(n_rows, device=device)[:, None].expand(n_rows, k)
    label_pos = torch.tensor([[len(r.ids) - 1 + i for i in range(k)] for r in rows], device=device)
    labels = torch.tensor(y, device=device)
    read_rows = torch.cat([label_rows.reshape(-1), torch.tensor([n_rows], device=device)])
    read_pos = torch.cat([label_pos.reshape(-1), lookup[-1:]])

    d = site.width_of(model.config)
    delta = torch.zeros(d, dtype=torch.float32, device=device, requires_grad=True)
    state: dict[str, torch.Tensor] = {}

    def add_delta(h: torch.Tensor) -> torch.Tensor:
        if "v0" not in state:
            state["v0"] = h[0, lookup[0]].detach().float().clone()
        h = h.clone()
        h[every, lookup] = h[every, lookup] + delta.to(h.dtype)
        return h

    forward = UpperForward(model, ids, mask, start=site.layer, skip=not noise.active)
    opt = torch.optim.Adam([delta], lr=schedule.lr)
    result = TargetValue(value=torch.empty(0), initial=torch.empty(0))
    minimize = request.minimize
    with intervene(model, {site: add_delta}):
        for it in range(schedule.steps):
            opt.zero_grad()
            noise.rows(texts)
            logp = torch.log_softmax(forward.logits_at(read_rows, read_pos), dim=-1)
            target_lp = logp[: n_rows * k].gather(1, labels.repeat(n_rows)[:, None]).view(n_rows, k)
            nll = -target_lp.mean(1).mean()
            q = logp[-1]
            if "q0" not in state:
                state["q0"] = q.detach().clone()
            kl_div = (q.exp() * (q - state["q0"])).sum()
            decay = schedule.weight_decay * delta.norm() / state["v0"].norm() ** 2
            loss = (torch.exp(-nll) if minimize else nll) + schedule.kl_factor * kl_div + decay
            result.losses.append(float(loss.detach()))
            result.nlls.append(float(nll.detach()))
            if schedule.early_stop == "rome_original" and not minimize and result.losses[-1] < ROME_ORIGINAL_STOP:
                break
            if it == schedule.steps - 1 and (not minimize or schedule.skip_final_when_minimizing):
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                radius = schedule.clamp_norm_factor * state["v0"].norm()
                if delta.norm() > radius:
                    delta.mul_(radius / delta.norm())
    result.initial = state["v0"]
    result.value = state["v0"] + delta.detach()
    return result

