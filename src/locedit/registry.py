"""Named entries of one kind (editing methods, problems, metrics, figures), each carrying its metadata.

A :class:`Registry` maps a name to an entry object that says everything about its concept (a method's
hyperparameter class, label and colour; a problem's label and aliases; ...), so labels, validation, CLI
help and table columns are read from the entries instead of being listed again elsewhere.

An entry has a ``name``; its ``label`` and ``aliases`` (when it has them) find it too. Lookups ignore
case and punctuation, so "FT-1", "ft_1" and "ft1" all find the method ``ft-1``. Entries list in
registration order.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Colour:
...     name: str
...     label: str
...     aliases: tuple[str, ...] = ()
>>> COLOURS: Registry[Colour] = Registry("colour")
>>> red = COLOURS.register(Colour("red", "Red", aliases=("crimson",)))
>>> @COLOURS.register
... class Blue:
...     name = "blue"
>>> COLOURS["CRIMSON"] is red, list(COLOURS)
(True, ['red', 'blue'])
>>> COLOURS.get("green")
Traceback (most recent call last):
ValueError: unknown colour 'green'; use one of red, blue
"""

from __future__ import annotations

import re
from collections import UserString
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
V = TypeVar("V")


def lookup_key(name: str) -> str:
    """The form names are compared in: lower case, letters and digits only ("FT_1" -> "ft1")."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order; ``kind`` names them in errors ("editing method")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._keys: dict[str, str] = {}  # lookup key of every name, label and alias -> entry name

    def register(self, entry: T) -> T:
        """Add ``entry`` (by its name, label and aliases) and return it, so it also works as a decorator.

        A name, label or alias that already finds a different entry is an error.
        """
        name = getattr(entry, "name")
        keys = {lookup_key(n) for n in self._names_of(entry)}
        clashes = sorted(self._keys[k] for k in keys if k in self._keys)
        if clashes:
            raise ValueError(f"{self.kind} {name!r} clashes with the registered {self.kind} {clashes[0]!r}")
        self._entries[name] = entry
        self._keys.update(dict.fromkeys(keys, name))
        return entry

    def unregister(self, name: str) -> T:
        """Remove the entry that ``name`` finds and return it."""
        entry = self.get(name)
        del self._entries[getattr(entry, "name")]
        self._keys = {k: n for k, n in self._keys.items() if n != getattr(entry, "name")}
        return entry

    @staticmethod
    def _names_of(entry: Any) -> list[str]:
        label = getattr(entry, "label", None)
        return [entry.name, *([label] if isinstance(label, str) else []), *getattr(entry, "aliases", ())]

    def find(self, name: str) -> T | None:
        """The entry that ``name`` (its name, label or an alias) finds, else None."""
        key = self._keys.get(lookup_key(name))
        return None if key is None else self._entries[key]

    def get(self, name: str) -> T:
        """The entry that ``name`` finds; a ValueError naming the choices if there is none."""
        entry = self.find(name)
        if entry is None:
            raise ValueError(f"unknown {self.kind} {name!r}; use one of {', '.join(self._entries)}")
        return entry

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def column(self, value: Callable[[T], V], where: Callable[[T], bool] = lambda e: True) -> "LiveTuple[V]":
        """A read-only sequence of ``value(entry)`` over the entries ``where`` selects, always current."""
        return LiveTuple(lambda: tuple(value(e) for e in self.values() if where(e)))

    def mapping(self, key: Callable[[T], str], value: Callable[[T], V],
                where: Callable[[T], bool] = lambda e: True) -> "LiveMapping[V]":
        """A read-only ``{key(entry): value(entry)}`` over the entries ``where`` selects, always current."""
        return LiveMapping(lambda: {key(e): value(e) for e in self.values() if where(e)})


class LiveTuple(Sequence[V]):
    """A tuple derived from a registry, recomputed on every use (so it follows later registrations)."""

    def __init__(self, compute: Callable[[], tuple[V, ...]]):
        self._compute = compute

    @overload
    def __getitem__(self, i: int) -> V: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[V, ...]: ...

    def __getitem__(self, i):
        return self._compute()[i]

    def __len__(self) -> int:
        return len(self._compute())

    def __iter__(self) -> Iterator[V]:
        return iter(self._compute())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, LiveTuple)) else other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(self._compute())


class LiveMapping(Mapping[str, V]):
    """A dict derived from a registry, recomputed on every use."""

    def __init__(self, compute: Callable[[], dict[str, V]]):
        self._compute = compute

    def __getitem__(self, key: str) -> V:
        return self._compute()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._compute())

    def __len__(self) -> int:
        return len(self._compute())

    def __repr__(self) -> str:
        return repr(self._compute())


class LiveText(UserString):
    """A string recomputed on every use: a CLI help text that lists a registry, written once at import,
    still names the entries registered later."""

    def __init__(self, text: Callable[[], str] | str):
        self._text = text if callable(text) else (lambda: text)

    @property
    def data(self) -> str:  # type: ignore[override]
        return self._text()
