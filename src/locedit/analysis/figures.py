"""The paper's figures from a run's tables (matplotlib, Agg), as PNG and SVG.

Every figure is a :class:`Figure` in :data:`FIGURES`: its key (file stem and HTML id), the paper's figure
number, a title, the function of a :class:`FigureContext` that draws it and the result tables it reads.
A figure whose data the run lacks (a table, or a method, problem or window that was not run) is skipped
with the reason; :func:`make_figures` records it and goes on, so a partial run gets every figure it can
support. Method names, legend colours and paper order come from the method and problem registries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import statsmodels.api as sm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

from locedit.analysis.labels import (  # noqa: E402
    EFFECT_NAMES, METHOD_COLORS, METHODS, OUTCOME_NAMES, PROBLEM_NAMES, PROBLEMS, method_label, ordered,
    problem_label,
)
from locedit.analysis.regressions import p_phrase  # noqa: E402
from locedit.analysis.trace_stats import effect_curve, peak_layers  # noqa: E402
from locedit.edit.methods import METHODS as METHOD_REGISTRY  # noqa: E402
from locedit.registry import Registry  # noqa: E402
from locedit.windows import window_layers  # noqa: E402

LAYER_AXIS = "central layer ℓ (0-indexed)"


class SkipFigure(Exception):
    """The run lacks the data for a figure; the message says what is missing."""


@dataclass
class FigureContext:
    """What the figures read: the run's frames and the derived per-edit frame and regressions."""

    frames: dict[str, pd.DataFrame]
    window: int = 5
    kind: str = "mlp"
    per_edit: pd.DataFrame | None = None
    per_edit_error: str = ""
    regressions: pd.DataFrame | None = None
    n_layers: int = 0
    rome_layer: int | None = None
    token_labels: Callable[[int], list[str] | None] = field(default=lambda case_id: None)
    regressions_window10: pd.DataFrame | None = None
    dataset: str = "counterfact"

    def edits_present(self) -> pd.DataFrame:
        if self.per_edit is None:
            raise SkipFigure(self.per_edit_error or "no edits joined with tracing effects")
        return self.per_edit

    def trace_windows(self) -> list[int]:
        pts = self.frames.get("trace_points", pd.DataFrame())
        if pts.empty:
            return []
        return sorted(int(w) for w in pts.loc[pts["kind"] == self.kind, "window"].unique())


@dataclass(frozen=True)
class FigureResult:
    key: str
    title: str
    png: Path
    svg: Path


def _condition(ctx: FigureContext, method: str, problem: str) -> pd.DataFrame:
    pe = ctx.edits_present()
    sub = pe[(pe["method"] == method) & (pe["problem"] == problem)]
    if sub.empty:
        raise SkipFigure(f"the run has no {method} {PROBLEM_NAMES.get(problem, problem)} edits with tracing effects")
    return sub


def _unit_axes(ax: plt.Axes) -> None:
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="y = x")


