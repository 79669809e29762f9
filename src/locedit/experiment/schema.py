"""Column names of the result tables every stage agrees on (store, analysis, exports).

The SQLite store holds one table per entry; :func:`locedit.experiment.store.read_frames` returns them as
pandas DataFrames with exactly these columns (plus ``run_id`` where noted by the store).
"""

from __future__ import annotations

TABLES: dict[str, tuple[str, ...]] = {
    # one row per selected fact
    "facts": ("case_id", "subject", "prompt", "target_true", "target_new", "is_correct", "p_true",
              "passes_erasure_filter"),
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
    # one row per (fact, method, problem, central layer) edit (docs/algorithms.md#edit-order, #metrics)
    "edits": ("case_id", "method", "problem", "layer", "layers", "target_new", "request_baseline",
              "rewrite_pre", "rewrite_post", "paraphrase_pre", "paraphrase_post", "neighborhood_pre",
              "neighborhood_post", "rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score",
              "overall_score", "overall_essence_score", "essence_ppl_pre", "essence_ppl_post",
              "rome_rewrite_success", "rome_rewrite_magnitude", "rome_paraphrase_success",
              "rome_paraphrase_magnitude", "rome_neighborhood_success", "rome_neighborhood_magnitude",
              "edit_seconds", "eval_seconds"),
    # units that raised: recorded, counted, and retried on resume
    "failures": ("unit", "case_id", "stage", "error"),
}
