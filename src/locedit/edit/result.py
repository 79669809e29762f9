"""What an editing method computes: parameter deltas (stored layout) plus diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class MethodResult:
    """``deltas`` maps parameter names to the change to add; ``info`` holds losses, norms and the like."""

    deltas: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
