"""What an editing method computes: parameter deltas (stored layout) plus diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class MethodResult:
    """``deltas`` maps parameter names to the change to add; ``info`` holds losses, norms and the like.

    ``low_rank`` (ROME, MEMIT) gives each delta of a down projection as rank-one factors ``(left, right)``:
    the delta equals ``family.down_update(torch.outer(left, right))`` cast to the weight's dtype, so the
    edited projection maps a key k to W k + left (rightᵀ k). Dense edits (fine-tuning) leave it empty.
    """

    deltas: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    low_rank: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
