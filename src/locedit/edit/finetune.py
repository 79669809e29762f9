"""Constrained fine-tuning of the MLP down projection(s): FT-1 and FT-5 (docs/algorithms.md#constrained-fine-tuning).

Weight and (where one exists) bias of the down projection of every layer in the set are trained with
Adam (lr 5e-4) on the plain prompt followed by the target, ``n_copies`` rows (10 under Fact Forcing,
each with its own noise). LP is the summed target log-probability over tokens and copies; the loss is
−LP, or exp(LP) = p(target) when minimising (Fact Erasure). A step is taken only while loss ≥ 0.01;
after every iteration the tensors are clamped to the original ± ``norm_constraint`` (an L-inf bound);
maximising runs stop after ``patience`` consecutive sub-threshold iterations. The trained tensors are
restored before return; the result is their deltas.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.forcing import edit_noise
from locedit.edit.hparams import FtHparams
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.models.families import family_for
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
