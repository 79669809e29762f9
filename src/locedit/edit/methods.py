"""Editing methods by name, and the one entry point that applies any of them (docs/algorithms.md#edit-order).

``apply_edit(model, tok, request, "rome", layer=12)`` resolves hyperparameters and the layer set
(ROME/FT-1: the layer; MEMIT/FT-5: the clipped window of 5 around it), precomputes key statistics
outside any noise hook, computes the deltas, applies them and returns an :class:`EditHandle` (use it as a
context manager, or call ``restore()``). A new method is one :func:`register_method` call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from torch import nn
from transformers import PreTrainedTokenizerBase

from locedit.edit.finetune import finetune
from locedit.edit.handle import EditHandle
from locedit.edit.hparams import Hparams, check_problem, resolve_hparams
from locedit.edit.memit import memit
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.edit.rome import rome
from locedit.edit.stats import SecondMoments, moments_for
from locedit.models.families import family_for
from locedit.models.tokens import subject_span, target_text
from locedit.windows import window_layers

MethodFn = Callable[[nn.Module, PreTrainedTokenizerBase, EditRequest, list[int], Hparams, "SecondMoments | None"],
                    MethodResult]


@dataclass(frozen=True)
class Method:
    """A registered editing method: how to compute its deltas and whether it reads key statistics."""

    name: str
    compute: MethodFn
    uses_stats: bool


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (its hyperparameters must be known to :func:`resolve_hparams`)."""
    METHODS[method.name] = method
    return method


for _m in (Method("rome", rome, True), Method("memit", memit, True),
           Method("ft-1", finetune, False), Method("ft-5", finetune, False)):
    register_method(_m)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown editing method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]


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
    hp = hparams if hparams is not None else resolve_hparams(method, model, check_problem(problem))
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
    return EditHandle(model, result.deltas, method=method, layers=layers, edit_seconds=seconds, info=info)
