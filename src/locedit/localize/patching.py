"""What a patching run is made of: what to corrupt, what to restore (or zero) where, and what to measure.

Causal tracing (docs/algorithms.md#causal-tracing) and representation zeroing
(docs/algorithms.md#representation-zeroing) are both "patch grids": for every cell
(token t, centre layer c) and every :class:`Restore`, overwrite a site's output (:data:`KIND_SITES`) at
token t in the layers of the clipped window around c, and measure the mean joint probability of the
target tokens over the corrupted samples. Two engines compute a grid from the same :class:`PatchProblem`:
:func:`locedit.localize.oracle.oracle_grid` (one forward per cell, nothing cached) and
:func:`locedit.localize.engine.fast_grid` (exact reuse of cached states). Tests hold them equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from locedit.models.families import Family, Site, family_for
from locedit.models.interventions import Edit
from locedit.windows import window_layers

Value = Literal["clean", "zero"]
KIND_SITES = {"mlp": "mlp_output", "attn": "attn_output", "block": "block_output"}  # restore kind: its site
KINDS = tuple(KIND_SITES)


@dataclass(frozen=True)
class Restore:
    """Overwrite the output of site ``kind`` (mlp, attn, block) over a ``window`` of layers with ``value``.

    ``clean``: the value of the same site in the uncorrupted run (causal tracing); ``zero``: 0 (zeroing).
    """

    kind: str = "mlp"
    window: int = 5
    value: Value = "clean"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown site kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.value not in ("clean", "zero"):
            raise ValueError(f"unknown restore value {self.value!r}; use clean or zero")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")

    @property
    def key(self) -> str:
        """``kind:window`` (``zero:window`` for zeroing), the name of this grid in results and files."""
        return f"{self.kind}:{self.window}" if self.value == "clean" else f"zero-{self.kind}:{self.window}"

    def layers(self, centre: int, n_layers: int) -> tuple[int, int]:
        """Half-open layer range [l0, l1) restored for ``centre`` (clipped at both ends, docs/algorithms.md#windows)."""
        ls = window_layers(centre, self.window, n_layers)
        return ls[0], ls[-1] + 1


@dataclass(frozen=True)
class Corruption:
    """Gaussian noise ``sigma * noise[i]`` added to the token embeddings at ``span`` of corrupted row i.

    ``noise`` is [samples, s1 - s0, d] float64, drawn once per fact so every cell shares the same draws.
    """

    span: tuple[int, int]
    sigma: float
    noise: torch.Tensor

    @property
    def samples(self) -> int:
        return int(self.noise.shape[0])


@dataclass(frozen=True)
class PatchProblem:
    """One fact as token ids: ``ids`` = prompt ids + target ids; the measure is p(target | prompt)."""

    ids: tuple[int, ...]
    n_prompt: int
    corruption: Corruption | None = None  # None: the base run is the clean run (zeroing)

    @property
    def n_target(self) -> int:
        return len(self.ids) - self.n_prompt

    @property
    def target(self) -> tuple[int, ...]:
        return self.ids[self.n_prompt:]

    @property
    def samples(self) -> int:
        """Rows of the base (corrupted) run: the noise samples, or 1 clean row."""
        return self.corruption.samples if self.corruption is not None else 1


@dataclass
class PatchGrid:
    """An engine's answer: base probabilities and one [len(tokens), L] grid per restore."""

    p_clean: float
    p_base: float  # mean over the corrupted rows with nothing restored (= p_clean without corruption)
    tokens: list[int]
    grids: dict[Restore, np.ndarray] = field(default_factory=dict)


def restore_site(fam: Family, kind: str, layer: int) -> Site:
    """The site a :class:`Restore` of ``kind`` overwrites at ``layer``."""
    return fam.site(KIND_SITES[kind], layer)


def add_noise(corruption: Corruption, first_row: int) -> Edit:
    """Edit of the ``embed_output`` site: rows first_row.. get ``sigma * noise`` at the span."""
    s0, s1 = corruption.span

    def edit(output: torch.Tensor) -> torch.Tensor:
        out = output.clone()
        rows = slice(first_row, first_row + corruption.samples)
        out[rows, s0:s1] += (corruption.sigma * corruption.noise).to(device=out.device, dtype=out.dtype)
        return out

    return edit


def target_log_prob(logits: torch.Tensor, target: Sequence[int]) -> torch.Tensor:
    """Summed log p(target) per row from the logits that predict each target token ([rows, K, V])."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    idx = torch.tensor(list(target), device=logits.device)
    return lp.gather(2, idx.expand(lp.shape[0], -1)[..., None])[..., 0].sum(1)


def mean_prob(log_probs: torch.Tensor) -> float:
    """Mean over rows of exp(summed log-prob), in float64."""
    return float(log_probs.double().exp().mean())


def validate_problem(model: nn.Module, problem: PatchProblem, restores: Sequence[Restore], tokens: Sequence[int]) -> None:
    """One-line errors for a target-less problem, out-of-range tokens, windows larger than the model."""
    n_layers = family_for(model).n_layers(model)
    if problem.n_target < 1:
        raise ValueError("empty target: give at least one target token")
    for r in restores:
        if r.window > n_layers:
            raise ValueError(f"window {r.window} is larger than the model's {n_layers} layers; use --window <= {n_layers}")
    bad = [t for t in tokens if not 0 <= t < problem.n_prompt]
    if bad:
        raise ValueError(f"tokens {bad} are outside the prompt (0..{problem.n_prompt - 1})")
