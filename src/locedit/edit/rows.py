"""Batch rows of ROME/MEMIT: context templates filled with a request, and activations read at the subject.

A context template ``"<text>. {}"`` receives the request template (prompt with ``{}`` for the subject),
then the subject; the lookup position is the subject's last token (docs/algorithms.md#subject-last-index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.forcing import EditNoise
from locedit.edit.request import EditRequest
from locedit.models.families import Site
from locedit.models.interventions import capture, run_until_stopped
from locedit.models.scoring import pad_id_of, pad_right
from locedit.models.tokens import encode, subject_last_index, template_of

KL_TEMPLATE = "{} is a"


@dataclass(frozen=True)
class Row:
    """One prompt of a batch: its text, token ids and the index of the subject's last token."""

    text: str
    ids: tuple[int, ...]
    index: int


def make_row(tok: PreTrainedTokenizerBase, row_template: str, subject: str) -> Row:
    """``row_template`` (one ``{}``) filled with ``subject``, tokenized, with its subject-last index."""
    text = row_template.format(subject)
    ids = tuple(encode(tok, text))
    index = subject_last_index(tok, row_template, subject)
    if not 0 <= index < len(ids):
        raise ValueError(f"subject-last index {index} falls outside {text!r} ({len(ids)} tokens); skip this record")
    return Row(text, ids, index)


def context_rows(tok: PreTrainedTokenizerBase, contexts: Sequence[str], request: EditRequest) -> list[Row]:
    """One row per context template, each holding the request prompt (subject filled in)."""
    template = template_of(request.prompt, request.subject)
    return [make_row(tok, c.format(template), request.subject) for c in contexts]


def kl_row(tok: PreTrainedTokenizerBase, request: EditRequest) -> Row:
    """The "{subject} is a" row whose next-token distribution the KL term keeps in place."""
    return make_row(tok, KL_TEMPLATE, request.subject)


@torch.no_grad()
def read_at(model: nn.Module, tok: PreTrainedTokenizerBase, sites: Sequence[Site], rows: Sequence[Row],
            noise: EditNoise) -> list[torch.Tensor]:
    """Each site's activation at each row's subject-last index, float32 [rows, width].

    The forward stops after the last of ``sites``, so list them in forward order.
    """
    ids, mask = pad_right([r.ids for r in rows], pad_id_of(tok), model.device)
    noise.rows([r.text for r in rows])
    with capture(model, sites, stop_after=sites[-1]) as got:
        run_until_stopped(model, input_ids=ids, attention_mask=mask, use_cache=False)
    at = torch.arange(len(rows), device=ids.device), torch.tensor([r.index for r in rows], device=ids.device)
    return [got[site][at].float() for site in sites]
