"""Applied weight edits that undo themselves exactly (docs/algorithms.md#editing-machinery, #caches).

:class:`EditHandle` adds deltas to named parameters, keeping bitwise copies of the original tensors of
only the edited parameters; ``restore()`` copies them back. As a context manager it restores on exit,
also when the block raises.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn


class EditHandle:
    """Deltas applied to a model, with the exact originals kept for :meth:`restore`."""

    def __init__(self, model: nn.Module, deltas: Mapping[str, torch.Tensor] | None = None, *, method: str = "",
                 layers: Sequence[int] = (), edit_seconds: float = 0.0, info: dict[str, Any] | None = None):
        self.model = model
        self.method = method
        self.layers = list(layers)
        self.edit_seconds = edit_seconds
        self.info = dict(info or {})
        self.deltas: dict[str, torch.Tensor] = {}
        self._originals: dict[str, torch.Tensor] = {}
        if deltas:
            try:
                self.apply(deltas)
            except Exception:
                self.restore()  # never leave a half-applied edit behind
                raise

    @property
    def applied(self) -> bool:
        return bool(self._originals)

    @torch.no_grad()
    def apply(self, deltas: Mapping[str, torch.Tensor]) -> "EditHandle":
        """Add each delta to its parameter (stored layout); repeated calls accumulate."""
        params = dict(self.model.named_parameters())
        for name, delta in deltas.items():
            if name not in params:
                raise KeyError(f"model has no parameter {name!r}; deltas must be keyed by parameter name")
            p = params[name]
            if tuple(delta.shape) != tuple(p.shape):
                raise ValueError(f"delta for {name} has shape {tuple(delta.shape)}, parameter has {tuple(p.shape)}")
            if name not in self._originals:
                self._originals[name] = p.detach().clone()
            p.add_(delta.to(device=p.device, dtype=p.dtype))
            self.deltas[name] = self.deltas[name] + delta if name in self.deltas else delta.detach().clone()
        return self

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the original tensors back (bitwise); safe to call twice."""
        params = dict(self.model.named_parameters())
        for name, original in self._originals.items():
            params[name].copy_(original)
        self._originals.clear()

    def __enter__(self) -> "EditHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"EditHandle(method={self.method!r}, layers={self.layers}, params={sorted(self.deltas)}, applied={self.applied})"


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Clones of every parameter, for :func:`weights_equal`."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def weights_equal(model: nn.Module, snap: Mapping[str, torch.Tensor]) -> bool:
    """Whether every parameter equals its snapshot bitwise (``torch.equal``)."""
    params = dict(model.named_parameters())
    return params.keys() == snap.keys() and all(torch.equal(params[n], snap[n]) for n in snap)
