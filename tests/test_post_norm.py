"""Moving a post-norm's output through its input (locedit.models.post_norm), as MEMIT does on Gemma-3."""

from __future__ import annotations

import pytest
import torch
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

from locedit.models import family_for, tiny
from locedit.models.post_norm import shift_before_norm

WIDTH = 64


@pytest.fixture
def norm() -> Gemma3RMSNorm:
    """Gemma-3's RMS norm with gains spread over four orders of magnitude, as in Gemma-3-270M's MLP post-norms."""
    module = Gemma3RMSNorm(WIDTH, eps=1e-6).double()
    g = torch.Generator().manual_seed(0)
    gains = 10 ** (4 * torch.rand(WIDTH, generator=g, dtype=torch.float64) - 2)
    with torch.no_grad():
        module.weight.copy_(gains - 1)  # the module multiplies by 1 + weight
    return module


def _miss(norm: torch.nn.Module, out: torch.Tensor, target: torch.Tensor, delta: torch.Tensor) -> float:
    with torch.no_grad():
        return float((norm(out + delta) - target).norm())


def test_a_reachable_shift_is_reached(norm):
    g = torch.Generator().manual_seed(1)
    out = torch.randn(WIDTH, generator=g, dtype=torch.float64)
    moved = out + 0.3 * torch.randn(WIDTH, generator=g, dtype=torch.float64)
    with torch.no_grad():
        target = norm(moved)
        shift = target - norm(out)
    delta = shift_before_norm(norm, out, shift)
    assert _miss(norm, out, target, delta) < 1e-4 * float(shift.norm())  # Gemma's norm computes in float32


def test_an_unreachable_shift_lands_on_the_nearest_reachable_output(norm):
    """A shift off the norm's output surface: the result is a stationary point of the miss, nearer the target
    than leaving the output alone, dividing the shift by the gains, or any small step away from it."""
    g = torch.Generator().manual_seed(2)
    out = torch.randn(WIDTH, generator=g, dtype=torch.float64)
    with torch.no_grad():
        shift = 0.2 * float(norm(out).norm()) * torch.nn.functional.normalize(torch.randn(WIDTH, generator=g,
                                                                                          dtype=torch.float64), dim=0)
        target = norm(out) + shift
        gains = norm(torch.ones(WIDTH, dtype=torch.float64))
    delta = shift_before_norm(norm, out, shift)
    best = _miss(norm, out, target, delta)
    assert best > 1e-3 * float(shift.norm())  # unreachable: the check below is about the nearest point
    assert best < 0.9 * _miss(norm, out, target, torch.zeros(WIDTH, dtype=torch.float64))
    assert best < _miss(norm, out, target, shift / gains * (out.pow(2).mean().sqrt()))
    for _ in range(20):
        step = 1e-3 * float(delta.norm()) * torch.randn(WIDTH, generator=g, dtype=torch.float64)
        assert best <= _miss(norm, out, target, delta + step) + 1e-9 * best


def test_gemma3_has_an_mlp_post_norm_and_llama_has_none():
    gemma, _ = tiny("gemma3")
    llama, _ = tiny("llama")
    assert family_for(gemma).post_norm(gemma, 1) is gemma.model.layers[1].post_feedforward_layernorm
    assert family_for(llama).post_norm(llama, 1) is None
