"""Hyperparameters of the editing methods: one typed dataclass per method, one table of values per model.

The values per model (GPT-J, GPT2-XL, and the ``default`` table every other model uses, with how it was
chosen) live in :mod:`locedit.models.presets`.

``resolve_hparams("rome", model, "error-injection", {"v_lr": 0.1})`` returns the dataclass with the
table's base values, then the problem's overrides, then the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Mapping

from torch import nn

from locedit.models.presets import HPARAM_TABLES as TABLES, preset_key

PROBLEMS = ("error-injection", "tracing-reversal", "fact-erasure", "fact-amplification", "fact-forcing")
METHOD_NAMES = ("rome", "memit", "ft-1", "ft-5")

EarlyStop = Literal["compat", "rome_original"]


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
_CLASSES: dict[str, type] = {"rome": RomeHparams, "memit": MemitHparams, "ft-1": FtHparams, "ft-5": FtHparams}

def check_method(method: str) -> str:
    if method not in _CLASSES:
        raise ValueError(f"unknown editing method {method!r}; use one of {', '.join(METHOD_NAMES)}")
    return method


def check_problem(problem: str | None) -> str | None:
    if problem is not None and problem not in PROBLEMS:
        raise ValueError(f"unknown editing problem {problem!r}; use one of {', '.join(PROBLEMS)}")
    return problem


def table_key(model: nn.Module | str) -> str:
    """Which table a model uses: gpt-j, gpt2-xl (GPT-2 with 48 layers) or default."""
    if isinstance(model, str):
        if model not in TABLES:
            raise ValueError(f"unknown hyperparameter table {model!r}; use one of {', '.join(TABLES)}")
        return model
    return preset_key(model)


def resolve_hparams(method: str, model: nn.Module | str, problem: str | None = None,
                    overrides: Mapping[str, Any] | None = None) -> Hparams:
    """The hyperparameters of ``method`` for ``model`` (a model or a table name) and ``problem``."""
    cls = _CLASSES[check_method(method)]
    check_problem(problem)
    entry = TABLES[table_key(model)][method]
    values: dict[str, Any] = {**entry.get("base", {}), **(entry.get(problem, {}) if problem else {})}
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides or {}) - valid)
    if unknown:
        raise ValueError(f"unknown {method} hyperparameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return replace(cls(**values), **dict(overrides or {}))
