"""``locedit analyze``: every regression, table and figure of a run, written to RUN_DIR/analysis.

:func:`analyze_frames` does the work on DataFrames (tests build them); :func:`analyze` reads a run
directory with :func:`locedit.experiment.store.read_frames` and its manifest and calls it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import AutoTokenizer

from locedit.analysis.figures import FigureContext, FigureResult, make_figures
from locedit.analysis.labels import METHODS, PROBLEMS
from locedit.analysis.regressions import layer_correlations, per_edit_frame, regression_table
from locedit.analysis.tables import Table, build_tables, score_table, write_tables
from locedit.analysis.trace_stats import concentrated_cases
from locedit.experiment.manifest import read_manifest
from locedit.models.loading import resolve_source
from locedit.models.tokens import encode
from locedit.experiment.store import read_frames

ANALYSIS_DIR = "analysis"
# The paper's ROME layer as a fraction of depth (GPT-J: code layer 5 of 28 layers)
ROME_DEPTH = 5 / 27


@dataclass
class AnalysisResult:
    """What analyze wrote and the numbers the CLI prints."""

    out_dir: Path
    tables: list[Table]
    regressions: pd.DataFrame
    correlations: pd.DataFrame
    figures: list[FigureResult]
    skipped: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)

    def table(self, key: str) -> Table | None:
        return next((t for t in self.tables if t.key == key), None)


def is_zsre(manifest: dict[str, Any] | None) -> bool:
    """True when the run's data source names zsRE."""
    source = ((manifest or {}).get("config", {}).get("data", {}) or {}).get("source", "")
    return "zsre" in json.dumps(source).lower()


def n_layers_of(frames: dict[str, pd.DataFrame]) -> int:
    """Number of layers seen in the trace (or, without one, the largest edit layer + 1)."""
    layers = [frames[t]["layer"].max() for t in ("trace_layers", "trace_cells", "edits")
              if t in frames and not frames[t].empty]
    return int(max(layers)) + 1 if layers else 0


def rome_layer_of(frames: dict[str, pd.DataFrame], n_layers: int) -> int | None:
    """The edit layer closest to the paper's ROME depth (GPT-J layer 5 of 28) among those edited."""
    edits = frames.get("edits", pd.DataFrame())
    if edits.empty or n_layers == 0:
        return None
    target = ROME_DEPTH * (n_layers - 1)
    return int(min(sorted(edits.loc[edits["layer"] >= 0, "layer"].unique()), key=lambda l: abs(l - target)))


def _token_labeler(manifest: dict[str, Any] | None, facts: pd.DataFrame):
    """case_id -> token strings of the prompt, with the run's tokenizer when it loads offline; else None."""
    name = ((manifest or {}).get("config", {}).get("model", {}) or {}).get("name")
    tok = None
    if name and not str(name).startswith(("tiny:", "synthetic")):
        try:
            source, local_only = resolve_source(str(name))
            if local_only:
                tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception:  # noqa: BLE001 - labels are cosmetic: fall back to token indices
            tok = None
    prompts = dict(zip(facts["case_id"], facts["prompt"])) if not facts.empty else {}

    def labels(case_id: int) -> list[str] | None:
        if tok is None or case_id not in prompts:
            return None
        ids = encode(tok, prompts[case_id])  # the model's input tokens, BOS included where the model has one
        return [repr(tok.decode([i]))[1:-1] for i in ids]

    return labels


def pick_window(frames: dict[str, pd.DataFrame], kind: str = "mlp", window: int | None = None) -> int:
    """The tracing window to analyse: ``window`` if given, else 5 (the paper's) if traced, else the smallest.

    An explicit window the run has not traced is left for per_edit_frame to reject with the list.
    """
    if window is not None:
        return int(window)
    layers = frames.get("trace_layers", pd.DataFrame())
    have = sorted(int(w) for w in layers.loc[layers["kind"] == kind, "window"].unique()) if not layers.empty else []
    return 5 if 5 in have or not have else have[0]


