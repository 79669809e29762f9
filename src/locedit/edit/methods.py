"""Editing methods by name, and the one entry point that applies any of them (docs/algorithms.md#edit-order).

``apply_edit(model, tok, request, "rome", layer=12)`` resolves hyperparameters and the layer set
(ROME/FT-1: the layer; MEMIT/FT-5: the clipped window of 5 around it), precomputes key statistics
outside any noise hook, computes the deltas, applies them and returns an :class:`EditHandle` (use it as a
context manager, or call ``restore()``). A new method is one ``METHODS.register(Method(...))``: its label,
colour, hyperparameters, CLI help and config validation all come from that entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping, Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.finetune import finetune, finetune_many
from locedit.edit.handle import EditHandle
from locedit.edit.hparams import TABLES, FtHparams, Hparams, MemitHparams, RomeHparams, table_key
from locedit.edit.memit import memit, memit_many
from locedit.edit.problems import get_problem
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.edit.rome import rome, rome_many
from locedit.edit.stats import SecondMoments, moments_for
from locedit.models.families import family_for
from locedit.models.tokens import subject_span, target_text
from locedit.registry import Registry
from locedit.windows import window_layers

MethodFn = Callable[[nn.Module, PreTrainedTokenizerBase, EditRequest, list[int], Hparams, "SecondMoments | None"],
                    MethodResult]
ManyFn = Callable[[nn.Module, PreTrainedTokenizerBase, Sequence[EditRequest], list[int], Hparams,
                   "SecondMoments | None"], list[MethodResult]]


@dataclass(frozen=True)
class Method:
    """A registered editing method: everything the toolkit knows about it.

    ``compute`` returns the deltas for the edit layers; ``hparams`` is its hyperparameter dataclass (values
    per model and problem in :data:`locedit.edit.hparams.TABLES`); ``label`` and ``color`` name and draw it
    in tables and figures; ``uses_stats``: it reads the key second moments (computed before any edit);
    ``window``: how many layers around the central one it edits (the hyperparameters' ``window``, if the
    class has one, starts from it). ``compute_many``, when a method has one, computes the results of several
    requests at the same layers together and equals ``compute`` applied to each in turn.
    """

    name: str
    compute: MethodFn
    hparams: type
    label: str
    color: str
    uses_stats: bool
    window: int = 1
    aliases: tuple[str, ...] = ()
    compute_many: ManyFn | None = None

    def check_overrides(self, overrides: Mapping[str, Any]) -> None:
        """One-line error for hyperparameter names the method's dataclass does not have."""
        valid = {f.name for f in fields(self.hparams)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"unknown {self.name} hyperparameter(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(valid))}")


METHODS: Registry[Method] = Registry("editing method")
for _m in (  # paper order (Hase et al. 2023, Tables 3-6)
        Method("ft-1", finetune, FtHparams, "FT-1", "#1f77b4", uses_stats=False, window=1, compute_many=finetune_many),
        Method("ft-5", finetune, FtHparams, "FT-5", "#ff7f0e", uses_stats=False, window=5, compute_many=finetune_many),
        Method("rome", rome, RomeHparams, "ROME", "#2ca02c", uses_stats=True, window=1, compute_many=rome_many),
        Method("memit", memit, MemitHparams, "MEMIT", "#d62728", uses_stats=True, window=5, aliases=("memit5",),
               compute_many=memit_many)):
    METHODS.register(_m)


def get_method(name: str) -> Method:
    """The registered method ``name`` finds (its name or label, any case)."""
    return METHODS.get(name)


def resolve_hparams(method: str, model: nn.Module | str, problem: str | None = None,
                    overrides: Mapping[str, Any] | None = None) -> Hparams:
    """The hyperparameters of ``method`` for ``model`` (a model or a table name) and ``problem``.

    The method's dataclass, with its window, the table's base values, the problem's values, then ``overrides``.
    """
    spec = get_method(method)
    problem_name = get_problem(problem).name if problem is not None else None
    entry = TABLES[table_key(model)].get(spec.name, {})
    window = {"window": spec.window} if "window" in {f.name for f in fields(spec.hparams)} else {}
    values: dict[str, Any] = {**window, **entry.get("base", {}),
                              **(entry.get(problem_name, {}) if problem_name else {})}
    spec.check_overrides(overrides or {})
    return replace(spec.hparams(**values), **dict(overrides or {}))


