"""A cheap, stable identity of a model's weights, for on-disk caches (statistics, templates).

Hashes the config and, per parameter, its name, shape and a strided sample of at most 1,024 values, so
two random tiny models (same config, different seed) or an edited model get different keys without
reading every weight of a 6B model.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

_SAMPLES = 1024


@torch.no_grad()
def model_fingerprint(model: nn.Module) -> str:
    """16 hex digits identifying the model's architecture and weights."""
    digest = hashlib.sha1(model.config.to_json_string(use_diff=False).encode())
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES)
        digest.update(f"{name}{tuple(p.shape)}".encode())
        digest.update(flat[::step][:_SAMPLES].float().cpu().numpy().tobytes())
    name = str(getattr(model.config, "_name_or_path", "") or model.config.model_type).rstrip("/").split("/")[-1]
    return f"{name or 'model'}-{digest.hexdigest()[:16]}"
