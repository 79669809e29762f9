"""Summaries of the tracing grids: where effects peak, average effect curves, concentrated facts.

Implements the R-analysis rules of docs/algorithms.md#tracing-effects on the long ``trace_cells`` table (tokens s0..T-1;
tokens before s0 are implied at p_noise, so their restore effect is 0 and they never count as a peak)
and the concentrated-effects rule of docs/algorithms.md#concentrated-subset on ``trace_layers``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_POINT_KEYS = ["case_id", "kind", "window"]


def cell_effects(
    points: pd.DataFrame, cells: pd.DataFrame, window: int, kind: str = "mlp", denominator: str = "p_high",
) -> pd.DataFrame:
    """Trace cells of one (kind, window) with ``effect`` = p_restored − p_noise and ``fraction``.

    fraction = max(0, effect / |p_noise − p_denominator|) (docs/algorithms.md#tracing-effects; ``p_high`` is the
    reference
    code's denominator, ``p_clean`` the paper's). Points whose corruption effect is 0 get NaN.
    """
    if denominator not in ("p_high", "p_clean"):
        raise ValueError(f"denominator must be 'p_high' or 'p_clean', got {denominator!r}")
    sel = cells[(cells["window"] == window) & (cells["kind"] == kind)]
    pts = points[(points["window"] == window) & (points["kind"] == kind)]
    merged = sel.merge(pts[_POINT_KEYS + ["s0", "s1", "n_tokens", "p_clean", "p_noise", "p_high"]],
                       on=_POINT_KEYS, how="inner")
    corruption = (merged["p_noise"] - merged[denominator]).abs().replace(0.0, np.nan)
    effect = merged["p_restored"] - merged["p_noise"]
    return merged.assign(effect=effect, fraction=(effect / corruption).clip(lower=0.0))


def peak_layers(points: pd.DataFrame, cells: pd.DataFrame, window: int, kind: str = "mlp") -> pd.DataFrame:
    """(case_id, token, layer) of every cell at its fact's maximum restore effect (Figs. 1, 11).

    Ties keep every tied cell; cells whose effect is not positive are dropped (docs/algorithms.md#tracing-effects).
    """
    eff = cell_effects(points, cells, window, kind)
    if eff.empty:
        return pd.DataFrame(columns=["case_id", "token", "layer"])
    top = eff.groupby("case_id")["effect"].transform("max")
    marked = eff[(eff["effect"] >= top) & (eff["effect"] > 0)]
    return marked[["case_id", "token", "layer"]].reset_index(drop=True)


def effect_curve(points: pd.DataFrame, cells: pd.DataFrame, window: int, kind: str = "mlp") -> pd.DataFrame:
    """Mean over facts of the per-layer max-token fraction restored, positive cells only (Fig. 10).

    As the reference R code: cells with restore effect <= 0 are removed first, so a fact with no
    positive cell at a layer drops out of that layer's mean. Columns: layer, mean, sd, n.
    """
    eff = cell_effects(points, cells, window, kind)
    eff = eff[eff["effect"] > 0]
    per_layer = eff.groupby(["case_id", "layer"])["fraction"].max().reset_index()
    out = per_layer.groupby("layer")["fraction"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "n"})


def concentrated_cases(
    trace_layers: pd.DataFrame, window: int = 5, kind: str = "mlp", effect: str = "te",
) -> list[int]:
    """Facts whose tracing effect is concentrated (docs/algorithms.md#concentrated-subset).

    With M = max over layers of the per-layer effect (M > 0 required) and ℓ* its argmax, a fact is
    concentrated iff at most 3 other layers reach 0.5·M.
    """
    sel = trace_layers[(trace_layers["window"] == window) & (trace_layers["kind"] == kind)]
    out = []
    for case_id, grp in sel.groupby("case_id", sort=True):
        values = grp[effect].to_numpy(float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        top = values.max()
        if top <= 0:
            continue
        others = int((values >= 0.5 * top).sum()) - 1  # minus the argmax itself
        if others <= 3:
            out.append(int(case_id))
    return out
