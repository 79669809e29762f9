"""How to trace (or zero) a fact: the typed settings that :func:`~locedit.localize.causal_trace.trace` and
:func:`~locedit.localize.causal_trace.zero` accept and that every result records.

>>> from locedit.localize.settings import TraceSettings
>>> s = TraceSettings(kinds=["mlp", "attn", "mlp"], windows=[1, 5], samples=2)
>>> s.kinds, s.windows, s.samples, s.seed
(('mlp', 'attn'), (1, 5), 2, 1)
>>> s.updated(samples=4, noise=None).samples       # None keeps the current value
4
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence

from locedit.localize.engine import DEFAULT_MAX_ROWS
from locedit.localize.patching import KINDS

Engine = Literal["fast", "oracle"]
ENGINES: tuple[str, ...] = ("fast", "oracle")
DEFAULT_SAMPLES = 10
DEFAULT_SEED = 1


@dataclass(frozen=True)
class TraceSettings:
    """Sites, windows and noise of one tracing (or zeroing) run; duplicates in ``kinds``/``windows`` are dropped.

    ``kinds``: site kinds (mlp, attn, block); :func:`zero` takes exactly one. ``windows``: layers restored
    (or zeroed) around each centre layer. ``samples``: noise draws shared by every cell. ``noise``: the
    subject-noise sigma, None for the model's own (:func:`locedit.localize.noise.noise_level`). ``seed``:
    seeds the draws. ``engine``: ``fast`` (cached states) or ``oracle`` (one forward per cell); both give
    the same grid. ``max_rows``: batch rows per forward of the fast engine (speed and memory only).
    Zeroing corrupts nothing, so it uses only kinds, windows, engine and max_rows.
    """

    kinds: tuple[str, ...] = ("mlp",)
    windows: tuple[int, ...] = (5,)
    samples: int = DEFAULT_SAMPLES
    noise: float | None = None
    seed: int = DEFAULT_SEED
    engine: Engine = "fast"
    max_rows: int = DEFAULT_MAX_ROWS

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(dict.fromkeys(self.kinds))
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown kind(s) {bad or list(kinds)}; use any of {', '.join(KINDS)}")
        given = (self.windows,) if isinstance(self.windows, int) else self.windows
        windows = tuple(dict.fromkeys(_positive_ints(given, "window")))
        if not windows:
            raise ValueError("windows is empty; give at least one window, e.g. windows=[5]")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; use fast or oracle")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "windows", windows)

    def updated(self, **overrides: Any) -> TraceSettings:
        """A copy with the given fields replaced; a field given as None keeps its value."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given) if given else self


def _positive_ints(values: Sequence[int], what: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{what} {v!r} is not an integer >= 1")
        out.append(int(v))
    return out
