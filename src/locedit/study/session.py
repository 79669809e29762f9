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
settings share one :class:`EditSession` (its caches), so a sweep can simply call it in a loop, or hand it
several facts at once with :func:`edit_and_evaluate_many` (their edits computed and evaluated together).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field, is_dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.study.edit_row import EDIT_COLUMNS, EditRow
from locedit.edit.handle import EditHandle
from locedit.edit.hparams import Hparams
from locedit.edit.methods import apply_edit, compute_edits, edit_layers, get_method, resolve_hparams
from locedit.edit.problems import ONoiseMode, PreparedEdit, ProblemContext, get_problem
from locedit.edit.request import NoiseMode
from locedit.edit.result import MethodResult
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
        handle = apply_edit(self.model, self.tok, prepared.request, method, layer, hp, problem=prepared.problem)
        return self._measured(prepared, method, layer, pre, pre_seconds, handle, before, during)

    def _measured(self, prepared: PreparedEdit, method: str, layer: int, pre: Evaluation, pre_seconds: float,
                  handle: EditHandle, before: dict[str, tuple],
                  during: Callable[[EditHandle], Any] | None = None) -> "EditOutcome":
        """Post-eval of the applied ``handle``, ``during``, restore, verify against the ``before`` checksums."""
        with handle:
            post = self.evaluator.evaluate(prepared)
            if during is not None:
                during(handle)
        return self._outcome(prepared, method, layer, tuple(handle.layers), pre, post, handle.edit_seconds,
                             pre_seconds, _restored(self.model, before, handle), handle.info)

    def _outcome(self, prepared: PreparedEdit, method: str, layer: int, layers: tuple[int, ...], pre: Evaluation,
                 post: Evaluation, edit_seconds: float, pre_seconds: float, restored: bool,
                 edit_info: Mapping[str, Any]) -> "EditOutcome":
        row = EditRow(case_id=prepared.fact.case_id, method=method, problem=prepared.problem, layer=layer,
                      layers=layers, target_new=prepared.target_new, request_baseline=prepared.request_baseline,
                      scores=self.evaluator.scores(prepared, pre, post), edit_seconds=edit_seconds,
                      eval_seconds=pre_seconds + post.seconds, weights_restored=restored)
        return EditOutcome(row, prepared, pre, post, edit_info)

    def run_many(self, facts: Sequence[Fact], method: str, layer: int, problem: str, hparams: HparamsArg = None, *,
                 reseed: Callable[[], Any] | None = None) -> "list[EditOutcome | Exception]":
        """:meth:`run` for several facts at the same (method, layer, problem): one outcome per fact, in order, or
        the exception that fact's preparation, evaluation or edit raised (a failing fact fails alone).

        The facts are prepared one by one, pre-evaluated together (uncached ones only), their edits computed
        together (:func:`~locedit.edit.methods.compute_edits`), and, when every edit is rank-one and none is
        noised, post-evaluated together without touching the weights (:meth:`Evaluator.evaluate_many`);
        otherwise each edit is applied, evaluated, restored and verified as :meth:`run` does. ``reseed()``
        runs before each preparation and before each edit computed on its own (a noised request, or a
        method without a joint computation), so a batch gives the rows of units that each reseed and call
        :meth:`run`. ``edit_seconds`` and ``eval_seconds`` are each fact's share of the batch's time.
        """
        layer = check_layer(self.model, layer)
        hp = self.hparams(method, problem, hparams)
        layers = edit_layers(self.model, layer, hp)
        reseed = reseed or (lambda: None)
        out: list[EditOutcome | Exception | None] = [None] * len(facts)
        prepared: dict[int, PreparedEdit] = {}
        for i, fact in enumerate(facts):
            reseed()
            _attempt(out, i, lambda: prepared.__setitem__(i, self.prepare(fact, problem, hp)))
        pre, pre_seconds = self._pre_many(prepared, out)
        todo = [i for i in prepared if i in pre]
        before = _checksums(self.model, layers)
        results = self._compute(method, layer, hp, [prepared[i] for i in todo], reseed)
        for i, result in zip(todo, results):
            if isinstance(result, Exception):
                out[i] = result
        done = [(i, r) for i, r in zip(todo, results) if not isinstance(r, Exception)]
        low_rank = all(r.low_rank and set(r.low_rank) == set(r.deltas) for _, r in done)
        noised = any(prepared[i].request.noise_sigma is not None for i, _ in done)
        if done and low_rank and not noised:
            try:
                posts = self.evaluator.evaluate_many([prepared[i] for i, _ in done], [r.low_rank for _, r in done])
            except Exception:  # noqa: BLE001 - evaluated one by one below, so only the failing fact fails
                posts = []
            restored = _checksums(self.model, layers) == before  # the weights were never touched
            for (i, result), post in zip(done, posts):
                out[i] = self._outcome(prepared[i], method, layer, tuple(layers), pre[i], post,
                                       result.info["edit_seconds"], pre_seconds[i], restored, result.info)
        for i, result in done:
            if out[i] is None:
                _attempt(out, i, lambda: self._measured(prepared[i], method, layer, pre[i], pre_seconds[i],
                                                        _handle(self.model, method, layers, hp, result), before))
        return out  # type: ignore[return-value]

    def _pre_many(self, prepared: dict[int, PreparedEdit],
                  out: list) -> tuple[dict[int, Evaluation], dict[int, float]]:
        """Pre-edit evaluations (together where uncached) and each fact's share of their seconds (0 if cached);
        a fact whose evaluation raises gets its exception in ``out``."""
        pre: dict[int, Evaluation] = {}
        uncached = {i for i, p in prepared.items() if not self.evaluator.is_cached(p)}
        start = time.perf_counter()
        try:
            pre = dict(zip(prepared, self.evaluator.pre_many(list(prepared.values()))))
        except Exception:  # noqa: BLE001 - evaluated one by one, so only the failing fact fails
            for i, p in prepared.items():
                _attempt(out, i, lambda: pre.__setitem__(i, self.evaluator.pre(p)))
        share = (time.perf_counter() - start) / max(1, len(uncached))
        return pre, {i: share if i in uncached else 0.0 for i in prepared}

    def _compute(self, method: str, layer: int, hp: Hparams, prepared: list[PreparedEdit],
                 reseed: Callable[[], Any]) -> list[MethodResult | Exception]:
        """The edits of ``prepared``: together when the method computes several at once and none is noised,
        else one by one, each after ``reseed()``."""
        requests = [p.request for p in prepared]
        if get_method(method).compute_many is not None and all(r.noise_sigma is None for r in requests):
            reseed()
            return compute_edits(self.model, self.tok, requests, method, layer, hp)
        out: list[MethodResult | Exception] = []
        for request in requests:
            reseed()
            out.extend(compute_edits(self.model, self.tok, [request], method, layer, hp))
        return out

    def edit_and_evaluate(self, fact: Fact, method: str, layer: int, problem: str,
                          hparams: HparamsArg = None) -> EditRow:
        """The measured edit as an :class:`EditRow` (see :meth:`run`)."""
        return self.run(fact, method, layer, problem, hparams).row


