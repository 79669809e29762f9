"""Edit a fact and measure the edit: the one-call API over problems, methods and evaluation
(docs/algorithms.md#edit-order).

>>> from locedit.models import tiny
>>> from locedit.data.fact import Fact
>>> from locedit.study.session import edit, edit_and_evaluate
>>> model, tok = tiny("llama")
>>> fact = Fact(case_id=0, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is",
...             target_true="French", target_new="English")
>>> row = edit_and_evaluate(model, tok, fact, method="ft-1", layer=2, essence=False)
>>> row.rewrite_post > row.rewrite_pre, row.weights_restored
(True, True)
>>> with edit(model, tok, fact, method="ft-1", layer=2) as handle:           # weights restored on exit
...     handle.layers
[2]

On the embedded SmolLM2-135M (``load_model("smollm2-135m")``), ROME at layer 12 gives this fact a
rewrite score above 0.9 (``tests/test_edit_api.py`` checks it).

:func:`edit_and_evaluate` runs: pre-edit evaluation (cached per model, fact and problem), the edit, the
post-edit evaluation, restore, and a cheap check that the edited tensors are back to their original
values. It returns an :class:`EditRow`: the "edits" table's columns (:data:`locedit.experiment.schema.TABLES`)
plus ``weights_restored``; :func:`store_row` gives the table's columns. Calls with the same model and
settings share one :class:`EditSession` (its caches), so a sweep can simply call it in a loop.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, is_dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.study.edit_row import EDIT_COLUMNS, EditRow
from locedit.edit.handle import EditHandle
from locedit.edit.hparams import Hparams
from locedit.edit.methods import apply_edit, edit_layers, get_method, resolve_hparams
from locedit.edit.problems import ONoiseMode, PreparedEdit, ProblemContext, get_problem
from locedit.edit.request import NoiseMode
from locedit.evaluate.evaluation import Evaluation
from locedit.evaluate.evaluator import Evaluator
from locedit.models.families import family_for
from locedit.models.tokens import Spacing

HparamsArg = Hparams | Mapping[str, Any] | None


def default_layer(model: nn.Module) -> int:
    """A middle edit layer: 2/5 of the depth (12 of SmolLM2's 30 layers)."""
    return family_for(model).n_layers(model) * 2 // 5


def check_layer(model: nn.Module, layer: int) -> int:
    n = family_for(model).n_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n:
        raise ValueError(f"layer {layer} is out of range for a model with {n} layers; use 0..{n - 1}")
    return int(layer)


@dataclass(frozen=True)
class SessionSettings:
    """Settings that change what an edit targets or how it is scored (part of every cache key)."""

    noise_sigma: float | None = None
    o_noise_mode: ONoiseMode = "compat"
    ff_noise_mode: NoiseMode = "compat"
    essence: bool = True
    average: bool = False
    spacing: Spacing = "fixed"


class EditSession:
    """Everything that stays fixed while one model is edited many times: the problem context (noise level,
    o_noise and Fact Forcing baseline caches) and the evaluator (essence texts, pre-edit evaluations).

    The caches assume the model's own weights do not change between calls (every edit here is restored);
    call ``evaluator.clear()`` after changing them for good."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase,
                 settings: SessionSettings = SessionSettings()):
        self.model, self.tok, self.settings = model, tok, settings
        self.context = ProblemContext(model, tok, sigma=settings.noise_sigma, o_noise_mode=settings.o_noise_mode,
                                      ff_noise_mode=settings.ff_noise_mode)
        self.evaluator = Evaluator(model, tok, essence=settings.essence, average=settings.average,
                                   spacing=settings.spacing)

    def hparams(self, method: str, problem: str, hparams: HparamsArg = None) -> Hparams:
        """``hparams`` as given (a dataclass), or the table's values for (method, problem) plus overrides."""
        get_method(method)
        if hparams is not None and is_dataclass(hparams):
            return hparams  # type: ignore[return-value]
        return resolve_hparams(method, self.model, get_problem(problem).name, hparams)  # type: ignore[arg-type]

    def prepare(self, fact: Fact, problem: str, hp: Hparams) -> PreparedEdit:
        """The problem's request for ``fact``; the FF baseline averages as many noised copies as FT trains on."""
        return get_problem(problem).prepare(self.context, fact, baseline_rows=getattr(hp, "n_copies", 1))

    def _checked(self, fact: Fact, method: str, layer: int, problem: str,
                 hparams: HparamsArg) -> tuple[Hparams, PreparedEdit]:
        hp = self.hparams(method, problem, hparams)
        edit_layers(self.model, layer, hp)  # raises for a window that does not fit
        return hp, self.prepare(fact, problem, hp)

    def edit(self, fact: Fact, method: str, layer: int, problem: str, hparams: HparamsArg = None) -> EditHandle:
        layer = check_layer(self.model, layer)
        hp, prepared = self._checked(fact, method, layer, problem, hparams)
        return apply_edit(self.model, self.tok, prepared.request, method, layer, hp, problem=prepared.problem)

    def run(self, fact: Fact, method: str, layer: int, problem: str, hparams: HparamsArg = None, *,
            during: Callable[[EditHandle], Any] | None = None) -> "EditOutcome":
        """Pre-eval (cached), edit, post-eval, restore, verify; the row and both evaluations.

        ``during(handle)`` runs while the edit is applied (e.g. to generate text from the edited model).
        """
        layer = check_layer(self.model, layer)
        hp, prepared = self._checked(fact, method, layer, problem, hparams)
        start = time.perf_counter()
        cached = self.evaluator.is_cached(prepared)
        pre = self.evaluator.pre(prepared)
        pre_seconds = 0.0 if cached else time.perf_counter() - start
        before = _checksums(self.model, edit_layers(self.model, layer, hp))
        with apply_edit(self.model, self.tok, prepared.request, method, layer, hp, problem=prepared.problem) as handle:
            post = self.evaluator.evaluate(prepared)
            if during is not None:
                during(handle)
        row = EditRow(case_id=fact.case_id, method=method, problem=prepared.problem, layer=layer,
                      layers=tuple(handle.layers), target_new=prepared.target_new,
                      request_baseline=prepared.request_baseline, scores=self.evaluator.scores(prepared, pre, post),
                      edit_seconds=handle.edit_seconds, eval_seconds=pre_seconds + post.seconds,
                      weights_restored=_restored(self.model, before, handle))
        return EditOutcome(row, prepared, pre, post)

    def edit_and_evaluate(self, fact: Fact, method: str, layer: int, problem: str,
                          hparams: HparamsArg = None) -> EditRow:
        """The measured edit as an :class:`EditRow` (see :meth:`run`)."""
        return self.run(fact, method, layer, problem, hparams).row


@dataclass(frozen=True)
class EditOutcome:
    """What :meth:`EditSession.run` measured: the table row and the pre/post evaluations behind it."""

    row: EditRow
    prepared: PreparedEdit
    pre: Evaluation
    post: Evaluation


# -- restoration check ------------------------------------------------------------------------------

def _down_params(model: nn.Module, layers: list[int]) -> dict[str, torch.Tensor]:
    fam = family_for(model)
    return {f"{fam.down_name(l)}.{n}": p for l in layers for n, p in fam.module(model, fam.mlp_down, l).named_parameters()}


@torch.no_grad()
def _checksum(p: torch.Tensor) -> tuple:
    """Float64 sum, absolute sum and a strided sample: changes under any realistic edit, costs one read."""
    flat = p.detach().reshape(-1)
    step = max(1, flat.numel() // 256)
    return float(flat.double().sum()), float(flat.double().abs().sum()), tuple(flat[::step].tolist())


def _checksums(model: nn.Module, layers: list[int]) -> dict[str, tuple]:
    return {name: _checksum(p) for name, p in _down_params(model, layers).items()}


def _restored(model: nn.Module, before: dict[str, tuple], handle: EditHandle) -> bool:
    """Whether every tensor the edit touched is back to its pre-edit checksum (False if it touched others)."""
    params = dict(model.named_parameters())
    if not set(handle.deltas) <= set(before):
        return False
    return not handle.applied and all(_checksum(params[n]) == before[n] for n in handle.deltas)


# -- module-level entry points ------------------------------------------------------------------------

_SESSIONS: "weakref.WeakKeyDictionary[nn.Module, dict[SessionSettings, EditSession]]" = weakref.WeakKeyDictionary()


def session_for(model: PreTrainedModel, tok: PreTrainedTokenizerBase, **settings: Any) -> EditSession:
    """The shared :class:`EditSession` of ``model`` for these settings (created on first use)."""
    key = SessionSettings(**settings)
    per_model = _SESSIONS.setdefault(model, {})
    if key not in per_model:
        per_model[key] = EditSession(model, tok, key)
    return per_model[key]


def edit(model: PreTrainedModel, tok: PreTrainedTokenizerBase, fact: Fact, method: str = "rome",
         layer: int | None = None, problem: str = "error-injection", hparams: HparamsArg = None,
         **settings: Any) -> EditHandle:
    """Apply ``method``'s edit of ``fact`` for ``problem`` at ``layer`` (default: :func:`default_layer`).

    Returns the :class:`EditHandle`; use it as a context manager or call ``restore()``.

    >>> from locedit.models import tiny
    >>> from locedit.data.fact import Fact
    >>> from locedit.edit.handle import snapshot, weights_equal
    >>> model, tok = tiny("gpt2")
    >>> fact = Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English")
    >>> before = snapshot(model)
    >>> with edit(model, tok, fact, method="ft-1", layer=3) as handle:
    ...     weights_equal(model, before)
    False
    >>> weights_equal(model, before)
    True
    """
    layer = default_layer(model) if layer is None else layer
    return session_for(model, tok, **settings).edit(fact, method, layer, problem, hparams)


def edit_and_evaluate(model: PreTrainedModel, tok: PreTrainedTokenizerBase, fact: Fact, method: str = "rome",
                      layer: int | None = None, problem: str = "error-injection", hparams: HparamsArg = None,
                      **settings: Any) -> EditRow:
    """Edit, evaluate before/after, restore: an :class:`EditRow` (the "edits" row plus ``weights_restored``).

    ``settings``: noise_sigma, o_noise_mode, ff_noise_mode, essence, average, spacing (see
    :class:`SessionSettings`). ``hparams``: a hyperparameter dataclass or a mapping of overrides.

    >>> from locedit.models import tiny
    >>> from locedit.data.fact import Fact
    >>> model, tok = tiny("gpt2")
    >>> fact = Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English")
    >>> row = edit_and_evaluate(model, tok, fact, "ft-1", layer=3, essence=False)
    >>> row.layers, row.request_baseline, row.weights_restored, row.essence_score is None
    ((3,), 'French', True, True)
    >>> 0 <= row.rewrite_score <= 1 and list(store_row(row)) == list(EDIT_COLUMNS)
    True
    """
    layer = default_layer(model) if layer is None else layer
    return session_for(model, tok, **settings).edit_and_evaluate(fact, method, layer, problem, hparams)


def store_row(result: EditRow) -> dict[str, Any]:
    """The "edits" table row of an :func:`edit_and_evaluate` result; raises if the weights were not restored."""
    if not result.weights_restored:
        raise RuntimeError(f"edit of case {result.case_id} did not restore the weights; stop the sweep")
    return result.as_row()
