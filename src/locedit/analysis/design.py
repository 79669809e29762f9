"""Treatment-coded design matrices of the Layer, Tracing and Both models (docs/algorithms.md#regressions).

Shared by the ordinary fits (regressions.py) and the cluster bootstrap (bootstrap.py).
"""

from __future__ import annotations

import numpy as np


def design_matrices(layer: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Design matrices of the Layer, Tracing and Both models, and the Both columns holding tracing terms.

    Layer: intercept + treatment dummies of the sorted layer levels (first level = reference).
    Both: Layer's columns, then the slope x and one interaction dummy·x per non-reference level.
    """
    levels = np.unique(layer)
    dummies = (layer[:, None] == levels[None, 1:]).astype(float)
    ones = np.ones((len(x), 1))
    x_col = x[:, None]
    layer_design = np.hstack([ones, dummies])
    trace_design = np.hstack([ones, x_col])
    both_design = np.hstack([layer_design, x_col, dummies * x_col])
    tracing_terms = list(range(layer_design.shape[1], both_design.shape[1]))
    return layer_design, trace_design, both_design, tracing_terms
