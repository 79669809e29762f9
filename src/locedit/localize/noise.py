"""The tracing noise level sigma (docs/algorithms.md#noise-level): a per-model table, else 3 x std of subject-token
embeddings.

The reference hard-codes GPT-J 0.094 and GPT2-XL 0.1. Any other model gets ROME's rule: 3 x the
standard deviation of all elements of the token-embedding rows of the subject tokens of every
``known_1000.json`` subject (each tokenized alone, no leading space). That value is computed once per
model and cached as checksummed JSON under ``cache_dir("noise")`` (a damaged file is reported and
recomputed), keyed by a fingerprint of the embedding matrix.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.loaders import load_known_1000
from locedit.files import read_checked, write_checked
from locedit.models.families import family_for
from locedit.models.presets import preset_noise_sigma
from locedit.models.tokens import encode_piece
from locedit.paths import cache_dir, data_dir

NOISE_STD_MULTIPLE = 3.0


class NoiseLevelError(RuntimeError):
    """The noise level cannot be derived (no known_1000.json); the message names --noise and LOCEDIT_DATA_DIR."""


def table_sigma(model: PreTrainedModel) -> float | None:
    """The hard-coded reference sigma of this model (GPT-J 0.094, GPT2-XL 0.1), or None."""
    return preset_noise_sigma(model)


def sigma_from_subjects(model: PreTrainedModel, tok: PreTrainedTokenizerBase, subjects: Sequence[str]) -> float:
    """3 x std of all elements of the subjects' token embeddings (each subject tokenized alone, no BOS).

    The embeddings are the embedding module's output, where the noise is added: Gemma scales its rows there.
    """
    ids = [i for s in subjects for i in encode_piece(tok, s)]
    if not ids:
        raise ValueError("no subject tokens to estimate the noise level from; pass subjects or --noise SIGMA")
    embed = family_for(model).module(model, family_for(model).embed)
    with torch.no_grad():
        rows = embed(torch.tensor(ids, device=embed.weight.device))
    return NOISE_STD_MULTIPLE * float(rows.double().std())


def _fingerprint(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> str:
    """A key that changes when the embedding matrix or the tokenizer changes."""
    weight = family_for(model).module(model, family_for(model).embed).weight.detach()
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{model.config.model_type}|{tuple(weight.shape)}|{weight.dtype}|{len(tok)}".encode())
    h.update(weight.float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _known_subjects() -> list[str]:
    root = data_dir()
    if root is None or not (root / "known_1000.json").exists():
        raise NoiseLevelError(
            "cannot derive the noise level: known_1000.json not found; set LOCEDIT_DATA_DIR to the data folder "
            "or pass the noise sigma explicitly (--noise SIGMA)"
        )
    return [f.subject for f in load_known_1000(root / "known_1000.json")]


def noise_level(model: PreTrainedModel, tok: PreTrainedTokenizerBase, override: float | None = None) -> float:
    """The sigma to trace (and noise-edit) ``model`` with: ``override``, else the table, else cached 3 x std."""
    if override is not None:
        if not override > 0:
            raise ValueError(f"noise sigma must be > 0, got {override}; pass e.g. --noise 0.1")
        return float(override)
    fixed = table_sigma(model)
    if fixed is not None:
        return fixed
    path = cache_dir("noise") / f"{_fingerprint(model, tok)}.json"
    cached = read_checked(path)
    if cached is not None:
        return float(json.loads(cached)["sigma"])
    subjects = _known_subjects()
    sigma = sigma_from_subjects(model, tok, subjects)
    write_checked(path, json.dumps({"sigma": sigma, "rule": "3 x std of known_1000 subject-token embeddings",
                                    "n_subjects": len(subjects), "model": str(model.config._name_or_path)}).encode())
    return sigma