def _counts(frames: dict[str, pd.DataFrame], per_edit: pd.DataFrame | None) -> dict[str, int]:
    facts = frames.get("facts", pd.DataFrame())
    pts = frames.get("trace_points", pd.DataFrame())
    correct = int(facts["is_correct"].fillna(0).astype(bool).sum()) if "is_correct" in facts else 0
    return {
        "facts": len(facts), "facts_correct": correct,
        "facts_traced": int(pts["case_id"].nunique()) if not pts.empty else 0,
        "edits": len(frames.get("edits", [])), "edits_analysed": 0 if per_edit is None else len(per_edit),
        "failures": len(frames.get("failures", [])),
    }


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def analyze_frames(
    frames: dict[str, pd.DataFrame], out_dir: Path, manifest: dict[str, Any] | None = None,
    window: int | None = None, kind: str = "mlp", figures: bool | tuple[str, ...] = True,
) -> AnalysisResult:
    """Regressions (docs/algorithms.md#regressions), correlations (docs/algorithms.md#correlations), concentrated
    subset (docs/algorithms.md#concentrated-subset), Tables 1–8, figures.

    ``window`` None picks 5 when traced, else the smallest traced window (see pick_window).
    ``figures`` False draws none; a tuple of keys of figures.FIGURES draws only those.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    window = pick_window(frames, kind, window)
    config = (manifest or {}).get("config", {}) or {}
    zsre = is_zsre(manifest)
    correct_only = bool((config.get("data", {}) or {}).get("correctness_filter", True)) and not zsre
    joined = {"kind": kind, "correct_only": correct_only, "probable_only": zsre}
    per_edit, error = None, ""
    try:
        per_edit = per_edit_frame(frames, window=window, **joined)
        if per_edit.empty:
            per_edit, error = None, "no edit has a tracing effect at its layer (facts filtered or not traced)"
    except ValueError as err:
        if "pass --window" in str(err):
            raise
        error = str(err)
    empty = pd.DataFrame()
    reg = regression_table(per_edit) if per_edit is not None else empty
    corr = pd.concat([layer_correlations(per_edit, effect=e) for e in ("effect", "te_last")]) \
        if per_edit is not None else empty
    conc, reg_conc, n_traced = [], None, 0
    if per_edit is not None:
        layers = frames["trace_layers"]
        n_traced = int(layers.loc[(layers["window"] == window) & (layers["kind"] == kind), "case_id"].nunique())
        conc = concentrated_cases(layers, window, kind)
        reg_conc = regression_table(per_edit[per_edit["case_id"].isin(conc)])
    reg10 = _window10_regressions(frames, window, joined) if per_edit is not None else None
    tables = build_tables(reg, reg_conc, len(conc), n_traced, zsre=zsre, window=window,
                          reg_window10=reg10) if not reg.empty else []
    scores = score_table(frames.get("edits", empty))
    tables = tables + [scores] if scores is not None else tables
    write_tables(tables, out_dir)
    reg.to_csv(out_dir / "regressions.csv", index=False)
    corr.to_csv(out_dir / "correlations.csv", index=False)
    if reg_conc is not None:
        reg_conc.to_csv(out_dir / "regressions_concentrated.csv", index=False)
    if reg10 is not None:
        reg10.to_csv(out_dir / "regressions_window10.csv", index=False)

    n_layers = n_layers_of(frames)
    rome_layer = rome_layer_of(frames, n_layers)
    written, skipped = [], {}
    if figures:
        ctx = FigureContext(
            frames=frames, window=window, kind=kind, per_edit=per_edit, per_edit_error=error, regressions=reg,
            n_layers=n_layers, rome_layer=rome_layer,
            token_labels=_token_labeler(manifest, frames.get("facts", empty)), regressions_window10=reg10,
            dataset="zsre" if zsre else "counterfact",
        )
        only = figures if isinstance(figures, tuple) else None
        written, skipped = make_figures(ctx, out_dir / "figures", only=only)
    result = AnalysisResult(out_dir, tables, reg, corr, written, skipped)
    result.summary = _summary(frames, per_edit, reg, conc, n_traced, window, kind, error, result)
    result.summary["rome_layer"] = rome_layer
    (out_dir / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    return result


def _window10_regressions(frames: dict[str, pd.DataFrame], window: int, joined: dict[str, Any],
                          ) -> pd.DataFrame | None:
    """The rewrite-score regressions with window-10 tracing effects (Fig. 12), when the run traced window 10
    besides the main window."""
    layers = frames.get("trace_layers", pd.DataFrame())
    if window == 10 or layers.empty or not ((layers["window"] == 10) & (layers["kind"] == joined["kind"])).any():
        return None
    per_edit = per_edit_frame(frames, window=10, **joined)
    return regression_table(per_edit, outcomes=("rewrite_score",)) if not per_edit.empty else None


def _interval(row: pd.Series) -> dict[str, Any]:
    return {"diff": _num(row["diff"]), "diff_lo": _num(row["diff_lo"]), "diff_hi": _num(row["diff_hi"])}


def _summary(frames, per_edit, reg, conc, n_traced, window, kind, error, result) -> dict[str, Any]:
    rewrite = reg[reg["outcome"] == "rewrite_score"] if not reg.empty else reg
    t1 = rewrite[(rewrite["method"] == "ROME") & (rewrite["problem"] == "EI")] if not reg.empty else reg
    key: dict[str, Any] = {}
    if not t1.empty:
        row = t1.iloc[0]
        key["rome_ei_rewrite"] = {k: _num(row[k]) for k in ("n", "r2_layer", "r2_trace", "r2_both", "diff", "diff_lo",
                                                             "diff_hi", "p", "cluster_p")}
    if not rewrite.empty:
        best = rewrite.loc[rewrite["diff"].idxmax()] if rewrite["diff"].notna().any() else None
        key["mean_r2_layer_rewrite"] = _num(rewrite["r2_layer"].mean())
        key["mean_r2_trace_rewrite"] = _num(rewrite["r2_trace"].mean())
        if best is not None:
            key["max_diff_rewrite"] = {"diff": _num(best["diff"]), "method": best["method"],
                                       "problem": best["problem"], "p": _num(best["p"])}
        key["conditions_p_below_1e-4"] = int((rewrite["p"] < 1e-4).sum())
        key["conditions_interval_above_0"] = int((rewrite["diff_lo"] > 0).sum())
        key["conditions"] = len(rewrite)
        key["bootstrap"] = {"resamples": int(rewrite["boot_n"].iloc[0]), "seed": int(rewrite["boot_seed"].iloc[0]),
                            "interval": "basic, 95%, facts resampled with replacement"}
        key["diff_intervals_rewrite"] = [{"method": r["method"], "problem": r["problem"], **_interval(r)}
                                         for _, r in rewrite.iterrows()]
    return {
        "window": window, "kind": kind, "counts": _counts(frames, per_edit),
        "methods": [m for m in METHODS if not reg.empty and m in set(reg["method"])],
        "problems": [p for p in PROBLEMS if not reg.empty and p in set(reg["problem"])],
        "concentrated": {"n": len(conc), "of": n_traced}, "key_numbers": key,
        "regressions_skipped": error or None,
        "tables": [t.key for t in result.tables],
        "figures": [f.key for f in result.figures], "figures_skipped": result.skipped,
        "out_dir": str(result.out_dir),
    }


def analyze(run_dir: str | Path, window: int | None = None, kind: str = "mlp", figures: bool = True,
            ) -> AnalysisResult:
    """Analyse a run directory (results.sqlite + manifest.json) into RUN_DIR/analysis."""
    run_dir = Path(run_dir)
    frames = read_frames(run_dir)
    return analyze_frames(frames, run_dir / ANALYSIS_DIR, read_manifest(run_dir), window, kind, figures)
