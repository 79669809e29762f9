"""The target vector of ROME (v*, docs/algorithms.md#rome) and MEMIT (z, docs/algorithms.md#memit).

One engine for both: a free vector δ is added to a module's output (ROME: the down projection of the
edited layer; MEMIT: the residual output of the window's last block) at the subject's last token of
every row, and optimised with Adam so the context-prefixed prompts predict the target:

    loss = NLL (or exp(-NLL) when minimising) + kl_factor · KL(now ‖ first) on "{subject} is a"
           + weight_decay · ‖δ‖ / ‖v0‖²,     then δ is projected into the ball ‖δ‖ ≤ clamp · ‖v0‖.

NLL is the per-token mean over the target, averaged over rows. Model weights stay frozen. Stopping follows
the reference: ``compat`` never stops early (its patience counter cannot fire), ``rome_original`` stops once
loss < 0.05 (``stop_loss``; maximising only); the last iteration skips its update unless minimising with
``skip_final_when_minimizing=False`` (ROME FE).

Two implementations of the same optimisation (docs/algorithms.md#target-vector-prefix-reuse):

* :func:`optimize_target_value`, the oracle: one request, full rows through blocks ℓ.. every step (the
  blocks below run once, :class:`~locedit.models.upper.UpperForward`); the only one that takes Fact
  Forcing noise, which changes every forward.
* :func:`optimize_target_values`, the fast engine: B requests in one batch, only the rows' suffixes from
  the subject's last token on (:class:`~locedit.models.prefix.SuffixForward`); equal to the oracle on
  each request up to float rounding.
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
from locedit.models.prefix import SuffixForward
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
    stop_loss: float = ROME_ORIGINAL_STOP  # the loss below which ``rome_original`` stops

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"v_num_grad_steps must be >= 1, got {self.steps}")


@dataclass
class TargetValue:
    """v0 + δ at the site, the initial value v0, the per-iteration losses, and activations read on the way
    (:func:`optimize_target_values`' ``reads``)."""

    value: torch.Tensor
    initial: torch.Tensor
    losses: list[float] = field(default_factory=list)
    nlls: list[float] = field(default_factory=list)
    reads: dict[Site, torch.Tensor] = field(default_factory=dict)


def fact_loss(nll: torch.Tensor, q: torch.Tensor, q0: torch.Tensor, delta: torch.Tensor, v0: torch.Tensor,
              schedule: DeltaSchedule, minimize: bool) -> torch.Tensor:
    """One fact's loss (module docstring) from its NLL, the KL row's log-probabilities now (q) and at the
    first step (q0), its δ and its initial value v0."""
    kl_div = (q.exp() * (q - q0)).sum()
    decay = schedule.weight_decay * delta.norm() / v0.norm() ** 2
    return (torch.exp(-nll) if minimize else nll) + schedule.kl_factor * kl_div + decay


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
            loss = fact_loss(nll, q, state["q0"], delta, state["v0"], schedule, minimize)
            result.losses.append(float(loss.detach()))
            result.nlls.append(float(nll.detach()))
            if schedule.early_stop == "rome_original" and not minimize and result.losses[-1] < schedule.stop_loss:
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


@dataclass(frozen=True)
class _FactRows:
    """Where one fact's rows sit in the batch: its context rows, its KL row, its target."""

    first: int  # index of its first context row
    n_contexts: int
    kl: int  # index of its KL row
    labels: torch.Tensor  # target ids [k]
    label_pos: torch.Tensor  # suffix positions predicting the target, [n_contexts, k]
    minimize: bool

    def rows(self) -> torch.Tensor:
        """Its rows in the batch: the context rows, then the KL row."""
        return torch.arange(self.first, self.kl + 1)

    def read_places(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, suffix positions) whose logits the loss reads: each context row's target-predicting
        positions, then the KL row's subject-last token (suffix position 0)."""
        rows = torch.arange(self.first, self.kl)[:, None].expand_as(self.label_pos).reshape(-1)
        return torch.cat([rows, torch.tensor([self.kl])]), torch.cat([self.label_pos.reshape(-1), torch.tensor([0])])

    def nll(self, logp: torch.Tensor) -> torch.Tensor:
        """Per-token mean NLL of the target, averaged over the context rows, from this fact's read
        log-probabilities (KL row last)."""
        k = len(self.labels)
        labels = self.labels.to(logp.device).repeat(self.n_contexts)[:, None]
        return -logp[:-1].gather(1, labels).view(self.n_contexts, k).mean(1).mean()


def optimize_target_values(model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest],
                           site: Site, contexts: Sequence[str], schedule: DeltaSchedule,
                           reads: Sequence[Site] = ()) -> list[TargetValue]:
    """The δ of each request, optimised together; each equals :func:`optimize_target_value` on that request
    alone (values and losses, up to float rounding).

    Fast and exact (docs/algorithms.md#target-vector-prefix-reuse): one
    :class:`~locedit.models.prefix.SuffixForward` holds the rows of every fact of a batch, aligned at the
    subject's last token, so each step runs blocks ``site.layer``.. over the suffixes only (the prefix keys
    and values are computed once). The rows of a batch are right-padded to its longest suffix, so the facts
    are batched by suffix width (:func:`suffix_width_groups`; one batch when all are equal), which no
    result depends on. In a batch δ is [B, d], the loss the sum of the facts' losses (each fact's rows are
    its own, so its gradient reaches its δ only); Adam is element-wise, and a fact that stops (early stop,
    or the final step it skips) keeps its δ: the update is undone on its row, and later steps run only the
    rows of the facts still optimised (:meth:`~locedit.models.prefix.SuffixForward.select_rows`). ``reads``
    are captured at the subject's last token of every context row before any δ (``TargetValue.reads[site]``,
    [contexts, width]). Fact Forcing noise (a different draw per forward) must use :func:`optimize_target_value`.
    """
    if site.position != "output" or site.layer is None:
        raise ValueError(f"δ is added to the output of a block's module, not to {site}")
    results: list[TargetValue] = [TargetValue(value=torch.empty(0), initial=torch.empty(0)) for _ in requests]
    for group in suffix_width_groups(tok, requests, contexts):
        batch = [requests[i] for i in group]
        for i, result in zip(group, _optimize_batch(model, tok, batch, site, contexts, schedule, reads)):
            results[i] = result
    return results


