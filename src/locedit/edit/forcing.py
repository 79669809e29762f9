"""Fact Forcing noise for the duration of one edit (docs/algorithms.md#fact-forcing-noise).

``with edit_noise(model, tok, request) as noise:`` installs a :class:`SubjectNoise` seeded with
``request.noise_seed`` when ``request.noise_sigma`` is set (every forward inside draws fresh noise).
Before each forward, methods call ``noise.rows(prompts)`` with the prompt part of every row:

* ``compat``: every row is noised at the plain prompt's subject span (the reference behaviour, which
  puts noise on non-subject tokens of context-prefixed rows);
* ``fixed``: each row at its own subject span (rows without the subject stay clean).

Without noise the object is inert, so methods call it unconditionally.

Fine-tuning several requests in one batch (:func:`locedit.edit.finetune.finetune_many`) gives each its own
stream on its own block of rows (:class:`StackedNoise`), so each draws what its one-request edit draws.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
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


def subject_noise(tok: PreTrainedTokenizerBase, request: EditRequest) -> SubjectNoise | None:
    """The request's noise stream: seeded with ``request.noise_seed``, the plain prompt's subject span as
    default (``None`` without ``noise_sigma``)."""
    if request.noise_sigma is None:
        return None
    if request.noise_mode not in ("compat", "fixed"):
        raise ValueError(f"unknown noise_mode {request.noise_mode!r}; use 'compat' or 'fixed'")
    span = subject_span(tok, request.prompt, request.subject)
    return SubjectNoise(request.noise_sigma, seed=request.noise_seed, default_span=span)


@contextmanager
def edit_noise(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest) -> Iterator[EditNoise]:
    """Noise the subject in every forward of the block when the request asks for it (Fact Forcing)."""
    noise = subject_noise(tok, request)
    with noised_subject(model, noise):
        yield EditNoise(tok, request, noise)


class StackedNoise:
    """An ``embed_output`` edit for a batch whose rows are blocks of ``n_copies`` rows of one request's plain
    prompt (+ target, right-padded) each, in ``noises`` order.

    Each block is noised by its own request's stream, as its one-request edit's forward is (spans set by
    :meth:`EditNoise.rows` for the block's prompts), so the values drawn per forward are the same; a block
    without noise is left as it is.
    """

    def __init__(self, noises: Sequence[EditNoise], n_copies: int):
        self.noises, self.n_copies = list(noises), n_copies

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.shape[0] != len(self.noises) * self.n_copies:
            raise ValueError(f"StackedNoise expects {len(self.noises)} x {self.n_copies} rows, got {output.shape[0]}")
        blocks = []
        for noise, block in zip(self.noises, output.split(self.n_copies)):
            noise.rows([noise.request.prompt] * self.n_copies)
            noised = noise.noise(block) if noise.noise is not None else None
            blocks.append(block if noised is None else noised)
        return torch.cat(blocks)
