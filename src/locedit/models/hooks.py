"""Forward hooks installed by context managers that always remove them.

Hooks read in forward order: ``with hooked(model, {"model.layers.3.mlp": fn}): model(...)``.
A hook function takes ``(module, inputs, output)`` and returns a replacement output or ``None``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

OutputHook = Callable[[nn.Module, tuple, Any], Any]
InputHook = Callable[[nn.Module, tuple], Any]


class NoSuchModuleError(KeyError):
    """A hook named a module the model does not have."""


def _resolve(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise NoSuchModuleError(f"model has no module {name!r}; check the family table") from None


@contextmanager
def hooked(
    model: nn.Module,
    outputs: Mapping[str, OutputHook] | None = None,
    inputs: Mapping[str, InputHook] | None = None,
) -> Iterator[None]:
    """Install forward hooks (and pre-hooks on ``inputs``) for the duration of the block."""
    handles = []
    try:
        for name, fn in (outputs or {}).items():
            handles.append(_resolve(model, name).register_forward_hook(fn))
        for name, fn in (inputs or {}).items():
            handles.append(_resolve(model, name).register_forward_pre_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def hidden_of(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a module output that may be a tuple (blocks, attention)."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """``output`` with its hidden-state tensor replaced by ``hidden``."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the needed activation is captured."""


@contextmanager
def capture(model: nn.Module, names: list[str], *, what: str = "output", stop_after: str | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output (or first input, ``what="input"``) of modules during the block.

    With ``stop_after`` the forward pass is cut short after that module ran; call the model
    inside :func:`run_until_stopped` to swallow the :class:`StopForward`.
    """
    store: dict[str, torch.Tensor] = {}

    def make(name: str) -> Callable:
        def out_hook(module, inp, out):
            store[name] = hidden_of(out)
            if name == stop_after:
                raise StopForward

        def in_hook(module, inp):
            store[name] = inp[0]
            if name == stop_after:
                raise StopForward

        return out_hook if what == "output" else in_hook

    fns = {n: make(n) for n in names}
    with hooked(model, outputs=fns if what == "output" else None, inputs=fns if what == "input" else None):
        yield store


def run_until_stopped(model: nn.Module, **kwargs: Any) -> Any:
    """Run ``model(**kwargs)``; return ``None`` if a hook stopped it early."""
    try:
        return model(**kwargs)
    except StopForward:
        return None
