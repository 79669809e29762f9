"""Adam over tensors that stack B independent problems along their first dimension, each on its own schedule.

Fine-tuning B facts in one batch (:func:`locedit.edit.finetune.finetune_many`) trains one delta per fact,
stacked as ``[B, ...]``. One ``torch.optim.Adam`` over the stack would share a step count, so a fact that
skips a step (its loss is below the threshold) would still age its bias corrections. :class:`FactAdam`
keeps a step count per fact and updates only the facts a mask selects, with the update of
``torch.optim.Adam`` (weight decay 0, no amsgrad): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
p ← p − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε), t the fact's own step count.
"""

from __future__ import annotations

from typing import Sequence

import torch


class FactAdam:
    """Adam for ``params`` (each ``[B, ...]``, gradients in ``.grad``), fact ``i`` being row ``i`` of every tensor."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.n_facts = self.params[0].shape[0]
        self.steps = [0] * self.n_facts
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, mask: Sequence[bool]) -> None:
        """One Adam step of the facts where ``mask`` is true; the others keep their values, moments and count."""
        if len(mask) != self.n_facts:
            raise ValueError(f"FactAdam.step needs one mask entry per fact ({self.n_facts}), got {len(mask)}")
        beta1, beta2 = self.betas
        self.steps = [t + 1 if on else t for t, on in zip(self.steps, mask)]
        counts = [max(t, 1) for t in self.steps]  # a fact that never stepped is masked out below
        # Python floats, as torch.optim.Adam computes them, then cast to the parameters' dtype.
        step_size = [-self.lr / (1 - beta1 ** t) for t in counts]
        bias_correction2_sqrt = [(1 - beta2 ** t) ** 0.5 for t in counts]
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (p.dim() - 1)
            on = torch.tensor(list(mask), device=p.device).view(shape)
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            m.copy_(torch.where(on, m.lerp(g, 1 - beta1), m))
            v.copy_(torch.where(on, v.mul(beta2).addcmul_(g, g, value=1 - beta2), v))
            denom = (v.sqrt() / torch.tensor(bias_correction2_sqrt, dtype=p.dtype, device=p.device).view(shape)).add_(self.eps)
            update = torch.tensor(step_size, dtype=p.dtype, device=p.device).view(shape) * m / denom
            p.add_(torch.where(on, update, torch.zeros_like(update)))
