"""Seeded synthetic result tables with a known structure, for testing and demonstrating the analysis.

Scores are generated as ``base[method, problem, layer] + slope[method, problem] * (te − mean te) +
per-fact offset + noise`` so tests can check that the regressions find what was put in (a layer effect
everywhere, a tracing slope only where one was set). Tracing grids peak at a random layer per fact;
the per-layer collapse is computed here from the grid with plain numpy (independently of
:mod:`locedit.analysis.trace_stats`). Nothing here is real data: the report built from it says so in
its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from locedit.analysis.labels import METHODS, PROBLEMS
from locedit.experiment.schema import TABLES

DEFAULT_SLOPES: dict[tuple[str, str], float] = {("FT-1", "FF"): 0.6, ("FT-5", "FF"): 0.6}
# the runner's spelling of the names (experiment config), so the analysis's normalisation is exercised
RAW_NAMES: dict[str, str] = {"FT-1": "ft_1", "FT-5": "ft_5", "ROME": "rome", "MEMIT": "memit",
                             "EI": "error_injection", "TR": "tracing_reversal", "FE": "fact_erasure",
                             "FA": "fact_amplification", "FF": "fact_forcing"}


def _frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(TABLES[table]))


def _trace_fact(rng: np.random.Generator, n_layers: int, window: int) -> tuple[dict, np.ndarray]:
    """One fact's trace point (T, s0, s1, probabilities) and its grid [T - s0, L] of p_restored."""
    n_tokens = int(rng.integers(6, 11))
    s0 = int(rng.integers(0, 3))
    s1 = int(min(n_tokens - 1, s0 + rng.integers(1, 4)))
    p_clean, p_noise = float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.001, 0.05))
    peak = rng.normal(n_layers / 4, n_layers / 8)
    width = (0.3 if rng.uniform() < 0.3 else 1.0 + rng.uniform(0, 2)) + window / 10
    layers = np.arange(n_layers)
    profile = np.exp(-((layers - peak) ** 2) / (2 * width**2))
    tokens = np.arange(s0, n_tokens)
    weight = np.where(tokens == s1 - 1, 1.0, np.where(tokens == n_tokens - 1, 0.3, 0.15))
    grid = p_noise + (p_clean - p_noise) * rng.uniform(0.5, 1.05) * np.outer(weight, profile)
    grid = np.clip(grid + rng.normal(0, 0.01, grid.shape), 0.0, 1.0)
    point = {"n_tokens": n_tokens, "s0": s0, "s1": s1, "p_clean": p_clean, "p_noise": p_noise,
             "p_high": float(max(p_clean, grid.max()))}
    return point, grid


