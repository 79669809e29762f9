"""Hyperparameters of the editing methods: one typed dataclass per method.

The values per model (GPT-J, GPT2-XL, and the ``default`` table every other model uses, with how it was
chosen) live in :mod:`locedit.models.presets`. :func:`locedit.edit.methods.resolve_hparams`
(``resolve_hparams("rome", model, "error-injection", {"v_lr": 0.1})``) returns the method's dataclass with its
layer window, the table's base values, then the problem's overrides, then the caller's. A method or problem
without an entry in the table uses the dataclass defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from locedit.models.presets import HPARAM_TABLES as TABLES, preset_key

EarlyStop = Literal["compat", "rome_original"]
Engine = Literal["fast", "oracle"]  # how v*/z is optimised (locedit.edit.target_value): the same result either way


@dataclass(frozen=True)
class RomeHparams:
    """ROME (docs/algorithms.md#rome). ``early_stop``: compat = never (reference bug), rome_original = stop at loss <
    0.05."""

    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    mom2_adjustment: bool = True
    early_stop: EarlyStop = "compat"
    mom2_corpus: str | None = None  # None: the WikiText files in the data folder
    mom2_n_tokens: int = 20_000
    template_seed: int = 0
    engine: Engine = "fast"


@dataclass(frozen=True)
class MemitHparams:
    """MEMIT for one fact over a window (docs/algorithms.md#memit). ``solver``: sherman_morrison (fast) or compat
    (direct solve)."""

    window: int = 5
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    mom2_update_weight: float = 15000.0
    solver: Literal["sherman_morrison", "compat"] = "sherman_morrison"
    early_stop: EarlyStop = "compat"
    mom2_corpus: str | None = None
    mom2_n_tokens: int = 20_000
    template_seed: int = 0
    engine: Engine = "fast"


@dataclass(frozen=True)
class FtHparams:
    """Constrained fine-tuning of the down projection(s) (docs/algorithms.md#constrained-fine-tuning);
    ``norm_constraint`` is an L-inf bound."""

    window: int = 1
    lr: float = 5e-4
    num_steps: int = 25
    norm_constraint: float = 1e-4
    n_copies: int = 1
    loss_threshold: float = 0.01
    patience: int = 5


Hparams = RomeHparams | MemitHparams | FtHparams


def table_key(model: nn.Module | str) -> str:
    """Which table a model uses: gpt-j, gpt2-xl (GPT-2 with 48 layers) or default."""
    if isinstance(model, str):
        if model not in TABLES:
            raise ValueError(f"unknown hyperparameter table {model!r}; use one of {', '.join(TABLES)}")
        return model
    return preset_key(model)