def edit_layers(model: nn.Module, layer: int, hparams: Hparams) -> list[int]:
    """The layers an edit centred on ``layer`` touches (window from the hyperparameters, 1 if none)."""
    return window_layers(layer, getattr(hparams, "window", 1), family_for(model).n_layers(model))


def validate_request(tok: PreTrainedTokenizerBase, request: EditRequest) -> None:
    """One-line errors for an empty target, an unknown objective, or a subject missing from the prompt."""
    target_text(request.target)
    if request.objective not in ("maximize", "minimize"):
        raise ValueError(f"unknown objective {request.objective!r}; use 'maximize' or 'minimize'")
    subject_span(tok, request.prompt, request.subject)


def apply_edit(model: nn.Module, tok: PreTrainedTokenizerBase, request: EditRequest, method: str, layer: int,
               hparams: Hparams | None = None, stats: SecondMoments | None = None, *,
               problem: str | None = None) -> EditHandle:
    """Compute ``method``'s edit for ``request`` centred on ``layer``, apply it, and return its handle."""
    spec = get_method(method)
    hp = hparams if hparams is not None else resolve_hparams(spec.name, model, problem)
    layers = edit_layers(model, layer, hp)
    validate_request(tok, request)
    if spec.uses_stats:
        if stats is None:
            stats = moments_for(model, tok, hp.mom2_corpus, hp.mom2_n_tokens)
        stats.prefetch(layers)
    start = time.perf_counter()
    result = spec.compute(model, tok, request, layers, hp, stats)
    seconds = time.perf_counter() - start
    info = dict(result.info, hparams=hp, stats=stats.info.to_dict() if stats is not None else None)
    return EditHandle(model, result.deltas, method=spec.name, layers=layers, edit_seconds=seconds, info=info)


def compute_edits(model: nn.Module, tok: PreTrainedTokenizerBase, requests: Sequence[EditRequest], method: str,
                  layer: int, hparams: Hparams, stats: SecondMoments | None = None) -> list[MethodResult | Exception]:
    """``method``'s results for several requests centred on the same ``layer``, without applying them.

    One entry per request, in order: its :class:`MethodResult`, or the exception its edit raised (a failing
    request fails alone: when the joint computation of ``compute_many`` raises, each request is computed
    on its own). ``info["edit_seconds"]`` is the request's share of the time spent.
    """
    spec = get_method(method)
    layers = edit_layers(model, layer, hparams)
    if spec.uses_stats:
        if stats is None:
            stats = moments_for(model, tok, hparams.mom2_corpus, hparams.mom2_n_tokens)
        stats.prefetch(layers)
    out: list[MethodResult | Exception | None] = [_request_error(tok, r) for r in requests]
    pending = [i for i, r in enumerate(out) if r is None]
    if spec.compute_many is not None and len(pending) > 1:
        start = time.perf_counter()
        try:
            joint = spec.compute_many(model, tok, [requests[i] for i in pending], layers, hparams, stats)
        except Exception:  # noqa: BLE001 - recomputed one by one below, so only the failing request fails
            joint = []
        for i, result in zip(pending, joint):
            out[i] = _timed(result, (time.perf_counter() - start) / len(pending))
    for i in (i for i in pending if out[i] is None):
        start = time.perf_counter()
        try:
            out[i] = _timed(spec.compute(model, tok, requests[i], layers, hparams, stats), time.perf_counter() - start)
        except Exception as err:  # noqa: BLE001 - reported per request
            out[i] = err
    return out  # type: ignore[return-value]


def _request_error(tok: PreTrainedTokenizerBase, request: EditRequest) -> Exception | None:
    try:
        validate_request(tok, request)
    except Exception as err:  # noqa: BLE001 - reported per request
        return err
    return None


def _timed(result: MethodResult, seconds: float) -> MethodResult:
    result.info["edit_seconds"] = seconds
    return result