def _collapse(point: dict, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Per-layer te, te_clean, abs_effect, te_last, abs_last (docs/algorithms.md#tracing-effects), from one grid."""
    effect = grid - point["p_noise"]
    corruption = point["p_noise"] - point["p_high"]
    last = effect[point["s1"] - 1 - point["s0"]]
    return {
        "te": np.clip(effect / abs(corruption), 0, None).max(axis=0),
        "te_clean": np.clip(effect / abs(point["p_noise"] - point["p_clean"]), 0, None).max(axis=0),
        "abs_effect": effect.max(axis=0), "te_last": last / abs(corruption), "abs_last": last,
    }


def synthetic_frames(
    seed: int = 0, n_facts: int = 40, n_layers: int = 12, edit_layers: Sequence[int] = (0, 2, 3, 5, 8, 11),
    windows: Sequence[int] = (5,), methods: Sequence[str] = METHODS, problems: Sequence[str] = PROBLEMS,
    slopes: Mapping[tuple[str, str], float] = DEFAULT_SLOPES, noise_sd: float = 0.05, fact_sd: float = 0.05,
    zeroing: bool = True,
) -> dict[str, pd.DataFrame]:
    """Result tables (schema.TABLES columns) of a fake run; the first ``windows`` entry drives the scores."""
    rng = np.random.default_rng(seed)
    facts, points, cells, layer_rows, zero_rows, edit_rows = [], [], [], [], [], []
    te_main: dict[int, np.ndarray] = {}
    for case_id in range(n_facts):
        is_correct = bool(rng.uniform() < 0.9)
        p_true = float(rng.uniform(0.0, 0.6))
        facts.append({"case_id": case_id, "subject": f"Subject {case_id}", "prompt": f"Subject {case_id} speaks",
                      "target_true": "French", "target_new": "English", "is_correct": int(is_correct),
                      "p_true": p_true, "passes_erasure_filter": int(p_true > 0.02)})
        for w in windows:
            point, grid = _trace_fact(rng, n_layers, w)
            points.append({"case_id": case_id, "kind": "mlp", "window": w, **point, "noise_sigma": 0.1,
                           "samples": 10})
            for i, token in enumerate(range(point["s0"], point["n_tokens"])):
                cells += [{"case_id": case_id, "kind": "mlp", "window": w, "token": token, "layer": layer,
                           "p_restored": float(grid[i, layer])} for layer in range(n_layers)]
            per_layer = _collapse(point, grid)
            if w == windows[0]:
                te_main[case_id] = per_layer["te"]
            corruption = point["p_noise"] - point["p_high"]
            layer_rows += [{"case_id": case_id, "kind": "mlp", "window": w, "layer": layer,
                            **{k: float(v[layer]) for k, v in per_layer.items()}, "corruption_effect": corruption}
                           for layer in range(n_layers)]
        if zeroing:
            z = np.clip(te_main[case_id] * rng.uniform(0.5, 1.0) + rng.normal(0, 0.05, n_layers), 0, 1)
            zero_rows += [{"case_id": case_id, "window": 5, "layer": layer, "z_subject": float(z[layer]),
                           "z_all": float(min(1.0, z[layer] + 0.05))} for layer in range(n_layers)]
    mean_te = float(np.mean([te_main[c][layer] for c in te_main for layer in edit_layers]))
    offsets = rng.normal(0, fact_sd, n_facts)
    base = {(m, p): rng.uniform(0.2, 0.8, n_layers) for m in methods for p in problems}
    for fact in facts:
        case_id = fact["case_id"]
        for problem in problems:
            if problem == "FE" and not fact["passes_erasure_filter"]:
                continue
            for method in methods:
                for layer in edit_layers:
                    te = te_main[case_id][layer]
                    scores = {}
                    for k, name in enumerate(("rewrite_score", "paraphrase_score", "neighborhood_score")):
                        shrink = 1.0 if k == 0 else 0.6
                        raw = base[method, problem][layer] * shrink + slopes.get((method, problem), 0.0) * (
                            te - mean_te) + offsets[case_id] + rng.normal(0, noise_sd)
                        scores[name] = float(np.clip(raw, 0.0, 1.0))
                    essence = float(np.clip(rng.normal(0.9 - 0.02 * layer, 0.05), 0, 1))
                    overall = float(np.mean(list(scores.values())))
                    edit_rows.append({
                        "case_id": case_id, "method": RAW_NAMES.get(method, method),
                        "problem": RAW_NAMES.get(problem, problem), "layer": layer,
                        "layers": json.dumps([layer]), "target_new": fact["target_new"], "request_baseline": "",
                        "rewrite_pre": 0.01, "rewrite_post": scores["rewrite_score"], **scores,
                        "rome_rewrite_magnitude": scores["rewrite_score"] - 0.01,
                        "essence_score": essence, "overall_score": overall,
                        "overall_essence_score": (3 * overall + essence) / 4, "essence_ppl_pre": 20.0,
                        "essence_ppl_post": 20.0 + 5 * (1 - essence), "edit_seconds": 0.5, "eval_seconds": 0.2,
                    })
    failures = [{"unit": f"edit:{n_facts}:rome:EI:0", "case_id": n_facts, "stage": "edit",
                 "error": "SubjectNotFoundError: synthetic failure"}]
    return {
        "facts": _frame("facts", facts), "trace_points": _frame("trace_points", points),
        "trace_cells": _frame("trace_cells", cells), "trace_layers": _frame("trace_layers", layer_rows),
        "zeroing_layers": _frame("zeroing_layers", zero_rows), "edits": _frame("edits", edit_rows),
        "failures": _frame("failures", failures),
    }


def synthetic_manifest(n_layers: int = 12, windows: Sequence[int] = (5,)) -> dict[str, Any]:
    """A manifest shaped like the runner's (experiment/manifest.py), marked as synthetic."""
    return {
        "config_hash": "synthetic",
        "config": {
            "name": "synthetic", "model": {"name": f"synthetic ({n_layers} layers)", "device": "cpu",
                                           "dtype": "float32"},
            "data": {"source": "synthetic", "correctness_filter": True},
            "localize": {"kinds": ["mlp"], "windows": list(windows), "samples": 10},
            "edit": {"methods": ["ft_1", "ft_5", "rome", "memit"],
                     "problems": [RAW_NAMES[p] for p in PROBLEMS], "layers": []},
            "stats": {"corpus": "wikitext", "n_tokens": 100000},
        },
        "stats": {"corpus": "wikitext", "n_tokens": 100000},
        "note": "SYNTHETIC DATA generated by tests/synthetic.py, not a real run",
    }


def write_run(run_dir: str | Path, frames: Mapping[str, pd.DataFrame], manifest: Mapping[str, Any]) -> Path:
    """Write frames into a run directory's store (one unit per table) and its manifest."""
    from locedit.experiment.manifest import write_manifest
    from locedit.experiment.store import Store

    run_dir = Path(run_dir)
    with Store(run_dir) as store:
        for table, df in frames.items():
            if table == "failures":
                for row in df.to_dict("records"):
                    store.record_failure(row["unit"], int(row["case_id"]), row["stage"], row["error"])
            elif not df.empty:
                rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
                        for r in df.to_dict("records")]
                store.write_unit(f"synthetic:{table}", "synthetic", -1, {table: rows}, seconds=0.0)
    write_manifest(run_dir, dict(manifest))
    return run_dir
