"""Evaluation of several prepared edits in shared forwards, each fact under its own rank-one edits or none.

:func:`evaluate_states` gives, for every fact, what :func:`~locedit.evaluate.evaluation.evaluate_state`
gives after applying that fact's weight deltas (or on the unedited model: the pre-edit evaluation), up
to float rounding: the evaluation prompts of all facts go through one right-padded forward (a batch of
rows is scored exactly as its rows alone), and the essence texts of all facts through another, with each
fact's rank-one edits added to its own rows (:mod:`locedit.evaluate.low_rank`). Fact Forcing noise is
drawn per fact (and per essence text) from its own stream, exactly as the one-fact evaluation draws it.
A forward holds at most ``max_rows`` rows; a fact's rows never straddle two forwards.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.edit.problems import PreparedEdit
from locedit.evaluate.essence import TEXT_TOKENS, text_ids, text_noises, text_perplexity
from locedit.evaluate.evaluation import Evaluation, prompt_noise, scored_pairs, split_log_probs
from locedit.evaluate.low_rank import LowRank, rank_one_edits
from locedit.models.families import family_for
from locedit.models.interventions import intervene
from locedit.models.noise import SubjectNoise
from locedit.models.scoring import pad_id_of, token_log_probs_of_ids
from locedit.models.tokens import Spacing, encode, target_ids

MAX_ROWS = 256  # rows per forward (the essence texts' logits are rows x 100 x vocabulary floats)


@dataclass(frozen=True)
class RowBlock:
    """Rows of one fact scored together: (prefix, target) token ids, under one noise stream or none."""

    fact: int
    prefixes: list[list[int]]
    targets: list[list[int]]
    noise: SubjectNoise | None = None


def _prompt_block(tok: PreTrainedTokenizerBase, index: int, prepared: PreparedEdit, spacing: Spacing) -> RowBlock:
    prefixes, targets = scored_pairs(prepared)
    return RowBlock(index, [encode(tok, p) for p in prefixes], [target_ids(tok, t, spacing) for t in targets],
                    prompt_noise(tok, prepared, prefixes))


def _essence_blocks(tok: PreTrainedTokenizerBase, index: int, prepared: PreparedEdit, texts: Sequence[str]) -> list[RowBlock]:
    """One block for the fact's texts, or one per text under Fact Forcing (each text has its own stream)."""
    ids = [text_ids(tok, t, TEXT_TOKENS) for t in texts]
    if prepared.eval_sigma is None:
        return [RowBlock(index, [i[:1] for i in ids], [i[1:] for i in ids])]
    noises = text_noises(tok, texts, prepared.eval_sigma, prepared.fact.subject)
    return [RowBlock(index, [i[:1]], [i[1:]], noise) for i, noise in zip(ids, noises)]


def _chunks(blocks: list[RowBlock], max_rows: int) -> list[list[RowBlock]]:
    """Consecutive blocks, whole facts together, at most ``max_rows`` rows each (a larger fact alone)."""
    by_fact: list[list[RowBlock]] = []
    for block in blocks:
        if by_fact and by_fact[-1][0].fact == block.fact:
            by_fact[-1].append(block)
        else:
            by_fact.append([block])
    chunks: list[list[RowBlock]] = [[]]
    for fact_blocks in by_fact:
        rows = sum(len(b.prefixes) for b in fact_blocks)
        if chunks[-1] and sum(len(b.prefixes) for b in chunks[-1]) + rows > max_rows:
            chunks.append([])
        chunks[-1].extend(fact_blocks)
    return [c for c in chunks if c]


def _noise_by_block(blocks: Sequence[RowBlock]):
    """The embedding edit that runs each block's own noise on its rows (None when no block is noised)."""
    spans, start = [], 0
    for block in blocks:
        if block.noise is not None:
            spans.append((slice(start, start + len(block.prefixes)), block.noise))
        start += len(block.prefixes)
    if not spans:
        return None

    def edit(hidden: torch.Tensor) -> torch.Tensor | None:
        out = None
        for rows, noise in spans:
            new = noise(hidden[rows])
            if new is not None:
                out = hidden.clone() if out is None else out
                out[rows] = new
        return out

    return edit


@torch.no_grad()
def _score(model: PreTrainedModel, tok: PreTrainedTokenizerBase, blocks: Sequence[RowBlock],
           low_rank: Sequence[LowRank]) -> list[torch.Tensor]:
    """Per-token log-probs of every row of ``blocks`` in one forward, each row under its fact's edits."""
    per_row = [low_rank[b.fact] for b in blocks for _ in b.prefixes]
    noise = _noise_by_block(blocks)
    with ExitStack() as stack:
        if noise is not None:
            stack.enter_context(intervene(model, {family_for(model).site("embed_output"): noise}))
        stack.enter_context(rank_one_edits(model, per_row))
        return token_log_probs_of_ids(model, [p for b in blocks for p in b.prefixes],
                                      [t for b in blocks for t in b.targets], pad_id_of(tok))


def _scored_by_fact(model, tok, blocks: list[RowBlock], low_rank: Sequence[LowRank], max_rows: int) -> dict[int, list[torch.Tensor]]:
    out: dict[int, list[torch.Tensor]] = {}
    for chunk in _chunks(blocks, max_rows):
        lps = iter(_score(model, tok, chunk, low_rank))
        for block in chunk:
            out.setdefault(block.fact, []).extend(next(lps) for _ in block.prefixes)
    return out


def evaluate_states(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prepared: Sequence[PreparedEdit], *,
                    low_rank: Sequence[LowRank] | None = None,
                    essence_texts: Sequence[Sequence[str] | None] | None = None, spacing: Spacing = "fixed",
                    max_rows: int = MAX_ROWS) -> list[Evaluation]:
    """The evaluation of each prepared edit under its rank-one edits (``low_rank[i]``; empty or None: the
    unedited model), in shared forwards; ``seconds`` is each fact's share of the time taken."""
    start = time.perf_counter()
    n = len(prepared)
    low_rank = list(low_rank) if low_rank is not None else [{}] * n
    texts = list(essence_texts) if essence_texts is not None else [None] * n
    if len(low_rank) != n or len(texts) != n:
        raise ValueError(f"{n} prepared edits, {len(low_rank)} rank-one edits and {len(texts)} essence text lists")
    prompts = _scored_by_fact(model, tok, [_prompt_block(tok, i, p, spacing) for i, p in enumerate(prepared)],
                              low_rank, max_rows)
    essence_rows = [b for i, (p, t) in enumerate(zip(prepared, texts)) if t for b in _essence_blocks(tok, i, p, t)]
    essence = _scored_by_fact(model, tok, essence_rows, low_rank, max_rows)
    rows = []
    for i, p in enumerate(prepared):
        logp_new, logp_base = split_log_probs(p, [float(lp.sum()) for lp in prompts[i]])
        ppl = None
        if texts[i]:
            values = [text_perplexity(lp, len(lp) + 1) for lp in essence[i]]
            ppl = sum(values) / len(values)
        rows.append((logp_new, logp_base, ppl))
    share = (time.perf_counter() - start) / max(1, n)
    return [Evaluation(new, base, ppl, share) for new, base, ppl in rows]
