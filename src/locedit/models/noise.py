"""Gaussian noise on subject token embeddings, for causal tracing, Fact Forcing edits and evaluation
(docs/algorithms.md#fact-forcing-noise, #normalized-scores).

One :class:`SubjectNoise` is an edit of the ``embed_output`` site (:mod:`locedit.models.interventions`). Each forward pass with more than
one position gets ``sigma * eps`` added at each row's subject span, ``eps`` drawn in float64 from the
object's own seeded stream (a fresh draw per forward, so optimisation steps see new noise). Length-1
forwards (incremental decoding) are left alone.

* ``spans`` holds one span per row. ``compat`` callers pass the plain prompt's span for every row
  (the reference behaviour, noise can land on non-subject tokens); ``fixed`` callers pass each row's
  own subject span. Set ``spans`` before each forward whose rows differ, or pass ``default_span``
  to apply one span to every row of every forward.
* ``reseed()`` restarts the stream: evaluation calls reseed so pre- and post-edit scores see the same
  noise (paired comparison).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from locedit.models.families import family_for
from locedit.models.interventions import active_edits, intervene

Span = tuple[int, int]


class SubjectNoise:
    """Seeded Gaussian noise added at subject spans of the embedding output."""

    def __init__(self, sigma: float, seed: int = 1, default_span: Span | None = None):
        self.sigma = float(sigma)
        self.seed = seed
        self.default_span = default_span
        self.spans: Sequence[Span | None] | None = None
        self.reseed()

    def reseed(self) -> None:
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    def draw(self, rows: int, width: int, dim: int) -> torch.Tensor:
        """``rows x width x dim`` float64 standard normals from the stream."""
        return torch.randn((rows, width, dim), generator=self.generator, dtype=torch.float64)

    def _row_spans(self, rows: int) -> list[Span | None]:
        if self.spans is not None:
            if len(self.spans) != rows:
                raise ValueError(f"SubjectNoise has {len(self.spans)} spans for a batch of {rows} rows")
            return list(self.spans)
        return [self.default_span] * rows

    def __call__(self, output: torch.Tensor) -> torch.Tensor | None:
        """The embedding output with this forward's noise added at the spans (``None``: left alone)."""
        rows, length, dim = output.shape
        if length == 1 or self.sigma == 0:
            return None
        spans = self._row_spans(rows)
        width = max((s1 - s0 for s0, s1 in (s for s in spans if s)), default=0)
        if width == 0:
            return None
        eps = self.draw(rows, width, dim)
        out = output.clone()
        for r, span in enumerate(spans):
            if span is None:
                continue
            s0, s1 = span
            s1 = min(s1, length)
            if s1 > s0:
                out[r, s0:s1] += (self.sigma * eps[r, : s1 - s0]).to(out.dtype).to(out.device)
        return out


@contextmanager
def noised_subject(model: nn.Module, noise: SubjectNoise | None) -> Iterator[SubjectNoise | None]:
    """Install ``noise`` on the token embeddings for the duration of the block (no-op for ``None``)."""
    if noise is None:
        yield None
        return
    with intervene(model, {family_for(model).site("embed_output"): noise}):
        yield noise


def noise_installed(model: nn.Module) -> bool:
    """Whether a :class:`SubjectNoise` is installed on ``model`` (statistics and templates refuse to run then)."""
    return any(isinstance(entry.edit, SubjectNoise) for entry in active_edits(model))
