"""locedit: where language models store facts, and whether that tells you where to edit them.

The public API, imported on first use (``import locedit`` itself loads neither torch nor transformers):

>>> import locedit
>>> model, tok = locedit.tiny("llama")                    # random weights, offline; or locedit.load_model()
>>> fact = locedit.Fact(case_id=0, subject="Danielle Darrieux", target_true="French", target_new="English",
...                     prompt="The mother tongue of Danielle Darrieux is")
>>> traced = locedit.trace(model, tok, fact, settings=locedit.TraceSettings(windows=(3,), samples=2, noise=0.5))
>>> traced.layer_effect("mlp", 3).shape
(6,)
>>> row = locedit.edit_and_evaluate(model, tok, fact, method="ft-1", layer=2, essence=False)
>>> row.method, row.layers, row.weights_restored
('ft-1', (2,), True)

The registries list what can be named in calls and configs:

>>> sorted(locedit.METHODS), "error-injection" in locedit.PROBLEMS, "rewrite_score" in locedit.METRICS
(['ft-1', 'ft-5', 'memit', 'rome'], True, True)

``locedit.edit`` is the :func:`~locedit.study.session.edit` function, not the ``locedit.edit`` subpackage: import
the subpackage's modules by their full names (``from locedit.edit.methods import get_method``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported by __getattr__ on first use)
_EXPORTS: dict[str, str] = {
    "load_model": "locedit.models.loading",
    "tiny": "locedit.models.tiny",
    "Fact": "locedit.data.fact",
    "trace": "locedit.localize.causal_trace",
    "zero": "locedit.localize.causal_trace",
    "TraceSettings": "locedit.localize.settings",
    "TraceResult": "locedit.localize.result",
    "ZeroingResult": "locedit.localize.result",
    "edit": "locedit.study.session",
    "edit_and_evaluate": "locedit.study.session",
    "edit_and_evaluate_many": "locedit.study.session",
    "EditHandle": "locedit.edit.handle",
    "EditRow": "locedit.study.edit_row",
    "run": "locedit.experiment.api",
    "load_config": "locedit.experiment.config",
    "ExperimentConfig": "locedit.experiment.config",
    "RunResult": "locedit.experiment.runner",
    # registries: name -> entry
    "METHODS": "locedit.edit.methods",
    "PROBLEMS": "locedit.edit.problems",
    "METRICS": "locedit.evaluate.metrics",
    "FIGURES": "locedit.analysis.figures",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562) and keep the value."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'locedit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """The ``locedit`` module, which keeps a public function whose name is also a subpackage's.

    Importing ``locedit.edit.methods`` binds the subpackage as ``locedit.edit``; this keeps the attribute for
    the function (the subpackage stays in ``sys.modules`` and importable by its full name).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
