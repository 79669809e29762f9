"""Context templates that ROME and MEMIT average keys and losses over (docs/algorithms.md#context-templates).

* ROME: ``["{}"]`` + 10 samples of 5 tokens + 10 samples of 10 tokens, each followed by ". {}" (21).
* MEMIT: group 0 ``["{}"]``, group 1 one 10-token sample for each of "The", "Therefore", "Because",
  "I", "You", followed by ". {}" (6 templates in 2 groups).

Samples come from :func:`sample_top_k` (k = 5) on the unedited model, without noise, with an explicit
seed, and are cached on disk per model fingerprint and seed (``cache_dir("templates")``, checksummed: a
damaged file is reported and regenerated) so every run shares them. ROME samples start from the document-boundary token (eos, as the reference's
``<|endoftext|>``). Special-token text is removed and braces become spaces so templates always format.
"""

from __future__ import annotations

import json

from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.models.fingerprint import model_fingerprint
from locedit.files import read_checked, write_checked
from locedit.models.generation import sample_top_k
from locedit.models.noise import noise_installed
from locedit.paths import cache_dir

ROME_LENGTHS = ((5, 10), (10, 10))  # (total tokens, count)
MEMIT_SEEDS = ("The", "Therefore", "Because", "I", "You")
MEMIT_LENGTH = 10
_FORMAT = 2  # bump when the cleaning rules change, so stale cached templates are not reused


def _clean(text: str, tok: PreTrainedTokenizerBase) -> str:
    added = [t.content for t in getattr(tok, "added_tokens_decoder", {}).values() if t.special]
    for special in set(tok.all_special_tokens) | set(added):
        text = text.replace(special, "")
    for bad in ("\t}", "\n}"):
        text = text.replace(bad, "")
    return text.replace("{", " ").replace("}", " ")


def _generate(model: nn.Module, tok: PreTrainedTokenizerBase, kind: str, seed: int) -> list[list[str]]:
    if noise_installed(model):
        raise RuntimeError("context templates must be generated without Fact Forcing noise; generate them before the edit")
    if kind == "rome":
        samples: list[str] = []
        for i, (length, count) in enumerate(ROME_LENGTHS):
            samples += sample_top_k(model, tok, [""] * count, length, k=5, seed=seed + i)
        return [["{}"] + [_clean(s, tok) + ". {}" for s in samples]]
    samples = sample_top_k(model, tok, list(MEMIT_SEEDS), MEMIT_LENGTH, k=5, seed=seed)
    return [["{}"], [_clean(s, tok) + ". {}" for s in samples]]


def template_groups(model: nn.Module, tok: PreTrainedTokenizerBase, kind: str, seed: int = 0) -> list[list[str]]:
    """Template groups for ``kind`` ("rome": one group of 21, "memit": [["{}"], 5 templates]), cached per model."""
    if kind not in ("rome", "memit"):
        raise ValueError(f"unknown template kind {kind!r}; use 'rome' or 'memit'")
    path = cache_dir("templates") / f"{model_fingerprint(model)}-{kind}-seed{seed}-v{_FORMAT}.json"
    cached = read_checked(path)
    if cached is not None:
        return json.loads(cached.decode("utf-8"))
    groups = _generate(model, tok, kind, seed)
    write_checked(path, json.dumps(groups, indent=1, ensure_ascii=False).encode("utf-8"))
    return groups


def rome_templates(model: nn.Module, tok: PreTrainedTokenizerBase, seed: int = 0) -> list[str]:
    """ROME's 21 context templates."""
    return template_groups(model, tok, "rome", seed)[0]


def memit_templates(model: nn.Module, tok: PreTrainedTokenizerBase, seed: int = 0) -> list[list[str]]:
    """MEMIT's 6 context templates in 2 groups."""
    return template_groups(model, tok, "memit", seed)
