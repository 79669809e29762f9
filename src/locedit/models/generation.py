"""Batched generation: greedy (correctness filter) and seeded top-k sampling (templates, essence texts)."""

from __future__ import annotations

import unicodedata
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.models.prefix import cache_kwargs
from locedit.models.scoring import pad_id_of
from locedit.models.tokens import encode, sequence_start


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(list(s))
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def greedy_generate(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int = 36, batch_size: int = 32
) -> list[list[int]]:
    """Greedy continuation ids (new tokens only) for each prompt; left padding with a mask."""
    out: list[list[int]] = []
    pad = pad_id_of(tok)
    for i in range(0, len(prompts), batch_size):
        enc = [encode(tok, p) for p in prompts[i : i + batch_size]]
        ids, mask = pad_left(enc, pad, model.device)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=None, top_p=None, top_k=None, temperature=None)
        out.extend(row[ids.shape[1]:].tolist() for row in gen)
    return out


def clean_sampled_text(text: str, eos_text: str | None) -> str:
    """NFKD-normalize, turn blank-line breaks into spaces and drop the eos text (docs/algorithms.md#context-templates,
    #essence-score)."""
    text = unicodedata.normalize("NFKD", text).replace("\n\n", " ")
    return text.replace(eos_text, "") if eos_text else text


@torch.no_grad()
def sample_top_k(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_length: int,
    *,
    k: int = 5,
    seed: int = 0,
) -> list[str]:
    """Top-k sampled texts of ``max_length`` tokens in total (prompt included), seeded and decoded whole.

    An empty prompt starts from the tokenizer's BOS where it has one (Gemma), else from the eos token (how
    the reference seeds context templates: GPT-2's eos is also its BOS).
    """
    pad = pad_id_of(tok)
    enc = [encode(tok, p) or [tok.eos_token_id] for p in prompts]
    ids, mask = pad_left(enc, pad, model.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    past = None
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cur_ids, cur_pos = ids, pos
    n_steps = max(0, max_length - min(len(e) for e in enc))
    steps = [ids]
    for _ in range(n_steps):
        out = model(input_ids=cur_ids, attention_mask=mask, position_ids=cur_pos, use_cache=True, logits_to_keep=1,
                    **cache_kwargs(model, past))
        past = out.past_key_values
        probs = torch.softmax(out.logits[:, -1].float(), dim=-1).cpu()
        top = probs.topk(k, dim=-1)
        choice = torch.multinomial(top.values / top.values.sum(-1, keepdim=True), 1, generator=gen)
        nxt = top.indices.gather(1, choice).to(model.device)
        steps.append(nxt)
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        cur_pos = cur_pos[:, -1:] + 1
        cur_ids = nxt
    full = torch.cat(steps, dim=1)
    start = len(sequence_start(tok))  # a BOS the text does not contain
    texts = []
    for row, e in zip(full, enc):
        keep = row[ids.shape[1] - len(e):][: max(max_length, len(e))][start:]
        texts.append(clean_sampled_text(tok.decode(keep.tolist(), skip_special_tokens=False), tok.eos_token))
    return texts
