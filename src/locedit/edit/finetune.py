"""Constrained fine-tuning of the MLP down projection(s): FT-1 and FT-5 (docs/algorithms.md#constrained-fine-tuning).

Weight and (where one exists) bias of the down projection of every layer in the set are trained with
Adam (lr 5e-4) on the plain prompt followed by the target, ``n_copies`` rows (10 under Fact Forcing,
each with its own noise). LP is the summed target log-probability over tokens and copies; the loss is
−LP, or exp(LP) = p(target) when minimising (Fact Erasure). A step is taken only while loss ≥ 0.01;
after every iteration the tensors are clamped to the original ± ``norm_constraint`` (an L-inf bound);
maximising runs stop after ``patience`` consecutive sub-threshold iterations. The trained tensors are
restored before return; the result is their deltas.

:func:`finetune_many` trains B facts in one batch without touching the weights: each fact has its own dense
deltas, added to the down projections' outputs on its rows, and its own stopping and Adam state
(:class:`~locedit.edit.fact_adam.FactAdam`), so each fact's result equals :func:`finetune`'s up to rounding.
Fact Forcing requests form a batch of their own: each fact's rows get its own noise stream
(:class:`~locedit.edit.forcing.StackedNoise`), and every forward starts from the embeddings.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.fact_adam import FactAdam
from locedit.edit.forcing import EditNoise, StackedNoise, edit_noise, subject_noise
from locedit.edit.hparams import FtHparams
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.models.families import Family, Site, family_for
from locedit.models.interventions import Edit, intervene
from locedit.models.scoring import pad_id_of, pad_right
from locedit.models.tokens import encode, target_ids
from locedit.models.upper import UpperForward


def trained_parameters(model: nn.Module, layers: Sequence[int]) -> dict[str, nn.Parameter]:
    """Weight and bias (if any) of the down projection of each layer, by parameter name."""
    fam = family_for(model)
    params = dict(model.named_parameters())
    names = [f"{fam.down_name(layer)}.{kind}" for layer in layers for kind in ("weight", "bias")]
    return {n: params[n] for n in names if n in params}


def finetune(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, layers: Sequence[int],
             hp: FtHparams, stats: object = None) -> MethodResult:
    """Deltas of the down projections of ``layers`` after constrained fine-tuning towards ``request``."""
    params = trained_parameters(model, layers)
    originals = {n: p.detach().clone() for n, p in params.items()}
    prompt_ids, y = encode(tok, request.prompt), target_ids(tok, request.target)
    ids, mask = pad_right([prompt_ids + y] * hp.n_copies, pad_id_of(tok), model.device)
    rows = torch.arange(hp.n_copies, device=ids.device)[:, None].expand(-1, len(y)).reshape(-1)
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(y) - 1, device=ids.device).repeat(hp.n_copies)
    labels = torch.tensor(y, device=ids.device).repeat(hp.n_copies)
    losses: list[float] = []
    steps_taken, below = 0, 0
    try:
        for p in params.values():
            p.requires_grad_(True)
        opt = torch.optim.Adam(list(params.values()), lr=hp.lr, weight_decay=0.0)
        with edit_noise(model, tok, request) as noise:
            forward = UpperForward(model, ids, mask, start=min(layers), skip=not noise.active)
            for _ in range(hp.num_steps):
                opt.zero_grad()
                noise.rows([request.prompt] * hp.n_copies)
                logp = torch.log_softmax(forward.logits_at(rows, positions), dim=-1)
                lp = logp.gather(1, labels[:, None]).sum()
                loss = lp.exp() if request.minimize else -lp
                losses.append(float(loss.detach()))
                if losses[-1] >= hp.loss_threshold:
                    loss.backward()
                    opt.step()
                    steps_taken += 1
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(torch.clamp(p, originals[n] - hp.norm_constraint, originals[n] + hp.norm_constraint))
                below = below + 1 if losses[-1] < hp.loss_threshold else 0
                if not request.minimize and below >= hp.patience:
                    break
        deltas = {n: (p.detach() - originals[n]).clone() for n, p in params.items()}
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.requires_grad_(False)
                p.copy_(originals[n])
                p.grad = None
    return MethodResult(deltas, {"losses": losses, "steps_taken": steps_taken})


def finetune_many(model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest],
                  layers: Sequence[int], hp: FtHparams, stats: object = None) -> list[MethodResult]:
    """:func:`finetune`'s result for each request, trained together (:class:`FactBatch`) in two batches: the
    requests without Fact Forcing noise (the blocks below the edited layers run once) and the noised ones
    (fresh noise in every forward, so every forward runs the whole model)."""
    results: dict[int, MethodResult] = {}
    for noised in (False, True):
        group = [i for i, r in enumerate(requests) if (r.noise_sigma is not None) == noised]
        results.update(zip(group, FactBatch(model, tok, [requests[i] for i in group], layers, hp).train()))
    return [results[i] for i in range(len(requests))]


class FactDeltas:
    """Dense deltas of the down projections of ``layers``, one per fact: ``weight[layer]`` is
    ``[B, d_model, d_mlp]`` (output x input, whatever the stored layout), ``bias[layer]`` ``[B, d_model]`` where
    the projection has a bias. :meth:`edits` adds fact i's deltas to the projections' outputs on its rows."""

    def __init__(self, model: nn.Module, layers: Sequence[int], n_facts: int):
        self.fam: Family = family_for(model)
        self.layers = list(layers)
        params = trained_parameters(model, layers)
        self.names = {layer: self.fam.down_name(layer) for layer in self.layers}
        self.weight = {layer: self._zeros(n_facts, self.fam.down_weight(model, layer)) for layer in self.layers}
        self.bias = {layer: self._zeros(n_facts, params[f"{self.names[layer]}.bias"]) for layer in self.layers
                     if f"{self.names[layer]}.bias" in params}

    @staticmethod
    def _zeros(n_facts: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros((n_facts, *like.shape), dtype=like.dtype, device=like.device, requires_grad=True)

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [*self.weight.values(), *self.bias.values()]

    def edits(self, row_fact: torch.Tensor) -> dict[Site, Edit]:
        """Site edits that add ``ΔW_i k (+ Δb_i)`` to the down projections' outputs of each row of fact
        ``i = row_fact[row]`` (the input k is read at the same module's input)."""
        edits: dict[Site, Edit] = {}
        for layer in self.layers:
            keys: list[torch.Tensor] = []
            edits[self.fam.site("mlp_down_input", layer)] = keys.append  # returns None: a read
            edits[self.fam.site("mlp_down_output", layer)] = self._adder(layer, row_fact, keys)
        return edits

    def _adder(self, layer: int, row_fact: torch.Tensor, keys: list[torch.Tensor]) -> Edit:
        def add(out: torch.Tensor) -> torch.Tensor:
            out = out + torch.einsum("rtd,rod->rto", keys.pop(), self.weight[layer][row_fact])
            return out + self.bias[layer][row_fact][:, None, :] if layer in self.bias else out

        return add

    @torch.no_grad()
    def clamp_(self, bound: float) -> None:
        """The L-inf constraint |Δ| ≤ ``bound``, element-wise."""
        for delta in self.tensors:
            delta.clamp_(-bound, bound)

    def result(self, fact: int) -> dict[str, torch.Tensor]:
        """Fact ``fact``'s deltas by parameter name, in the stored layout."""
        out = {f"{self.names[layer]}.weight": self.fam.down_update(self.weight[layer][fact].detach())
               for layer in self.layers}
        out.update({f"{self.names[layer]}.bias": self.bias[layer][fact].detach() for layer in self.bias})
        return {name: delta.clone(memory_format=torch.contiguous_format) for name, delta in out.items()}


class FactRows:
    """The rows of some facts (prompt + target, ``n_copies`` rows each, right-padded) and their per-fact
    target log-probabilities, the blocks below ``start`` run once; with ``noises`` (one per fact) each
    fact's rows are noised by its own stream in every forward, which then runs the whole model."""

    def __init__(self, model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest],
                 facts: Sequence[int], n_copies: int, start: int, noises: Sequence[EditNoise] | None = None):
        self.facts = list(facts)
        pairs = [(encode(tok, r.prompt), target_ids(tok, r.target)) for r in requests for _ in range(n_copies)]
        ids, mask = pad_right([p + y for p, y in pairs], pad_id_of(tok), model.device)
        device = ids.device
        self.noise = {} if noises is None else {family_for(model).site("embed_output"): StackedNoise(noises, n_copies)}
        self.forward = UpperForward(model, ids, mask, start=start, skip=noises is None)
        self.row_fact = torch.tensor([f for f in self.facts for _ in range(n_copies)], device=device)
        self.rows = torch.cat([torch.full((len(y),), j) for j, (_, y) in enumerate(pairs)]).to(device)
        self.positions = torch.cat([torch.arange(len(p) - 1, len(p) + len(y) - 1) for p, y in pairs]).to(device)
        self.labels = torch.tensor([i for _, y in pairs for i in y], device=device)
        self.token_fact = self.rows // n_copies  # the fact's place in this batch
        self.minimize = torch.tensor([r.minimize for r in requests], device=device)

    def losses(self, deltas: FactDeltas) -> torch.Tensor:
        """Each fact's loss with its deltas added: −LP, or exp(LP) when minimising; LP summed over tokens and copies."""
        with intervene(self.forward.model, {**self.noise, **deltas.edits(self.row_fact)}):
            logits = self.forward.logits_at(self.rows, self.positions)
        logp = torch.log_softmax(logits, dim=-1).gather(1, self.labels[:, None])[:, 0]
        lp = torch.zeros(len(self.facts), dtype=logp.dtype, device=logp.device).index_add(0, self.token_fact, logp)
        return torch.where(self.minimize, lp.exp(), -lp)