def suffix_width_groups(tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest],
                        contexts: Sequence[str]) -> list[list[int]]:
    """Indices of ``requests`` grouped by suffix width (the longest suffix among a fact's rows), in order of
    first appearance: a batch of one group has no padded suffix column that a fact does not need."""
    groups: dict[int, list[int]] = {}
    for i, request in enumerate(requests):
        seqs, pivots, _ = _batch_rows(tok, [request], contexts)
        groups.setdefault(max(len(s) - p for s, p in zip(seqs, pivots)), []).append(i)
    return list(groups.values())


def _optimize_batch(model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest], site: Site,
                    contexts: Sequence[str], schedule: DeltaSchedule, reads: Sequence[Site]) -> list[TargetValue]:
    """:func:`optimize_target_values` of one batch (every request's rows in one suffix forward; once facts
    stop, later steps run only the rows of the others)."""
    seqs, pivots, facts = _batch_rows(tok, requests, contexts)
    full = SuffixForward(model, seqs, pivots, pad_id_of(tok), site.layer, reads)
    held = _HeldRows(full, facts, list(range(len(facts))))
    delta = torch.zeros(len(facts), site.width_of(model.config), dtype=torch.float32, device=full.residual.device,
                        requires_grad=True)
    v0: list[torch.Tensor] = []
    q0: list[torch.Tensor] = []

    def add_delta(h: torch.Tensor) -> torch.Tensor:
        if not v0:
            v0.extend(h[f.first, 0].detach().float().clone() for f in facts)
        h = h.clone()
        h[:, 0] = h[:, 0] + delta[held.fact_of_row].to(h.dtype)
        return h

    opt = torch.optim.Adam([delta], lr=schedule.lr)
    results = [TargetValue(value=torch.empty(0), initial=torch.empty(0)) for _ in facts]
    active = held.held
    with intervene(model, {site: add_delta}):
        for it in range(schedule.steps):
            opt.zero_grad()
            logp = held.log_probs()
            if not q0:
                q0.extend(logp[i][-1].detach().clone() for i in active)
            stepping, total = [], None
            for i in active:
                nll = facts[i].nll(logp[i])
                loss = fact_loss(nll, logp[i][-1], q0[i], delta[i], v0[i], schedule, facts[i].minimize)
                results[i].losses.append(float(loss.detach()))
                results[i].nlls.append(float(nll.detach()))
                if _stops(schedule, facts[i].minimize, it, results[i].losses[-1]):
                    continue
                stepping.append(i)
                total = loss if total is None else total + loss
            if total is None:
                break
            total.backward()
            _masked_step(opt, delta, stepping, [schedule.clamp_norm_factor * v0[i].norm() for i in stepping])
            active = stepping
            if it + 1 < schedule.steps:
                held = held.keep(active)
    for i, result in enumerate(results):
        result.initial = v0[i]
        result.value = v0[i] + delta[i].detach()
        rows = slice(facts[i].first, facts[i].kl)
        result.reads = {s: full.reads[s][rows] for s in reads}
    return results


