"""The one way locedit reads and changes activations: edits at named sites, installed for one block.

A :class:`~locedit.models.families.Site` names the input or output of a module (``family.site(name,
layer)``). An *edit* is a function of that activation's hidden-state tensor returning a replacement,
or ``None`` to leave it as it is (a read). Edits are installed by context managers that always remove
them, also on exceptions, and read in forward order::

    fam = family_for(model)
    with intervene(model, {fam.site("mlp_output", 3): lambda h: h * 0}):
        zeroed = model(input_ids=ids).logits
    with capture(model, [fam.site("mlp_down_input", 5)], stop_after=fam.site("mlp_down_input", 5)) as got:
        run_until_stopped(model, input_ids=ids)      # the forward ends right before the down projection

The primitive takes care of what differs between modules: an output may be a tuple whose first item
is the hidden state; a block may receive its hidden state positionally or as ``hidden_states=``.
:func:`recording_calls` keeps the whole argument list of a module's calls, so a block can be run again
on another hidden state with the arguments the model itself gave it (:meth:`ModuleCall.replay`).
What is installed is known (:func:`active_edits`); a site that matches no module is an error.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence
from weakref import WeakKeyDictionary

import torch
from torch import nn

from locedit.models.families import Site

Edit = Callable[[torch.Tensor], "torch.Tensor | None"]

HIDDEN_KEYWORD = "hidden_states"


class NoSuchSiteError(LookupError):
    """An intervention named a site whose module the model does not have."""


class StopForward(Exception):
    """Raised after a site's edit to end the forward pass once the needed activation is read."""


@dataclass(frozen=True, eq=False)
class Installed:
    """One edit installed at one site (compared by identity)."""

    site: Site
    edit: Any


# What this module installed on which model (entries leave with their context; models are held weakly).
_INSTALLED: WeakKeyDictionary[nn.Module, list[Installed]] = WeakKeyDictionary()


def active_edits(model: nn.Module) -> list[Installed]:
    """The edits installed on ``model`` right now, in installation order."""
    return list(_INSTALLED.get(model, ()))


def module_at(model: nn.Module, site: Site) -> nn.Module:
    """The module of ``site`` (bound to its layer), or :class:`NoSuchSiteError` naming the site."""
    try:
        return model.get_submodule(site.path)
    except AttributeError:
        raise NoSuchSiteError(f"site {site} matches no module of this {type(model).__name__}; "
                              "check the family table in locedit/models/families.py") from None


def _hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _input_hidden(args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor:
    if args:
        return args[0]
    if HIDDEN_KEYWORD in kwargs:
        return kwargs[HIDDEN_KEYWORD]
    raise TypeError(f"module called without a positional input or {HIDDEN_KEYWORD}= (keywords: {sorted(kwargs)})")


def _with_input(args: tuple, kwargs: dict[str, Any], hidden: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, kwargs | {HIDDEN_KEYWORD: hidden}


def _output_hook(edit: Edit, stop: bool) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        new = edit(_hidden_of(output))
        if stop:
            raise StopForward
        return None if new is None else _with_hidden(output, new)

    return hook


def _input_hook(edit: Edit, stop: bool) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
        new = edit(_input_hidden(args, kwargs))
        if stop:
            raise StopForward
        return None if new is None else _with_input(args, kwargs, new)

    return hook


@contextmanager
def _installed(model: nn.Module, entries: Sequence[tuple[Site, Any, Callable]]) -> Iterator[None]:
    """Register each (site, what is installed, its hook) for the block: pre-hooks (with kwargs) on inputs,
    forward hooks on outputs."""
    handles, mine = [], []
    registry = _INSTALLED.setdefault(model, [])
    try:
        for site, edit, hook in entries:
            module = module_at(model, site)
            if site.position == "input":
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(hook))
            mine.append(Installed(site, edit))
            registry.append(mine[-1])
        yield
    finally:
        for handle in handles:
            handle.remove()
        removed = {id(entry) for entry in mine}
        registry[:] = [entry for entry in registry if id(entry) not in removed]


@contextmanager
def intervene(model: nn.Module, edits: Mapping[Site, Edit], *, stop_after: Site | None = None) -> Iterator[None]:
    """Apply ``edits`` (site -> edit) in every forward inside the block; removed on exit, also on errors.

    With ``stop_after`` the forward ends with :class:`StopForward` once that site's edit ran (call the
    model through :func:`run_until_stopped`).
    """
    if stop_after is not None and stop_after not in edits:
        edits = {**edits, stop_after: _read_nothing}
    hooks = [(site, edit, (_input_hook if site.position == "input" else _output_hook)(edit, site == stop_after))
             for site, edit in edits.items()]
    with _installed(model, hooks):
        yield


def _read_nothing(hidden: torch.Tensor) -> None:
    return None


@contextmanager
def capture(model: nn.Module, sites: Sequence[Site], *, stop_after: Site | None = None) -> Iterator[dict[Site, torch.Tensor]]:
    """Record the activation of each site during the block, as ``{site: tensor}`` (the last forward's, not copied)."""
    store: dict[Site, torch.Tensor] = {}

    def keep(site: Site) -> Edit:
        def edit(hidden: torch.Tensor) -> None:
            store[site] = hidden

        return edit

    with intervene(model, {site: keep(site) for site in sites}, stop_after=stop_after):
        yield store


def run_until_stopped(model: nn.Module, **kwargs: Any) -> Any:
    """Run ``model(**kwargs)``; return ``None`` if an intervention stopped it early."""
    try:
        return model(**kwargs)
    except StopForward:
        return None


@dataclass(frozen=True)
class ModuleCall:
    """The arguments a module was called with, to call it again on another hidden state."""

    args: tuple
    kwargs: dict[str, Any]

    @property
    def hidden(self) -> torch.Tensor:
        """The hidden-state input of the call (first positional argument or ``hidden_states=``)."""
        return _input_hidden(self.args, self.kwargs)

    def replay(self, module: nn.Module, hidden: torch.Tensor,
               swap: Callable[[Any], Any] = lambda value: value) -> torch.Tensor:
        """The hidden-state output of ``module`` on ``hidden`` with the other arguments of this call
        (each passed through ``swap`` first, e.g. to put another cache in place of the model's)."""
        args, kwargs = _with_input(tuple(map(swap, self.args)), {k: swap(v) for k, v in self.kwargs.items()}, hidden)
        return _hidden_of(module(*args, **kwargs))


@contextmanager
def recording_calls(model: nn.Module, sites: Sequence[Site]) -> Iterator[list[ModuleCall | None]]:
    """Record the arguments of the (last) call of each input site's module during the block, in ``sites`` order."""
    calls: list[ModuleCall | None] = [None] * len(sites)
    bad = [str(site) for site in sites if site.position != "input"]
    if bad:
        raise ValueError(f"recording_calls needs input sites, got {', '.join(bad)}")

    def record(i: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            calls[i] = ModuleCall(args, dict(kwargs))

        return hook

    hooks = [record(i) for i in range(len(sites))]
    with _installed(model, [(site, hook, hook) for site, hook in zip(sites, hooks)]):
        yield calls
