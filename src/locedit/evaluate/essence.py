"""Essence score inputs (docs/algorithms.md#essence-score): sampled "{subject} is a" texts and their perplexity.

The texts are sampled once per (model, subject) with a fixed seed from the unedited model and cached on
disk under ``cache_dir("essence")`` (checksummed: a damaged file is reported and re-sampled), so every layer, method and problem is scored on the same texts
(the reference re-sampled them per run, docs/algorithms.md#reference-deviations).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.models.fingerprint import model_fingerprint
from locedit.files import read_checked, write_checked
from locedit.models.generation import sample_top_k
from locedit.models.noise import SubjectNoise, noised_subject
from locedit.models.scoring import pad_id_of, token_log_probs_of_ids
from locedit.models.tokens import encode, subject_spans
from locedit.paths import cache_dir

log = logging.getLogger(__name__)

N_TEXTS = 5
TEXT_TOKENS = 100  # total length, prompt included
TOP_K = 5
ESSENCE_SEED = 0


def essence_prompt(subject: str) -> str:
    return f"{subject} is a"


def _cache_file(model: PreTrainedModel, subject: str, n: int, length: int, seed: int) -> Path:
    key = hashlib.sha1(json.dumps([subject, n, length, TOP_K, seed]).encode()).hexdigest()[:20]
    return cache_dir("essence", model_fingerprint(model)) / f"{key}.json"


def essence_texts(model: PreTrainedModel, tok: PreTrainedTokenizerBase, subject: str, *, n: int = N_TEXTS,
                  length: int = TEXT_TOKENS, seed: int = ESSENCE_SEED, use_cache: bool = True) -> list[str]:
    """``n`` top-5 samples of "{subject} is a", ``length`` tokens in total, read from / written to the disk cache.

    Call this with the unedited model, outside any noise hook.
    """
    path = _cache_file(model, subject, n, length, seed)
    cached = read_checked(path) if use_cache else None
    if cached is not None:
        stored = json.loads(cached)
        if stored.get("subject") == subject and len(stored.get("texts", [])) == n:
            return list(stored["texts"])
    texts = sample_top_k(model, tok, [essence_prompt(subject)] * n, length, k=TOP_K, seed=seed)
    if use_cache:
        write_checked(path, json.dumps({"subject": subject, "seed": seed, "length": length, "texts": texts}).encode())
    return texts


def text_ids(tok: PreTrainedTokenizerBase, text: str, max_tokens: int = TEXT_TOKENS) -> list[int]:
    """The scored tokens of an essence text (its first ``max_tokens``; at least 2)."""
    ids = encode(tok, text)[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"essence text {text!r} has fewer than 2 tokens; cannot compute its perplexity")
    return ids


def text_perplexity(lp: torch.Tensor, n_tokens: int) -> float:
    """exp(-(1/N) sum_{i>=2} log p(x_i | x_<i)) from the per-token log-probs: divided by N, not N-1, as the
    reference does (docs/algorithms.md#essence-score)."""
    return math.exp(-float(lp.sum()) / n_tokens)


def text_noises(tok: PreTrainedTokenizerBase, texts: Sequence[str], noise_sigma: float,
                subject: str | None) -> list[SubjectNoise | None]:
    """Fact Forcing noise of each text: a fresh stream seeded 1 at the text's own subject span (None, logged,
    where the subject cannot be found: that text is scored clean)."""
    if subject is None:
        raise ValueError("noised perplexity needs the subject whose tokens to noise")
    out = []
    for span in subject_spans(tok, texts, subject):
        if span is None:
            log.warning("subject %r not found in essence text; its perplexity is computed without noise", subject)
        out.append(SubjectNoise(noise_sigma, seed=1, default_span=span) if span else None)
    return out


@torch.no_grad()
def perplexities(model: PreTrainedModel, tok: PreTrainedTokenizerBase, texts: Sequence[str], *,
                 max_tokens: int = TEXT_TOKENS, noise_sigma: float | None = None,
                 subject: str | None = None) -> list[float]:
    """Perplexity of each text (docs/algorithms.md#essence-score), in one right-padded batch.

    With ``noise_sigma`` (Fact Forcing) the subject is noised inside each text (:func:`text_noises`), so it
    runs one forward per text.
    """
    ids = [text_ids(tok, t, max_tokens) for t in texts]
    if noise_sigma is None:
        lps = token_log_probs_of_ids(model, [i[:1] for i in ids], [i[1:] for i in ids], pad_id_of(tok))
        return [text_perplexity(lp, len(i)) for lp, i in zip(lps, ids)]
    out = []
    for i, noise in zip(ids, text_noises(tok, texts, noise_sigma, subject)):
        with noised_subject(model, noise):
            lp = token_log_probs_of_ids(model, [i[:1]], [i[1:]], pad_id_of(tok))[0]
        out.append(text_perplexity(lp, len(i)))
    return out


def essence_perplexity(model: PreTrainedModel, tok: PreTrainedTokenizerBase, texts: Sequence[str], **kw) -> float:
    """Mean perplexity over the essence texts (one model state)."""
    values = perplexities(model, tok, texts, **kw)
    return sum(values) / len(values)
