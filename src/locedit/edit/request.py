"""What an edit is asked to do, independent of the method that does it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Objective = Literal["maximize", "minimize"]
NoiseMode = Literal["compat", "fixed"]


@dataclass(frozen=True)
class EditRequest:
    """One edit: raise (or, for Fact Erasure, lower) p(target | prompt).

    ``noise_sigma`` set means the subject is noised during the whole edit (Fact Forcing,
    docs/algorithms.md#fact-forcing-noise):
    ``compat`` noises the plain prompt's subject span in every row, ``fixed`` each row's own span.
    """

    prompt: str
    subject: str
    target: str
    objective: Objective = "maximize"
    noise_sigma: float | None = None
    noise_mode: NoiseMode = "compat"
    noise_seed: int = 1

    @property
    def minimize(self) -> bool:
        return self.objective == "minimize"