class FactBatch:
    """Constrained fine-tuning of several facts together, each as :func:`finetune` trains it alone (up to rounding).

    The loss is the sum of the per-fact losses (each fact's deltas act on its rows only, so the gradients
    stay per fact); a fact takes a step only while its loss is ≥ ``loss_threshold`` (:class:`FactAdam`
    keeps its own moments and step count) and, when maximising, leaves the batch after ``patience``
    sub-threshold iterations; the rows are rebuilt without it. When a request has Fact Forcing noise, every
    forward runs the whole model and each noised fact keeps its own noise stream (seeded as
    :func:`~locedit.edit.forcing.edit_noise` seeds it) for the whole training.
    """

    def __init__(self, model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest],
                 layers: Sequence[int], hp: FtHparams):
        self.model, self.tok, self.requests, self.hp = model, tok, list(requests), hp
        self.start = min(layers)
        self.deltas = FactDeltas(model, layers, len(self.requests))
        self.losses: list[list[float]] = [[] for _ in self.requests]
        self.steps_taken = [0] * len(self.requests)
        noised = any(r.noise_sigma is not None for r in self.requests)
        self.noises = [EditNoise(tok, r, subject_noise(tok, r)) for r in self.requests] if noised else None

    def train(self) -> list[MethodResult]:
        """Each fact's deltas (stored layout) and its ``losses`` and ``steps_taken``."""
        if not self.requests:
            return []
        hp, n = self.hp, len(self.requests)
        opt = FactAdam(self.deltas.tensors, lr=hp.lr)
        below, alive, batch = [0] * n, [True] * n, None
        for _ in range(hp.num_steps):
            live = [i for i in range(n) if alive[i]]
            if not live:
                break
            if batch is None or batch.facts != live:
                noises = None if self.noises is None else [self.noises[i] for i in live]
                batch = FactRows(self.model, self.tok, [self.requests[i] for i in live], live, hp.n_copies,
                                 self.start, noises)
            for delta in self.deltas.tensors:
                delta.grad = None
            loss = batch.losses(self.deltas)
            values = dict(zip(live, loss.tolist()))
            stepping = [i in values and values[i] >= hp.loss_threshold for i in range(n)]
            if any(stepping):
                loss[torch.tensor([stepping[i] for i in live], device=loss.device)].sum().backward()
                opt.step(stepping)
            self.deltas.clamp_(hp.norm_constraint)
            for i, value in values.items():
                self.losses[i].append(value)
                self.steps_taken[i] += stepping[i]
                below[i] = below[i] + 1 if value < hp.loss_threshold else 0
                alive[i] = self.requests[i].minimize or below[i] < hp.patience
        return [MethodResult(self.deltas.result(i), {"losses": self.losses[i], "steps_taken": self.steps_taken[i]})
                for i in range(n)]
