"""Layer windows with clipping at both ends (docs/algorithms.md#windows), shared by tracing, MEMIT and FT-5."""

from __future__ import annotations


def window_layers(center: int, window: int, n_layers: int) -> list[int]:
    """Layers ``max(0, c - w//2) <= l < min(L, c + ceil(w/2))`` (w=5 at c=0 gives [0, 1, 2])."""
    if not 0 <= center < n_layers:
        raise ValueError(f"layer {center} is out of range for a model with {n_layers} layers (0..{n_layers - 1})")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if window > n_layers:
        raise ValueError(f"window {window} is larger than the model's {n_layers} layers; use a window <= {n_layers}")
    lo = max(0, center - window // 2)
    hi = min(n_layers, center + (window + 1) // 2)
    return list(range(lo, hi))
