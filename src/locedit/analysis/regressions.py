"""Does the tracing effect explain edit success beyond the edit layer? (docs/algorithms.md#regressions)

Per (method, problem, outcome) three OLS fits on the same rows: ``Layer`` (y ~ C(layer)), ``Tracing``
(y ~ effect) and ``Both`` (y ~ C(layer) * effect: a separate intercept and slope per layer). Their R²,
Diff = R²_Both − R²_Layer and the nested F-test of Both against Layer are the paper's numbers. The
design matrices are built directly (treatment-coded layer dummies), which is what R's ``lm`` and
statsmodels' formula ``C(layer) * effect`` build, without the formula parser's per-fit overhead.

Each fact appears once per edit layer, so the rows are not independent. Beyond the paper we therefore
also report a **cluster-robust Wald test** of the same hypothesis (all tracing terms of the Both model —
the slope and its per-layer interactions — are zero), with the covariance clustered by ``case_id``
(statsmodels ``cov_type="cluster"``; F reference distribution with G − 1 denominator df, G = number of
facts). It answers the same question as the nested F-test without assuming independent rows. Like any
cluster-robust test it needs many clusters: with under ~100 facts it rejects too often (on synthetic
data with no tracing slope and 36 facts, p < 0.05 in several of 20 conditions), so read it on full runs. The
interval of Diff comes from a cluster bootstrap by fact (bootstrap.py, docs/algorithms.md#bootstrap).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from locedit.analysis.bootstrap import BOOT_SEED, N_BOOT, bootstrap_diff
from locedit.analysis.design import design_matrices
from locedit.analysis.labels import METHODS, OUTCOMES, PROBLEMS, method_label, ordered, problem_label

TRACE_EFFECTS: tuple[str, ...] = ("te", "te_clean", "te_last", "abs_effect", "abs_last")


def format_p(p: float) -> str:
    """p-value as the paper prints it: "<1e-4" below 1e-4, three decimals otherwise, "–" if undefined."""
    if p is None or not np.isfinite(p):
        return "–"
    if p < 1e-4:
        return "<1e-4"
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def p_phrase(p: float) -> str:
    """"p < 1e-4" or "p = 0.123", for titles and notes."""
    shown = format_p(p)
    return f"p < {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def per_edit_frame(
    frames: dict[str, pd.DataFrame], window: int = 5, kind: str = "mlp", effect: str = "te",
    correct_only: bool = True, probable_only: bool = False,
) -> pd.DataFrame:
    """Edits joined with the per-layer trace of the same fact at the edit's central layer
    (docs/algorithms.md#per-edit-table).

    Adds the trace columns (te, te_clean, te_last, abs_effect, abs_last, corruption_effect) and
    ``effect`` = the column named by ``effect``. Keeps central layers >= 0, facts with is_correct == 1
    (when ``correct_only`` and the facts table has the column), facts whose p(o_true) passed the run's
    probability threshold (``probable_only``: the zsRE rule, p(o_true) > 0.02 by default, read from the
    facts table's passes_erasure_filter), and drops rows without a trace value.
    Method and problem names are normalised to the paper's labels (labels.py).
    """
    edits = frames.get("edits")
    if edits is None or edits.empty:
        raise ValueError("the run has no edits yet; run `locedit run` first (or check the run directory)")
    layers = frames.get("trace_layers")
    if layers is None or layers.empty:
        raise ValueError("the run has no trace_layers; trace the facts first, the regressions need tracing effects")
    if effect not in TRACE_EFFECTS:
        raise ValueError(f"unknown effect {effect!r}; use one of {', '.join(TRACE_EFFECTS)}")
    sel = layers[(layers["window"] == window) & (layers["kind"] == kind)]
    if sel.empty:
        have = sorted({(str(k), int(w)) for k, w in zip(layers["kind"], layers["window"])})
        listed = ", ".join(f"{k} w={w}" for k, w in have)
        raise ValueError(f"no {kind} trace with window {window} in this run (have: {listed}); pass --window W")
    cols = ["case_id", "layer", *TRACE_EFFECTS, "corruption_effect"]
    sel = sel[[c for c in cols if c in sel.columns]].drop_duplicates(["case_id", "layer"])
    out = edits[edits["layer"] >= 0].merge(sel, on=["case_id", "layer"], how="left")
    facts = frames.get("facts")
    if correct_only and facts is not None and "is_correct" in facts.columns:
        correct = facts.loc[facts["is_correct"].fillna(0).astype(bool), "case_id"]
        out = out[out["case_id"].isin(correct)]
    if probable_only and facts is not None and "passes_erasure_filter" in facts.columns:
        probable = facts.loc[facts["passes_erasure_filter"].fillna(0).astype(bool), "case_id"]
        out = out[out["case_id"].isin(probable)]
    out = out.assign(effect=out[effect]).dropna(subset=["effect"])
    out["method"] = out["method"].map(method_label)
    out["problem"] = out["problem"].map(problem_label)
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class ConditionFit:
    """The three fits of one condition (R², nested F-test, in-sample errors, cluster-robust test), and the
    95% cluster-bootstrap interval [diff_lo, diff_hi] of Diff (bootstrap.py), its resample count and seed."""

    n: int
    n_facts: int
    n_layers: int
    r2_layer: float
    r2_trace: float
    r2_both: float
    diff: float
    f: float
    p: float
    df_num: float
    df_den: float
    slope: float
    rmse_layer: float
    mae_layer: float
    rmse_trace: float
    mae_trace: float
    cluster_f: float
    cluster_p: float
    cluster_df_den: float
    diff_lo: float
    diff_hi: float
    boot_n: int
    boot_seed: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _nan_fit(n: int, n_facts: int, n_layers: int, n_boot: int, seed: int) -> ConditionFit:
    nan = math.nan
    return ConditionFit(n, n_facts, n_layers, *([nan] * 18), boot_n=n_boot, boot_seed=seed)


def _errors(resid: np.ndarray) -> tuple[float, float]:
    return float(np.sqrt(np.mean(resid**2))), float(np.mean(np.abs(resid)))


def _cluster_wald(
    y: np.ndarray, both: np.ndarray, tracing: list[int], groups: np.ndarray,
) -> tuple[float, float, float]:
    """Cluster-robust (by case_id) Wald F of all tracing terms in the Both model."""
    if len(np.unique(groups)) < 3:
        return math.nan, math.nan, math.nan
    fit = sm.OLS(y, both).fit(cov_type="cluster", cov_kwds={"groups": groups})
    restriction = np.zeros((len(tracing), both.shape[1]))
    restriction[np.arange(len(tracing)), tracing] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            test = fit.wald_test(restriction, use_f=True, scalar=True)
        except (np.linalg.LinAlgError, ValueError):
            return math.nan, math.nan, math.nan
    return float(test.statistic), float(test.pvalue), float(test.df_denom)


def fit_condition(df: pd.DataFrame, outcome: str, effect: str = "effect", n_boot: int = N_BOOT,
                  seed: int = BOOT_SEED) -> ConditionFit:
    """Layer / Tracing / Both OLS fits of ``outcome`` for one condition, all on the same rows.

    Rows with a missing outcome, effect or layer are dropped first. Too few rows (not more than the
    Both model's parameters) give NaN statistics rather than an error, so a sparse condition shows as
    "–" in the tables. Rank-deficient designs (e.g. an effect constant within a layer) are fitted by
    pseudo-inverse and the F-test uses their actual residual degrees of freedom. ``n_boot`` cluster
    resamples by fact with ``seed`` give the interval of Diff (0 resamples: NaN interval).
    """
    missing = [c for c in (outcome, effect, "layer", "case_id") if c not in df.columns]
    if missing:
        raise ValueError(f"per-edit frame lacks column(s) {missing}; build it with per_edit_frame()")
    data = pd.DataFrame({
        "y": pd.to_numeric(df[outcome], errors="coerce"), "x": pd.to_numeric(df[effect], errors="coerce"),
        "layer": df["layer"], "case_id": df["case_id"],
    }).dropna().reset_index(drop=True)
    n, n_facts, n_layers = len(data), int(data["case_id"].nunique()), int(data["layer"].nunique())
    if n <= 2 * n_layers + 1 or data["y"].nunique() < 2:
        return _nan_fit(n, n_facts, n_layers, n_boot, seed)
    y, x = data["y"].to_numpy(float), data["x"].to_numpy(float)
    layer_design, trace_design, both_design, tracing = design_matrices(data["layer"].to_numpy(), x)
    layer_fit = sm.OLS(y, layer_design).fit()
    trace_fit = sm.OLS(y, trace_design).fit()
    both_fit = sm.OLS(y, both_design).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f, p, df_num = both_fit.compare_f_test(layer_fit)
    rmse_layer, mae_layer = _errors(layer_fit.resid)
    rmse_trace, mae_trace = _errors(trace_fit.resid)
    groups = pd.factorize(data["case_id"])[0]
    cluster_f, cluster_p, cluster_df = _cluster_wald(y, both_design, tracing, groups)
    r2_layer = float(layer_fit.rsquared) if n_layers > 1 else 0.0
    interval = bootstrap_diff(data, n_boot, seed)
    return ConditionFit(
        n=n, n_facts=n_facts, n_layers=n_layers, r2_layer=r2_layer, r2_trace=float(trace_fit.rsquared),
        r2_both=float(both_fit.rsquared), diff=float(both_fit.rsquared) - r2_layer, f=float(f), p=float(p),
        df_num=float(df_num), df_den=float(both_fit.df_resid), slope=float(trace_fit.params[1]),
        rmse_layer=rmse_layer, mae_layer=mae_layer, rmse_trace=rmse_trace, mae_trace=mae_trace,
        cluster_f=cluster_f, cluster_p=cluster_p, cluster_df_den=cluster_df, diff_lo=interval.lo,
        diff_hi=interval.hi, boot_n=n_boot, boot_seed=seed,
    )


def conditions(per_edit: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, problem) pairs present, in paper order (problem-major, as in Tables 3–6)."""
    present = set(zip(per_edit["method"], per_edit["problem"]))
    return [(m, p) for p in ordered(per_edit["problem"], PROBLEMS) for m in ordered(per_edit["method"], METHODS)
            if (m, p) in present]


def regression_table(per_edit: pd.DataFrame, outcomes: tuple[str, ...] = OUTCOMES, n_boot: int = N_BOOT,
                     seed: int = BOOT_SEED) -> pd.DataFrame:
    """One row per (method, problem, outcome) present, with every ConditionFit field (``n_boot`` and ``seed``
    go to the bootstrap of each fit).

    Outcomes that are absent or entirely missing for a condition (e.g. essence when generation was
    off) are left out.
    """
    rows = []
    for method, problem in conditions(per_edit):
        sub = per_edit[(per_edit["method"] == method) & (per_edit["problem"] == problem)]
        for outcome in outcomes:
            if outcome not in sub.columns or sub[outcome].isna().all():
                continue
            rows.append({"method": method, "problem": problem, "outcome": outcome,
                         **fit_condition(sub, outcome, n_boot=n_boot, seed=seed).as_dict()})
    columns = ["method", "problem", "outcome", *ConditionFit.__dataclass_fields__]
    return pd.DataFrame(rows, columns=columns)


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    r, p = stats.pearsonr(x, y)
    return float(r), float(p)


def layer_correlations(
    per_edit: pd.DataFrame, outcome: str = "rewrite_score", effect: str = "effect",
) -> pd.DataFrame:
    """Pearson r (t-test p) of outcome vs effect within each (method, problem, central layer)
    (docs/algorithms.md#correlations)."""
    rows = []
    for method, problem in conditions(per_edit):
        sub = per_edit[(per_edit["method"] == method) & (per_edit["problem"] == problem)]
        for layer, grp in sub.groupby("layer", sort=True):
            pair = grp[[effect, outcome]].dropna()
            r, p = _pearson(pair[effect].to_numpy(float), pair[outcome].to_numpy(float))
            rows.append({"method": method, "problem": problem, "outcome": outcome, "effect": effect,
                         "layer": int(layer), "n": len(pair), "r": r, "p": p})
    return pd.DataFrame(rows, columns=["method", "problem", "outcome", "effect", "layer", "n", "r", "p"])
