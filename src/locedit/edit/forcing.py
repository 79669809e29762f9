"""Fact Forcing noise for the duration of one edit (docs/algorithms.md#fact-forcing-noise).

``with edit_noise(model, tok, request) as noise:`` installs a :class:`SubjectNoise` seeded with
``request.noise_seed`` when ``request.noise_sigma`` is set (every forward inside draws fresh noise).
Before each forward, methods call ``noise.rows(prompts)`` with the prompt part of every row:

* ``compat``: every row is noised at the plain prompt's subject span (the reference behaviour, which
  puts noise on non-subject tokens of context-prefixed rows);
* ``fixed``: each row at its own subject span (rows without the subject stay clean).

Without noise the object is inert, so methods call it unconditionally.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.request import EditRequest
from locedit.models.noise import SubjectNoise, noised_subject
from locedit.models.tokens import subject_span, subject_spans


class EditNoise:
    """Sets the per-row noise spans of the next forward (no-op when the request has no noise)."""

    def __init__(self, tok: PreTrainedTokenizerBase, request: EditRequest, noise: SubjectNoise | None):
        self.tok, self.request, self.noise = tok, request, noise

    @property
    def active(self) -> bool:
        return self.noise is not None

    def rows(self, prompts: Sequence[str]) -> None:
        """Declare the prompt text of each row of the next forward (used by ``fixed`` mode)."""
        if self.noise is None or self.request.noise_mode == "compat":
            return
        self.noise.spans = subject_spans(self.tok, prompts, self.request.subject)


@contextmanager
def edit_noise(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest) -> Iterator[EditNoise]:
    """Noise the subject in every forward of the block when the request asks for it (Fact Forcing)."""
    if request.noise_sigma is None:
        yield EditNoise(tok, request, None)
        return
    if request.noise_mode not in ("compat", "fixed"):
        raise ValueError(f"unknown noise_mode {request.noise_mode!r}; use 'compat' or 'fixed'")
    span = subject_span(tok, request.prompt, request.subject)
    noise = SubjectNoise(request.noise_sigma, seed=request.noise_seed, default_span=span)
    with noised_subject(model, noise):
        yield EditNoise(tok, request, noise)
