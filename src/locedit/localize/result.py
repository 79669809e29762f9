"""Results of causal tracing and representation zeroing: derived effects, table rows, files.

A result holds its settings (model, kinds, windows, samples, sigma, seed, target, ...), the prompt
tokens, the subject span, the base probabilities and one grid per ``kind:window``. It is saved as one
``.npz`` (arrays plus the settings as JSON) or one ``.json`` file, and loaded back unchanged.
:attr:`~_Localization.trace_settings` reads the recorded settings back as a :class:`TraceSettings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from locedit.localize.settings import DEFAULT_SEED, TraceSettings

Denominator = Literal["high", "clean"]

# The plain rows a result hands out, by table name; the results schema (locedit.experiment.schema) stores them.
ROW_COLUMNS: dict[str, tuple[str, ...]] = {
    # one row per traced fact x kind x window (docs/algorithms.md#causal-tracing)
    "trace_points": ("case_id", "kind", "window", "n_tokens", "s0", "s1", "p_clean", "p_noise", "p_high",
                     "noise_sigma", "samples"),
    # the grid, long format: tokens s0..T-1 (tokens before s0 are implied at p_noise)
    "trace_cells": ("case_id", "kind", "window", "token", "layer", "p_restored"),
    # per-layer collapse (docs/algorithms.md#tracing-effects): te = max over tokens of clipped fraction restored (p_high
    # denominator), te_clean the same with p_clean, abs_effect = max over tokens of p_restored - p_noise,
    # te_last / abs_last at the last subject token (fraction unclipped), corruption_effect = p_noise - p_high
    "trace_layers": ("case_id", "kind", "window", "layer", "te", "te_clean", "abs_effect", "te_last", "abs_last",
                     "corruption_effect"),
    # representation zeroing per layer (docs/algorithms.md#representation-zeroing)
    "zeroing_layers": ("case_id", "window", "layer", "z_subject", "z_all"),
}


def grid_key(kind: str, window: int) -> str:
    return f"{kind}:{window}"


@dataclass
class _Localization:
    """Fields and file format shared by :class:`TraceResult` and :class:`ZeroingResult`."""

    settings: dict[str, Any]
    tokens: list[str]
    s0: int
    s1: int
    p_clean: float
    grids: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def case_id(self) -> int:
        return int(self.settings.get("case_id", -1))

    @property
    def trace_settings(self) -> TraceSettings:
        """The recorded settings as a :class:`TraceSettings`; ``noise`` is the sigma actually used, so tracing
        with these settings again gives the same grids (``max_rows`` is not recorded: it changes no number)."""
        s = self.settings
        return TraceSettings(kinds=tuple(s["kinds"]), windows=tuple(s["windows"]), samples=int(s["samples"]),
                             noise=s.get("sigma"), seed=int(s.get("seed", DEFAULT_SEED)), engine=s["engine"])

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.grids.values())).shape[1])

    def grid(self, kind: str = "mlp", window: int = 5) -> np.ndarray:
        key = grid_key(kind, window)
        if key not in self.grids:
            raise KeyError(f"no {key} grid in this result (have: {', '.join(self.grids)}); trace with that kind and window")
        return self.grids[key]

    def _pairs(self) -> list[tuple[str, int]]:
        """(kind, window) of every grid."""
        return [(k.split(":")[0], int(k.split(":")[1])) for k in self.grids]

    def _scalars(self) -> dict[str, Any]:
        return {"s0": self.s0, "s1": self.s1, "p_clean": self.p_clean}

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types (grids as nested lists)."""
        return {"type": type(self).__name__, "settings": self.settings, "tokens": self.tokens, **self._scalars(),
                "grids": {k: v.tolist() for k, v in self.grids.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if d.get("type") != cls.__name__:
            raise ValueError(f"file holds a {d.get('type')}, not a {cls.__name__}")
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k not in ("grids",)}
        return cls(**fields, grids={k: np.asarray(v, dtype=np.float64) for k, v in d["grids"].items()})

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz: arrays + JSON settings; .json: all JSON). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict()))
        elif path.suffix == ".npz":
            meta = {k: v for k, v in self.to_dict().items() if k != "grids"} | {"grid_keys": list(self.grids)}
            arrays = {f"grid_{i}": v for i, v in enumerate(self.grids.values())}
            np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
        else:
            raise ValueError(f"cannot save to {path.name!r}: use a .npz or .json file name")
        return path

    @classmethod
    def load(cls, path: str | Path):
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if path.suffix == ".json":
            return cls.from_dict(json.loads(path.read_text()))
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            grids = {k: z[f"grid_{i}"] for i, k in enumerate(meta.pop("grid_keys"))}
        return cls.from_dict(meta | {"grids": grids})


