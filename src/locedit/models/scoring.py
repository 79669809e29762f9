"""Batched target scoring (docs/algorithms.md#target-probability): joint log-probability of a multi-token target after
a prefix.

Sequences are right-padded with an attention mask, so batched scores equal unbatched ones. Only the
positions that predict a target token go through the unembedding: a full-vocabulary log-softmax over
every position would hold rows x positions x vocabulary floats (1 MiB per position for Gemma 3's 262k
tokens). :func:`token_log_probs_of_ids_full` is the all-positions oracle it is tested against; the two
differ only in the float rounding of the unembedding matmul (its result depends on how many rows it gets).
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.models.tokens import Spacing, encode, target_ids


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of right-padded sequences."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def pad_id_of(tok: PreTrainedTokenizerBase) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def token_log_probs_of_ids(
    model: PreTrainedModel, prefix_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], pad_id: int
) -> list[torch.Tensor]:
    """Per-token log p(y_i | prefix, y_<i) for each (prefix, target) pair, in one forward pass.

    The final hidden states go through the unembedding at the target-predicting positions only.
    """
    seqs = [list(p) + list(t) for p, t in zip(prefix_ids, tgt_ids)]
    ids, mask = pad_right(seqs, pad_id, model.device)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    rows = torch.cat([torch.full((len(t),), row) for row, t in enumerate(tgt_ids)]).to(ids.device)
    positions = torch.cat([torch.arange(len(p) - 1, len(p) + len(t) - 1) for p, t in zip(prefix_ids, tgt_ids)])
    logits = model.get_output_embeddings()(hidden[rows, positions.to(ids.device)]).float()
    labels = torch.tensor([i for t in tgt_ids for i in t], device=ids.device)
    lp = logits.gather(1, labels[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
    return list(lp.split([len(t) for t in tgt_ids]))


def token_log_probs_of_ids_full(
    model: PreTrainedModel, prefix_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]], pad_id: int
) -> list[torch.Tensor]:
    """The oracle of :func:`token_log_probs_of_ids`: the model's logits at every position, then log-softmax."""
    seqs = [list(p) + list(t) for p, t in zip(prefix_ids, tgt_ids)]
    ids, mask = pad_right(seqs, pad_id, model.device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    out = []
    for row, (p, t) in enumerate(zip(prefix_ids, tgt_ids)):
        pos = torch.arange(len(p) - 1, len(p) + len(t) - 1, device=logits.device)
        lp = torch.log_softmax(logits[row, pos].float(), dim=-1)
        out.append(lp.gather(1, torch.tensor(list(t), device=logits.device)[:, None])[:, 0])
    return out


@torch.no_grad()
def target_log_probs(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prefixes: Sequence[str],
    targets: Sequence[str],
    *,
    spacing: Spacing = "fixed",
    batch_size: int = 64,
) -> torch.Tensor:
    """Summed log-probability of each target (scored as ``" " + target``) after its prefix, shape [n]."""
    if len(prefixes) != len(targets):
        raise ValueError("prefixes and targets must have the same length")
    pre = [encode(tok, p) for p in prefixes]
    tgt = [target_ids(tok, t, spacing) for t in targets]
    sums: list[torch.Tensor] = []
    for i in range(0, len(pre), batch_size):
        lps = token_log_probs_of_ids(model, pre[i : i + batch_size], tgt[i : i + batch_size], pad_id_of(tok))
        sums.extend(lp.sum() for lp in lps)
    return torch.stack(sums).cpu() if sums else torch.zeros(0)


def target_probs(model, tok, prefixes: Sequence[str], targets: Sequence[str], **kw) -> torch.Tensor:
    """Joint probability of each target after its prefix (product over target tokens)."""
    return target_log_probs(model, tok, prefixes, targets, **kw).exp()


@torch.no_grad()
def next_token_top_k(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens after ``prompt`` with their probabilities."""
    ids = torch.tensor([encode(tok, prompt)], device=model.device)
    probs = torch.softmax(model(input_ids=ids, logits_to_keep=1).logits[0, -1].float(), dim=-1)
    top = probs.topk(k)
    return [(tok.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]