def _handle(model: nn.Module, method: str, layers: list[int], hp: Hparams, result: MethodResult) -> EditHandle:
    """``result``'s deltas applied, as :func:`~locedit.edit.methods.apply_edit` applies a computed edit."""
    return EditHandle(model, result.deltas, method=get_method(method).name, layers=layers,
                      edit_seconds=result.info["edit_seconds"], info=dict(result.info, hparams=hp))


def _attempt(out: list, i: int, step: Callable[[], Any]) -> None:
    """Run ``step``; its result (an :class:`EditOutcome`) or its exception goes to ``out[i]``."""
    try:
        result = step()
    except Exception as err:  # noqa: BLE001 - reported for this fact alone
        out[i] = err
        return
    if isinstance(result, EditOutcome):
        out[i] = result


@dataclass(frozen=True)
class EditOutcome:
    """What :meth:`EditSession.run` measured: the table row and the pre/post evaluations behind it."""

    row: EditRow
    prepared: PreparedEdit
    pre: Evaluation
    post: Evaluation
    edit_info: Mapping[str, Any] = field(default_factory=dict)  # the method's diagnostics (v_star, z, losses, ...)


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


def edit_and_evaluate_many(model: PreTrainedModel, tok: PreTrainedTokenizerBase, facts: Sequence[Fact],
                           method: str = "rome", layer: int | None = None, problem: str = "error-injection",
                           hparams: HparamsArg = None, *, reseed: Callable[[], Any] | None = None,
                           **settings: Any) -> list[EditRow | Exception]:
    """:func:`edit_and_evaluate` for several facts at once (:meth:`EditSession.run_many`): one row per fact, or
    the exception that failed it.

    >>> from locedit.models import tiny
    >>> from locedit.data.fact import Fact
    >>> model, tok = tiny("gpt2")
    >>> facts = [Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English"),
    ...          Fact(1, "Marie Curie", "The mother tongue of Danielle Darrieux is", "Polish", "English")]
    >>> first, second = edit_and_evaluate_many(model, tok, facts, "ft-1", layer=3, essence=False)
    >>> first.weights_restored, type(second).__name__           # Marie Curie is not in her prompt
    (True, 'SubjectNotFoundError')
    """
    layer = default_layer(model) if layer is None else layer
    outcomes = session_for(model, tok, **settings).run_many(facts, method, layer, problem, hparams, reseed=reseed)
    return [o if isinstance(o, Exception) else o.row for o in outcomes]


def store_row(result: EditRow) -> dict[str, Any]:
    """The "edits" table row of an :func:`edit_and_evaluate` result; raises if the weights were not restored."""
    if not result.weights_restored:
        raise RuntimeError(f"edit of case {result.case_id} did not restore the weights; stop the sweep")
    return result.as_row()
