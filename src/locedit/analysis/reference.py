"""The paper's published GPT-J (CounterFact) and zsRE numbers (docs/algorithms.md#reference-numbers), for side-by-side
columns.

Only these published numbers are here: Table 1, Table 2's ROME EI row, Table 3 (rewrite) and
Tables 7–8. Tables 4–6 (paraphrase, neighborhood, overall) have no reference column.
"""

from __future__ import annotations

PAPER = "paper (GPT-J)"
P_SMALL = 1e-5  # stands for the paper's "<1e-4"

# Table 3: (problem, method) -> (Layer, Trace, Both, Diff, p)
TABLE3_REWRITE: dict[tuple[str, str], tuple[float, float, float, float, float]] = {
    ("EI", "FT-1"): (0.756, 0.062, 0.758, 0.002, P_SMALL), ("EI", "FT-5"): (0.775, 0.055, 0.777, 0.002, P_SMALL),
    ("EI", "ROME"): (0.947, 0.016, 0.948, 0.001, P_SMALL), ("EI", "MEMIT"): (0.677, 0.024, 0.678, 0.001, 0.199),
    ("TR", "FT-1"): (0.067, 0.0, 0.067, 0.0, 0.997), ("TR", "FT-5"): (0.751, 0.045, 0.752, 0.001, 0.032),
    ("TR", "ROME"): (0.294, 0.017, 0.31, 0.015, P_SMALL), ("TR", "MEMIT"): (0.212, 0.036, 0.218, 0.006, P_SMALL),
    ("FE", "FT-1"): (0.643, 0.028, 0.646, 0.003, P_SMALL), ("FE", "FT-5"): (0.698, 0.025, 0.70, 0.002, P_SMALL),
    ("FE", "ROME"): (0.857, 0.019, 0.858, 0.0, 0.555), ("FE", "MEMIT"): (0.925, 0.019, 0.925, 0.0, 0.669),
    ("FA", "FT-1"): (0.383, 0.014, 0.393, 0.01, P_SMALL), ("FA", "FT-5"): (0.424, 0.01, 0.436, 0.011, P_SMALL),
    ("FA", "ROME"): (0.88, 0.02, 0.88, 0.0, 0.654), ("FA", "MEMIT"): (0.905, 0.018, 0.906, 0.001, P_SMALL),
    ("FF", "FT-1"): (0.697, 0.104, 0.724, 0.027, P_SMALL), ("FF", "FT-5"): (0.634, 0.10, 0.666, 0.032, P_SMALL),
    ("FF", "ROME"): (0.422, 0.004, 0.425, 0.003, P_SMALL), ("FF", "MEMIT"): (0.345, 0.041, 0.354, 0.009, P_SMALL),
}

# Table 1 (ROME EI rewrite) and Table 2 (same on the concentrated subset): model -> R²
TABLE1: dict[str, float] = {"Layer": 0.947, "Tracing Effect": 0.016, "Both": 0.948}
TABLE2: dict[str, float] = {"Layer": 0.927, "Tracing Effect": 0.02, "Both": 0.929}
TABLE2_MAX_DIFF = 0.032  # FF with FT
CONCENTRATED_N = 74

# Tables 7 (GPT-J CounterFact) and 8 (zsRE), ROME EI: (outcome, model) -> (R², RMSE, MAE)
TABLE7: dict[tuple[str, str], tuple[float, float, float]] = {
    ("rewrite_score", "Layer"): (0.947, 0.073, 0.02), ("rewrite_score", "Tracing Effect"): (0.016, 0.315, 0.206),
    ("overall_score", "Layer"): (0.618, 0.133, 0.11), ("overall_score", "Tracing Effect"): (0.003, 0.216, 0.183),
}
TABLE8: dict[tuple[str, str], tuple[float, float, float]] = {
    ("rewrite_score", "Layer"): (0.795, 0.158, 0.072), ("rewrite_score", "Tracing Effect"): (0.042, 0.341, 0.254),
    ("overall_score", "Layer"): (0.654, 0.136, 0.097), ("overall_score", "Tracing Effect"): (0.059, 0.223, 0.188),
}