@dataclass
class TraceResult(_Localization):
    """Causal tracing of one fact (docs/algorithms.md#causal-tracing). Grids are p_restored over tokens s0..T-1 x
    layers."""

    p_noise: float = float("nan")

    def _scalars(self) -> dict[str, Any]:
        return super()._scalars() | {"p_noise": self.p_noise}

    def p_high(self, kind: str = "mlp", window: int = 5) -> float:
        """max(p_clean, max restored) — the reference's fractional denominator base
        (docs/algorithms.md#causal-tracing)."""
        return max(self.p_clean, float(self.grid(kind, window).max()))

    def full_grid(self, kind: str = "mlp", window: int = 5) -> np.ndarray:
        """[T, L] p_restored with tokens before s0 at p_noise (they are not restored)."""
        g = self.grid(kind, window)
        return np.vstack([np.full((self.s0, g.shape[1]), self.p_noise), g])

    def restore_effect(self, kind: str = "mlp", window: int = 5) -> np.ndarray:
        """[T, L] p_restored - p_noise (0 before the subject)."""
        return self.full_grid(kind, window) - self.p_noise

    def corruption_effect(self, kind: str = "mlp", window: int = 5, denominator: Denominator = "high") -> float:
        """p_noise - p_high (reference) or p_noise - p_clean (paper text)."""
        base = self.p_high(kind, window) if denominator == "high" else self.p_clean
        return self.p_noise - base

    def fraction_restored(self, kind: str = "mlp", window: int = 5, denominator: Denominator = "high") -> np.ndarray:
        """[T, L] max(0, restore_effect / |corruption_effect|); 0 where corruption removed nothing."""
        denom = abs(self.corruption_effect(kind, window, denominator))
        eff = self.restore_effect(kind, window)
        return np.maximum(0.0, eff / denom) if denom > 0 else np.zeros_like(eff)

    def layer_effect(self, kind: str = "mlp", window: int = 5, denominator: Denominator = "high") -> np.ndarray:
        """[L] the per-layer tracing effect TE(l): max over tokens of the fraction restored."""
        return self.fraction_restored(kind, window, denominator).max(0)

    def layer_abs_effect(self, kind: str = "mlp", window: int = 5) -> np.ndarray:
        """[L] max over tokens of p_restored - p_noise."""
        return self.restore_effect(kind, window).max(0)

    def last_subject_effect(self, kind: str = "mlp", window: int = 5, denominator: Denominator = "high",
                            fraction: bool = True) -> np.ndarray:
        """[L] effect at the last subject token: fraction (not clipped) or absolute."""
        eff = self.restore_effect(kind, window)[self.s1 - 1]
        if not fraction:
            return eff
        denom = abs(self.corruption_effect(kind, window, denominator))
        return eff / denom if denom > 0 else np.zeros_like(eff)

    def peak_cells(self, kind: str = "mlp", window: int = 5) -> list[tuple[int, int]]:
        """(token, layer) of every cell at the maximal positive restore effect (ties kept,
        docs/algorithms.md#tracing-effects)."""
        eff = self.restore_effect(kind, window)
        top = eff.max()
        if not top > 0:
            return []
        return [(int(t), int(l)) for t, l in zip(*np.nonzero(eff >= top))]

    def peak_layers(self, kind: str = "mlp", window: int = 5) -> list[int]:
        return sorted({layer for _, layer in self.peak_cells(kind, window)})

    def top_layers(self, kind: str = "mlp", window: int = 5, k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` layers with the largest tracing effect TE, with their TE."""
        te = self.layer_effect(kind, window)
        return [(int(i), float(te[i])) for i in np.argsort(-te, kind="stable")[:k]]

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Rows for the result table ``trace_points``, ``trace_cells`` or ``trace_layers`` (:data:`ROW_COLUMNS`)."""
        out: list[dict[str, Any]] = []
        cid = self.case_id
        for kind, w in self._pairs():
            if table == "trace_points":
                out.append(dict(case_id=cid, kind=kind, window=w, n_tokens=self.n_tokens, s0=self.s0, s1=self.s1,
                                p_clean=self.p_clean, p_noise=self.p_noise, p_high=self.p_high(kind, w),
                                noise_sigma=float(self.settings["sigma"]), samples=int(self.settings["samples"])))
            elif table == "trace_cells":
                g = self.grid(kind, w)
                out += [dict(case_id=cid, kind=kind, window=w, token=self.s0 + i, layer=layer, p_restored=float(g[i, layer]))
                        for i in range(g.shape[0]) for layer in range(g.shape[1])]
            elif table == "trace_layers":
                cols = (self.layer_effect(kind, w), self.layer_effect(kind, w, "clean"), self.layer_abs_effect(kind, w),
                        self.last_subject_effect(kind, w), self.last_subject_effect(kind, w, fraction=False))
                ce = self.corruption_effect(kind, w)
                out += [dict(case_id=cid, kind=kind, window=w, layer=layer, te=float(cols[0][layer]),
                             te_clean=float(cols[1][layer]), abs_effect=float(cols[2][layer]), te_last=float(cols[3][layer]),
                             abs_last=float(cols[4][layer]), corruption_effect=ce) for layer in range(self.n_layers)]
            else:
                raise ValueError(f"a trace has no rows for table {table!r}; use trace_points, trace_cells or trace_layers")
        for row in out:
            assert tuple(row) == ROW_COLUMNS[table], f"row keys drifted from the {table} columns"
        return out


@dataclass
class ZeroingResult(_Localization):
    """Representation zeroing of one fact (docs/algorithms.md#representation-zeroing). Grids are p_zeroed over all
    tokens 0..T-1 x layers."""

    def zeroing_effect(self, window: int = 5, kind: str = "mlp") -> np.ndarray:
        """[T, L] Z = clip((p_clean - p_zeroed) / p_clean, 0, 1)."""
        z = (self.p_clean - self.grid(kind, window)) / self.p_clean if self.p_clean > 0 else np.zeros_like(self.grid(kind, window))
        return np.clip(z, 0.0, 1.0)

    def layer_effect(self, window: int = 5, over: Literal["subject", "all"] = "subject", kind: str = "mlp") -> np.ndarray:
        """[L] max of Z over the subject tokens (paper) or over all prompt tokens."""
        z = self.zeroing_effect(window, kind)
        return (z[self.s0: self.s1] if over == "subject" else z).max(0)

    def rows(self, table: str = "zeroing_layers") -> list[dict[str, Any]]:
        if table != "zeroing_layers":
            raise ValueError(f"zeroing has no rows for table {table!r}; use zeroing_layers")
        out = []
        for kind, w in self._pairs():
            zs, za = self.layer_effect(w, "subject", kind), self.layer_effect(w, "all", kind)
            out += [dict(case_id=self.case_id, window=w, layer=layer, z_subject=float(zs[layer]), z_all=float(za[layer]))
                    for layer in range(self.n_layers)]
        return out