def _scatter_fit(ax: plt.Axes, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Scatter, OLS line with a 95% confidence band; returns Pearson (r, p)."""
    ax.scatter(x, y, s=8, alpha=0.45, color="#1f77b4", edgecolors="none", label="edit", rasterized=True)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    grid = np.linspace(x.min(), x.max(), 50)
    pred = fit.get_prediction(sm.add_constant(grid)).summary_frame(alpha=0.05)
    ax.plot(grid, pred["mean"], color="#d62728", lw=1.5, label="OLS fit")
    ax.fill_between(grid, pred["mean_ci_lower"], pred["mean_ci_upper"], color="#d62728", alpha=0.2,
                    label="95% CI")
    r, p = stats.pearsonr(x, y)
    return float(r), float(p)


def _panel_grid(n: int, ncols: int = 4, size: float = 3.2) -> tuple[Figure, np.ndarray]:
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.6), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


# -- tracing figures ------------------------------------------------------------------------------


def _require_trace(ctx: FigureContext, window: int) -> None:
    if window not in ctx.trace_windows():
        raise SkipFigure(f"the run has no {ctx.kind} trace with window {window}")


def _peak_hist(ax: plt.Axes, ctx: FigureContext, window: int) -> int:
    peaks = peak_layers(ctx.frames["trace_points"], ctx.frames["trace_cells"], window, ctx.kind)
    counts = peaks.groupby("layer")["case_id"].nunique().reindex(range(ctx.n_layers), fill_value=0)
    ax.bar(counts.index, counts.to_numpy(), color="#4c72b0", label="facts peaking at ℓ")
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("number of facts")
    return int(peaks["case_id"].nunique())


def fig01_peaks(ctx: FigureContext) -> Figure:
    """Fig. 1: histogram of the layer where each fact's tracing effect peaks, edit layers marked."""
    _require_trace(ctx, ctx.window)
    fig, ax = plt.subplots(figsize=(9.5, 4))
    n = _peak_hist(ax, ctx, ctx.window)
    if ctx.rome_layer is not None:
        rome, memit = METHOD_REGISTRY["rome"], METHOD_REGISTRY["memit"]
        span = window_layers(ctx.rome_layer, memit.window, ctx.n_layers)
        ax.axvspan(span[0] - 0.5, span[-1] + 0.5, color=memit.color, alpha=0.08,
                   label=f"{memit.label} layers (window {memit.window})")
        ax.axvspan(ctx.rome_layer - 0.5, ctx.rome_layer + 0.5, color=rome.color, alpha=0.25,
                   label=f"{rome.label} layer ({ctx.rome_layer})")
    pe = ctx.frames.get("edits", pd.DataFrame())
    for i, layer in enumerate(sorted(pe["layer"].unique()) if not pe.empty else []):
        ax.axvline(layer, color="grey", ls=":", lw=1, label="edit layers" if i == 0 else None)
    ax.set_title(f"Fig. 1 — Where the tracing effect peaks ({ctx.kind.upper()}, window {ctx.window}, {n} facts)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never covers a bar
    return fig


def fig10_effect_curves(ctx: FigureContext) -> Figure:
    """Fig. 10: mean max-token fraction restored vs layer, one panel per traced window."""
    windows = ctx.trace_windows()
    if not windows:
        raise SkipFigure("the run has no tracing")
    fig, axes = _panel_grid(len(windows), ncols=4)
    for ax, w in zip(axes.flat, windows):
        curve = effect_curve(ctx.frames["trace_points"], ctx.frames["trace_cells"], w, ctx.kind)
        sem = curve["sd"].fillna(0) / np.sqrt(curve["n"])
        ax.errorbar(curve["layer"], curve["mean"], yerr=1.96 * sem, marker="o", ms=3, capsize=2,
                    label="mean ± 95% CI")
        ax.set_title(f"window {w}")
        ax.set_xlabel(LAYER_AXIS)
        ax.set_ylabel("fraction restored (0–1)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 10 — Tracing effect by layer and window size ({ctx.kind.upper()}, positive cells only)")
    return fig


def fig11_peaks_by_window(ctx: FigureContext) -> Figure:
    """Fig. 11: peak-layer histograms, one panel per traced window."""
    windows = ctx.trace_windows()
    if not windows:
        raise SkipFigure("the run has no tracing")
    fig, axes = _panel_grid(len(windows), ncols=4)
    for ax, w in zip(axes.flat, windows):
        n = _peak_hist(ax, ctx, w)
        ax.set_title(f"window {w} ({n} facts)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Fig. 11 — Where the tracing effect peaks, by window size ({ctx.kind.upper()})")
    return fig


def _example_cases(ctx: FigureContext, window: int, k: int = 3) -> pd.DataFrame:
    pts = ctx.frames["trace_points"]
    pts = pts[(pts["window"] == window) & (pts["kind"] == ctx.kind)]
    strength = (pts["p_high"] - pts["p_noise"]).abs()
    return pts.assign(strength=strength).sort_values(["strength", "case_id"], ascending=[False, True]).head(k)


def fig02_heatmaps(ctx: FigureContext) -> Figure:
    """Fig. 2-style tracing grids of the facts with the largest corruption effect (tokens x layers)."""
    windows = ctx.trace_windows()
    if not windows:
        raise SkipFigure("the run has no tracing")
    window = 10 if 10 in windows else ctx.window if ctx.window in windows else windows[0]
    examples = _example_cases(ctx, window)
    cells = ctx.frames["trace_cells"]
    fig, axes = plt.subplots(1, len(examples), figsize=(5.2 * len(examples), 4.6), squeeze=False)
    for ax, (_, pt) in zip(axes.flat, examples.iterrows()):
        case_id, n_tokens, s0, s1 = int(pt["case_id"]), int(pt["n_tokens"]), int(pt["s0"]), int(pt["s1"])
        sel = cells[(cells["case_id"] == pt["case_id"]) & (cells["window"] == window) & (cells["kind"] == ctx.kind)]
        grid = np.full((n_tokens, ctx.n_layers), float(pt["p_noise"]))  # rows before s0 stay at p_noise
        grid[sel["token"].to_numpy(int), sel["layer"].to_numpy(int)] = sel["p_restored"].to_numpy(float)
        image = ax.imshow(grid, aspect="auto", cmap="Purples", vmin=float(pt["p_noise"]), vmax=float(pt["p_high"]))
        labels = ctx.token_labels(case_id) or [f"t{t}" for t in range(n_tokens)]
        ax.set_yticks(range(n_tokens), [f"{lab}*" if s0 <= t < s1 else lab for t, lab in enumerate(labels)],
                      fontsize=8)
        ax.set_xlabel(LAYER_AXIS)
        ax.set_ylabel("prompt token (* = noised subject token)")
        ax.set_title(f"case {case_id}: p_clean {pt['p_clean']:.3f}, p_noise {pt['p_noise']:.3f}", fontsize=9)
        fig.colorbar(image, ax=ax, label="p(o_true) with restoration")
    fig.suptitle(f"Fig. 2 — Causal tracing grids of example facts ({ctx.kind.upper()}, window {window})")
    return fig


# -- edit score vs tracing effect -----------------------------------------------------------------


def _at_rome_layer(ctx: FigureContext) -> tuple[int, pd.DataFrame]:
    """The ROME layer (or, without it, the most frequent edit layer) and the ROME EI edits made there."""
    sub = _condition(ctx, "ROME", "EI")
    layer = ctx.rome_layer if ctx.rome_layer in set(sub["layer"]) else int(sub["layer"].mode().iloc[0])
    return layer, sub[sub["layer"] == layer]


def fig04_scatter(ctx: FigureContext) -> Figure:
    """Fig. 4: ROME EI rewrite score vs tracing effect at the ROME layer, OLS line, y = x."""
    layer, at = _at_rome_layer(ctx)
    at = at[["effect", "rewrite_score"]].dropna()
    fig, ax = plt.subplots(figsize=(6, 5))
    r, p = _scatter_fit(ax, at["effect"].to_numpy(float), at["rewrite_score"].to_numpy(float))
    _unit_axes(ax)
    ax.set_xlabel(f"{EFFECT_NAMES['te']}, 0–1")
    ax.set_ylabel("rewrite score (0–1)")
    ax.set_title(f"Fig. 4 — ROME Error Injection at layer {layer} (n = {len(at)}): r = {r:.3f}, {p_phrase(p)}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def fig14_magnitude(ctx: FigureContext) -> Figure:
    """Fig. 14: ROME EI rewrite magnitude (p(o_new) − p(o_true) after the edit, the original ROME metric) vs the
    absolute tracing effect at the last subject token, at the ROME layer."""
    layer, at = _at_rome_layer(ctx)
    if "rome_rewrite_magnitude" not in at.columns or at["rome_rewrite_magnitude"].isna().all():
        raise SkipFigure("the run has no rewrite magnitudes (original ROME metrics)")
    at = at[["abs_last", "rome_rewrite_magnitude"]].dropna()
    fig, ax = plt.subplots(figsize=(6, 5))
    r, p = _scatter_fit(ax, at["abs_last"].to_numpy(float), at["rome_rewrite_magnitude"].to_numpy(float))
    ax.set_xlabel(f"{EFFECT_NAMES['abs_last']} (probability)")
    ax.set_ylabel("rewrite magnitude p(o_new) − p(o_true)")
    ax.set_title(f"Fig. 14 — ROME Error Injection at layer {layer} (n = {len(at)}): r = {r:.3f}, {p_phrase(p)}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def _panels_by_layer(sub: pd.DataFrame, outcome: str, effect: str, title: str, xlabel: str) -> Figure:
    layers = sorted(sub["layer"].unique())
    fig, axes = _panel_grid(len(layers))
    for ax, layer in zip(axes.flat, layers):
        at = sub[sub["layer"] == layer][[effect, outcome]].dropna()
        r, p = _scatter_fit(ax, at[effect].to_numpy(float), at[outcome].to_numpy(float))
        if effect in ("te", "te_clean", "effect", "z_subject", "z_all"):
            _unit_axes(ax)
        ax.set_title(f"layer {layer}: r = {r:.2f}, {p_phrase(p)}", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(f"{OUTCOME_NAMES.get(outcome, outcome)} (0–1)", fontsize=8)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    return fig


def _panels_figure(number: str, method: str, problem: str, outcome: str, effect: str, data: str = "") -> Callable:
    def build(ctx: FigureContext) -> Figure:
        sub = _condition(ctx, method, problem)
        if effect not in sub.columns or sub[effect].isna().all():
            raise SkipFigure(f"the trace has no {effect} values")
        name = PROBLEM_NAMES.get(problem, problem)
        title = (f"Fig. {number} — {data}{method} {name}: {OUTCOME_NAMES[outcome]} vs {EFFECT_NAMES[effect]}, "
                 f"per central layer")
        xlabel = EFFECT_NAMES[effect] + (" (unclipped)" if effect == "te_last" else ", 0–1")
        return _panels_by_layer(sub, outcome, effect, title, xlabel)

    build.__doc__ = f"Fig. {number}: {method} {problem} {outcome} vs {effect}, one panel per central layer."
    return build


def _zeroing_figure(number: str, outcome: str) -> Callable:
    def build(ctx: FigureContext) -> Figure:
        zl = ctx.frames.get("zeroing_layers", pd.DataFrame())
        if zl.empty:
            raise SkipFigure("the run has no representation zeroing")
        sub = _condition(ctx, "ROME", "EI")
        joined = sub.drop(columns=["z_subject", "z_all"], errors="ignore").merge(
            zl[zl["window"] == zl["window"].min()][["case_id", "layer", "z_subject"]], on=["case_id", "layer"])
        if joined.empty:
            raise SkipFigure("no zeroing values at the ROME edit layers")
        title = (f"Fig. {number} — ROME Error Injection: {OUTCOME_NAMES[outcome]} vs zeroing effect, per central "
                 "layer")
        return _panels_by_layer(joined, outcome, "z_subject", title, EFFECT_NAMES["z_subject"] + ", 0–1")

    build.__doc__ = (f"Fig. {number}: ROME EI {outcome} vs the representation-zeroing effect (max over subject "
                     "tokens), one panel per central layer.")
    return build


# -- R² bars --------------------------------------------------------------------------------------


def _r2_bars(reg: pd.DataFrame, title: str) -> Figure:
    """Stacked R² Layer + Diff bars per problem facet; the Diff's bootstrap interval as an error bar on top."""
    sub = reg[reg["outcome"] == "rewrite_score"]
    if sub.empty:
        raise SkipFigure("no rewrite-score regressions")
    problems = ordered(sub["problem"], PROBLEMS)
    methods = ordered(sub["method"], METHODS)
    fig, axes = plt.subplots(1, len(problems), figsize=(2.6 * len(problems) + 1, 4.2), sharey=True, squeeze=False)
    for ax, problem in zip(axes.flat, problems):
        rows = sub[sub["problem"] == problem].set_index("method").reindex(methods)
        x = np.arange(len(methods))
        layer = rows["r2_layer"].fillna(0).to_numpy()
        diff = rows["diff"].fillna(0).clip(lower=0).to_numpy()
        ax.bar(x, layer, color="#4c72b0", label="R² Layer")
        ax.bar(x, diff, bottom=layer, color="#dd8452", label="Diff (Both − Layer)")
        top = layer + diff
        if "diff_lo" in rows and rows["diff_lo"].notna().any():
            lo = layer + rows["diff_lo"].fillna(0).clip(lower=0).to_numpy()
            hi = layer + rows["diff_hi"].fillna(0).clip(lower=0).to_numpy()
            ax.errorbar(x, top, yerr=[np.clip(top - lo, 0, None), np.clip(hi - top, 0, None)], fmt="none",
                        ecolor="black", elinewidth=1, capsize=3, label="Diff 95% bootstrap CI")
            top = np.maximum(top, hi)
        for xi, (_, row) in zip(x, rows.iterrows()):
            if np.isfinite(row["p"]) and row["p"] < 1e-4:
                ax.text(xi, top[xi] + 0.01, "p<1e-4", ha="center", fontsize=7, rotation=90, va="bottom")
        ax.set_xticks(x, methods, rotation=45)
        ax.set_title(PROBLEM_NAMES.get(problem, problem), fontsize=10)
        ax.set_xlabel("editing method")
        ax.set_ylim(0, 1.15)
    axes.flat[0].set_ylabel("R² of rewrite score (0–1)")
    axes.flat[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    return fig


def fig06_r2(ctx: FigureContext) -> Figure:
    """Fig. 6: R² of the Layer model with the tracing effect's Diff stacked on top, per problem and method."""
    if ctx.regressions is None or ctx.regressions.empty:
        raise SkipFigure(ctx.per_edit_error or "no regressions")
    title = f"Fig. 6 — R² of rewrite score: Layer, and the Diff added by tracing effects (window {ctx.window})"
    return _r2_bars(ctx.regressions, title)


def fig12_r2_window10(ctx: FigureContext) -> Figure:
    """Fig. 12: Fig. 6 with the tracing effect from a window-10 trace."""
    if ctx.regressions_window10 is None or ctx.regressions_window10.empty:
        raise SkipFigure("needs a window-10 trace besides the main window")
    return _r2_bars(ctx.regressions_window10, "Fig. 12 — As Fig. 6 with tracing effects from window-10 traces")


# -- scores by layer ------------------------------------------------------------------------------


def _main_problem(edits: pd.DataFrame) -> str:
    problems = ordered(edits["problem"], PROBLEMS)
    return "EI" if "EI" in problems else problems[0]


def _score_lines(ctx: FigureContext, outcomes: tuple[str, ...], number: str, what: str) -> Figure:
    edits = ctx.frames.get("edits", pd.DataFrame())
    if edits.empty:
        raise SkipFigure("the run has no edits")
    edits = edits[edits["layer"] >= 0].assign(method=lambda d: d["method"].map(method_label),
                                              problem=lambda d: d["problem"].map(problem_label))
    problem = _main_problem(edits)
    sub = edits[edits["problem"] == problem]
    present = [o for o in outcomes if o in sub.columns and sub[o].notna().any()]
    if not present:
        raise SkipFigure(f"no {' / '.join(outcomes)} values (generation-based scores may be off)")
    fig, axes = _panel_grid(len(present), ncols=3, size=3.8)
    for ax, outcome in zip(axes.flat, present):
        for method in ordered(sub["method"], METHODS):
            agg = sub[sub["method"] == method].groupby("layer")[outcome].agg(["mean", "std", "count"])
            sem = agg["std"].fillna(0) / np.sqrt(agg["count"])
            ax.errorbar(agg.index, agg["mean"], yerr=1.96 * sem, marker="o", ms=3, capsize=2, label=method,
                        color=METHOD_COLORS.get(method))
        ax.set_xlabel(LAYER_AXIS)
        ax.set_ylabel(f"mean {OUTCOME_NAMES.get(outcome, outcome)} (0–1)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(OUTCOME_NAMES.get(outcome, outcome), fontsize=10)
        ax.legend(fontsize=7, title="method (±95% CI)", title_fontsize=7)
    fig.suptitle(f"Fig. {number} — {what} by edit layer and method, {PROBLEM_NAMES.get(problem, problem)}")
    return fig


def fig07_scores(ctx: FigureContext) -> Figure:
    """Fig. 7: mean rewrite / paraphrase / neighborhood score by layer and method."""
    return _score_lines(ctx, ("rewrite_score", "paraphrase_score", "neighborhood_score"), "7", "Edit scores")


def fig08_essence(ctx: FigureContext) -> Figure:
    """Fig. 8: mean essence score by layer and method."""
    return _score_lines(ctx, ("essence_score",), "8", "Essence score")


def fig09_overall(ctx: FigureContext) -> Figure:
    """Fig. 9: overall score (mean of 3) and overall + essence (mean of 4) by layer and method."""
    return _score_lines(ctx, ("overall_score", "overall_essence_score"), "9", "Overall scores")


@dataclass(frozen=True)
class PaperFigure:
    """A registered figure: key (file stem, HTML id), the paper's number, title, drawing function, the result
    tables it reads (a run without one of them skips it) and the dataset it belongs to ("any", or
    "counterfact" / "zsre" for the figures the paper draws for one of them only)."""

    name: str
    number: str
    title: str
    build: Callable[[FigureContext], Figure]
    needs: tuple[str, ...]
    data: str = "any"

    @property
    def key(self) -> str:
        return self.name


TRACE = ("trace_points", "trace_cells")
EDITS_TRACED = ("edits", "trace_layers")
FIGURES: Registry[PaperFigure] = Registry("figure")
for _f in (
        PaperFigure("fig01_peak_layers", "1", "Where tracing effects peak", fig01_peaks, TRACE),
        PaperFigure("fig02_trace_heatmaps", "2", "Tracing grids of example facts", fig02_heatmaps, TRACE),
        PaperFigure("fig04_rome_ei_scatter", "4", "ROME rewrite score vs tracing effect", fig04_scatter,
                    EDITS_TRACED),
        PaperFigure("fig06_r2_bars", "6", "R² of Layer vs Layer + tracing", fig06_r2, EDITS_TRACED),
        PaperFigure("fig07_scores_by_layer", "7", "Edit scores by layer and method", fig07_scores, ("edits",)),
        PaperFigure("fig08_essence_by_layer", "8", "Essence score by layer and method", fig08_essence, ("edits",)),
        PaperFigure("fig09_overall_by_layer", "9", "Overall scores by layer and method", fig09_overall,
                    ("edits",)),
        PaperFigure("fig10_effect_by_window", "10", "Tracing effect by layer and window", fig10_effect_curves,
                    TRACE),
        PaperFigure("fig11_peaks_by_window", "11", "Peak layers by window", fig11_peaks_by_window, TRACE),
        PaperFigure("fig12_r2_bars_window10", "12", "R² bars with window-10 tracing", fig12_r2_window10,
                    EDITS_TRACED),
        PaperFigure("fig14_rome_ei_magnitude_abs_last", "14",
                    "ROME EI rewrite magnitude vs absolute last-subject-token effect", fig14_magnitude, EDITS_TRACED),
        PaperFigure("fig15_rome_ei_te_panels", "15", "ROME EI rewrite vs tracing effect per layer",
                    _panels_figure("15", "ROME", "EI", "rewrite_score", "te"), EDITS_TRACED, "counterfact"),
        PaperFigure("fig16_rome_ei_te_last_panels", "16", "ROME EI rewrite vs last-subject-token effect per layer",
                    _panels_figure("16", "ROME", "EI", "rewrite_score", "te_last"), EDITS_TRACED),
        PaperFigure("fig17_ft5_ff_te_panels", "17", "FT-5 Fact Forcing rewrite vs tracing effect per layer",
                    _panels_figure("17", "FT-5", "FF", "rewrite_score", "te"), EDITS_TRACED),
        PaperFigure("fig18_rome_ei_overall_panels", "18", "ROME EI overall score vs tracing effect per layer",
                    _panels_figure("18", "ROME", "EI", "overall_score", "te"), EDITS_TRACED, "counterfact"),
        PaperFigure("fig19_zsre_rome_te_panels", "19", "zsRE: ROME rewrite vs tracing effect per layer",
                    _panels_figure("19", "ROME", "EI", "rewrite_score", "te", "zsRE, "), EDITS_TRACED, "zsre"),
        PaperFigure("fig20_zsre_rome_overall_panels", "20", "zsRE: ROME overall score vs tracing effect per layer",
                    _panels_figure("20", "ROME", "EI", "overall_score", "te", "zsRE, "), EDITS_TRACED, "zsre"),
        PaperFigure("fig21_rome_ei_zeroing_panels", "21", "ROME EI rewrite vs zeroing effect per layer",
                    _zeroing_figure("21", "rewrite_score"), (*EDITS_TRACED, "zeroing_layers")),
        PaperFigure("fig22_rome_ei_overall_zeroing_panels", "22", "ROME EI overall score vs zeroing effect per layer",
                    _zeroing_figure("22", "overall_score"), (*EDITS_TRACED, "zeroing_layers"))):
    FIGURES.register(_f)


def make_figures(ctx: FigureContext, out_dir: Path, only: tuple[str, ...] | None = None,
                 ) -> tuple[list[FigureResult], dict[str, str]]:
    """Draw every registered figure the run supports into ``out_dir`` (PNG + SVG).

    Returns the figures written and ``{key: reason}`` for the ones skipped.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    for spec in FIGURES.values():
        key = spec.key
        if only is not None and key not in only:
            continue
        missing = [t for t in spec.needs if t not in ctx.frames]
        try:
            if spec.data not in ("any", ctx.dataset):
                raise SkipFigure(f"drawn for {spec.data} runs only; this run is {ctx.dataset}")
            if missing:
                raise SkipFigure(f"the run has no {' or '.join(missing)} table")
            fig = spec.build(ctx)
        except SkipFigure as why:
            skipped[key] = str(why)
            continue
        fig.tight_layout()
        png, svg = out_dir / f"{key}.png", out_dir / f"{key}.svg"
        fig.savefig(png, dpi=100)
        fig.savefig(svg)
        plt.close(fig)
        written.append(FigureResult(key, spec.title, png, svg))
    return written, skipped


__all__ = ["FIGURES", "FigureContext", "FigureResult", "PaperFigure", "SkipFigure", "make_figures"]
