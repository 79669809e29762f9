"""Moving the output of a post-norm by a given shift, by changing the norm's input.

Gemma-3 normalises each MLP output before adding it to the residual stream: the stream receives
``norm(o) = g ⊙ o / rms(o)``, not the down projection's output ``o``. An edit that wants the stream to move
by ``ρ`` (MEMIT's share of the gap, docs/algorithms.md#memit) must change ``o`` by a ``Δ`` with
``norm(o + Δ) ≈ norm(o) + ρ``. The norm ignores its input's scale, and its per-channel gains ``g`` span
four orders of magnitude in Gemma-3-270M, so most targets cannot be reached exactly and dividing ``ρ`` by
``g`` would blow up the small-gain channels. :func:`shift_before_norm` instead finds the reachable output
nearest the target: it minimises ``|norm(o + Δ) − norm(o) − ρ|²`` over ``Δ`` by L-BFGS through the norm
module itself, starting from ``Δ = 0``, with the gains as a preconditioner.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_ITERATIONS = 200
_PROBE = 1e3  # an RMS norm maps 1e3 · 1 to its gain g (1e3 / sqrt(1e6 + eps): eps drops out)


def shift_before_norm(norm: nn.Module, out: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``Δ`` (``out``'s dtype and shape, a [width] vector) whose ``norm(out + Δ)`` is the output of ``norm``
    nearest ``norm(out) + shift`` (module docstring).

    The search runs over ``q`` with ``Δ = q ⊙ rms(out) / |g|``, ``g`` the norm's output for a constant input
    (an RMS norm's gain): near ``out`` a unit of ``q`` moves every output channel alike, which keeps L-BFGS
    well conditioned whatever the gains; it changes the path, not the minimum.
    """
    x = out.detach().double()
    with torch.no_grad():
        target = norm(out.detach()).double() + shift.double()
        gain = norm(torch.full_like(out.detach(), _PROBE)).double().abs()
        scale = x.pow(2).mean().sqrt() / gain.clamp_min(1e-6 * float(gain.max()))
    q = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.LBFGS([q], lr=1.0, max_iter=MAX_ITERATIONS, tolerance_grad=1e-12, tolerance_change=1e-18,
                            history_size=20, line_search_fn="strong_wolfe")

    def miss() -> torch.Tensor:
        opt.zero_grad()
        loss = (norm((x + q * scale).to(out.dtype)).double() - target).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(miss)
    return (q.detach() * scale).to(out.dtype)