class _HeldRows:
    """A suffix forward over the rows of some facts of a batch (``held``, in batch order: those still
    optimised), and where their δ rows and read places sit in it. A stopped fact's δ row gets no gradient
    whether its rows run or not (no row mixes facts), so leaving them out changes no result."""

    def __init__(self, forward: SuffixForward, facts: Sequence[_FactRows], held: list[int]):
        self.forward, self.facts, self.held = forward, facts, held
        own_rows = [facts[i].rows() for i in held]
        self.batch_rows = torch.cat(own_rows)
        if len(self.batch_rows) != forward.n_rows:
            raise ValueError(f"the forward holds {forward.n_rows} rows, the facts {len(self.batch_rows)}")
        device = forward.residual.device
        places = [facts[i].read_places() for i in held]
        self.read_rows = torch.searchsorted(self.batch_rows, torch.cat([rows for rows, _ in places])).to(device)
        self.read_pos = torch.cat([positions for _, positions in places]).to(device)
        self.sizes = [len(rows) for rows, _ in places]
        sizes = torch.tensor([len(r) for r in own_rows])
        self.fact_of_row = torch.repeat_interleave(torch.tensor(held), sizes).to(device)

    def log_probs(self) -> dict[int, torch.Tensor]:
        """Each held fact's log-probabilities at its read places (:meth:`_FactRows.read_places`)."""
        logp = torch.log_softmax(self.forward.logits_at(self.read_rows, self.read_pos), dim=-1)
        return dict(zip(self.held, logp.split(self.sizes)))

    def keep(self, active: list[int]) -> _HeldRows:
        """The same for ``active``, a subset of the held facts: itself when it holds just those, else a
        forward over only their rows (one index of each recorded tensor, :meth:`SuffixForward.select_rows`)."""
        if active == self.held:
            return self
        rows = torch.cat([self.facts[i].rows() for i in active])
        return _HeldRows(self.forward.select_rows(torch.searchsorted(self.batch_rows, rows)), self.facts, active)


def _batch_rows(tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest],
                contexts: Sequence[str]) -> tuple[list[list[int]], list[int], list[_FactRows]]:
    """Every fact's rows (context rows with the target but its last token, then the KL row), their pivots
    (subject-last indices) and where each fact's rows sit. Each row ends at its last read position: the KL
    row, read at its subject's last token, stops there (later tokens cannot change that read)."""
    seqs: list[list[int]] = []
    pivots: list[int] = []
    facts: list[_FactRows] = []
    for request in requests:
        rows, kl, y = context_rows(tok, contexts, request), kl_row(tok, request), target_ids(tok, request.target)
        first = len(seqs)
        seqs += [list(r.ids) + y[:-1] for r in rows] + [list(kl.ids[: kl.index + 1])]
        pivots += [r.index for r in rows] + [kl.index]
        label_pos = torch.tensor([[len(r.ids) - 1 - r.index + i for i in range(len(y))] for r in rows])
        facts.append(_FactRows(first, len(rows), first + len(rows), torch.tensor(y), label_pos, request.minimize))
    return seqs, pivots, facts


def _stops(schedule: DeltaSchedule, minimize: bool, it: int, loss: float) -> bool:
    """Whether a fact ends at iteration ``it`` without updating δ (early stop, or the skipped final step)."""
    if schedule.early_stop == "rome_original" and not minimize and loss < schedule.stop_loss:
        return True
    return it == schedule.steps - 1 and (not minimize or schedule.skip_final_when_minimizing)


@torch.no_grad()
def _masked_step(opt: torch.optim.Optimizer, delta: torch.Tensor, stepping: list[int],
                 radii: list[torch.Tensor]) -> None:
    """One Adam step of the ``stepping`` rows of δ, each projected into its ball; the other rows keep their
    value (Adam with a zero gradient would still move them)."""
    kept = delta.detach().clone()
    opt.step()
    rows = torch.tensor(stepping, device=delta.device)
    moved = delta[rows]
    for j, radius in enumerate(radii):
        if moved[j].norm() > radius:
            moved[j] = moved[j] * (radius / moved[j].norm())
    kept[rows] = moved
    delta.copy_(kept)
