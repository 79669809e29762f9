"""Does the tracing effect explain edit success beyond the edit layer? (SPEC §6.1–6.3)

Per (method, problem, outcome) three OLS fits on the same rows: ``Layer`` (y ~ C(layer)), ``Tracing``
(y ~ effect) and ``Both`` (y ~ C(layer) * effect: a separate intercept and slope per layer). Their R²,
Diff = R²_Both − R²_Layer and the nested F-test of Both against Layer are the paper's numbers.

Each fact appears once per edit layer, so the rows are not independent. Beyond the paper we therefore
also report a **cluster-robust Wald test** of the same hypothesis (all tracing terms of the Both model —
the slope and its per-layer interactions — are zero), with the covariance clustered by ``case_id``
(statsmodels ``cov_type="cluster"``; F reference distribution with G − 1 denominator df, G = number of
facts). It answers the same question as the nested F-test without assuming independent rows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from locedit.analysis.labels import METHODS, OUTCOMES, PROBLEMS, method_label, ordered, problem_label

TRACE_EFFECTS: tuple[str, ...] = ("te", "te_clean", "te_last", "abs_effect", "abs_last")


def format_p(p: float) -> str:
    """p-value as the paper prints it: "<1e-4" below 1e-4, three decimals otherwise, "–" if undefined."""
    if p is None or not np.isfinite(p):
        return "–"
    if p < 1e-4:
        return "<1e-4"
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def per_edit_frame(
    frames: dict[str, pd.DataFrame], window: int = 5, kind: str = "mlp", effect: str = "te",
    correct_only: bool = True,
) -> pd.DataFrame:
    """Edits joined with the per-layer trace of the same fact at the edit's central layer (SPEC §6.1).

    Adds the trace columns (te, te_clean, te_last, abs_effect, abs_last, corruption_effect) and
    ``effect`` = the column named by ``effect``. Keeps central layers >= 0, facts with is_correct == 1
    (when ``correct_only`` and the facts table has the column), and drops rows without a trace value.
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
    out = out.assign(effect=out[effect]).dropna(subset=["effect"])
    out["method"] = out["method"].map(method_label)
    out["problem"] = out["problem"].map(problem_label)
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class ConditionFit:
    """The three fits of one condition (R², nested F-test, in-sample errors, cluster-robust test)."""

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

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _nan_fit(n: int, n_facts: int, n_layers: int) -> ConditionFit:
    nan = math.nan
    return ConditionFit(n, n_facts, n_layers, *([nan] * 16))


def _errors(resid: np.ndarray) -> tuple[float, float]:
    return float(np.sqrt(np.mean(resid**2))), float(np.mean(np.abs(resid)))


def _cluster_wald(data: pd.DataFrame, both_formula: str) -> tuple[float, float, float]:
    """Cluster-robust (by case_id) Wald F of all tracing terms in the Both model."""
    groups = pd.factorize(data["case_id"])[0]
    if len(np.unique(groups)) < 3:
        return math.nan, math.nan, math.nan
    fit = smf.ols(both_formula, data).fit(cov_type="cluster", cov_kwds={"groups": groups})
    names = list(fit.params.index)
    tracing = [i for i, name in enumerate(names) if name == "x" or name.endswith(":x")]
    restriction = np.zeros((len(tracing), len(names)))
    restriction[np.arange(len(tracing)), tracing] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            test = fit.wald_test(restriction, use_f=True, scalar=True)
        except (np.linalg.LinAlgError, ValueError):
            return math.nan, math.nan, math.nan
    return float(test.statistic), float(test.pvalue), float(test.df_denom)


def fit_condition(df: pd.DataFrame, outcome: str, effect: str = "effect") -> ConditionFit:
    """Layer / Tracing / Both OLS fits of ``outcome`` for one condition, all on the same rows.

    Rows with a missing outcome, effect or layer are dropped first. Too few rows (not more than the
    Both model's parameters) give NaN statistics rather than an error, so a sparse condition shows as
    "–" in the tables.
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
        return _nan_fit(n, n_facts, n_layers)
    layer_formula, both_formula = ("y ~ C(layer)", "y ~ C(layer) * x") if n_layers > 1 else ("y ~ 1", "y ~ x")
    layer_fit = smf.ols(layer_formula, data).fit()
    trace_fit = smf.ols("y ~ x", data).fit()
    both_fit = smf.ols(both_formula, data).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f, p, df_num = both_fit.compare_f_test(layer_fit)
    rmse_layer, mae_layer = _errors(np.asarray(layer_fit.resid))
    rmse_trace, mae_trace = _errors(np.asarray(trace_fit.resid))
    cluster_f, cluster_p, cluster_df = _cluster_wald(data, both_formula)
    r2_layer = float(layer_fit.rsquared) if n_layers > 1 else 0.0
    return ConditionFit(
        n=n, n_facts=n_facts, n_layers=n_layers, r2_layer=r2_layer, r2_trace=float(trace_fit.rsquared),
        r2_both=float(both_fit.rsquared), diff=float(both_fit.rsquared) - r2_layer, f=float(f), p=float(p),
        df_num=float(df_num), df_den=float(both_fit.df_resid), slope=float(trace_fit.params["x"]),
        rmse_layer=rmse_layer, mae_layer=mae_layer, rmse_trace=rmse_trace, mae_trace=mae_trace,
        cluster_f=cluster_f, cluster_p=cluster_p, cluster_df_den=cluster_df,
    )


def conditions(per_edit: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, problem) pairs present, in paper order (problem-major, as in Tables 3–6)."""
    present = set(zip(per_edit["method"], per_edit["problem"]))
    return [(m, p) for p in ordered(per_edit["problem"], PROBLEMS) for m in ordered(per_edit["method"], METHODS)
            if (m, p) in present]


def regression_table(per_edit: pd.DataFrame, outcomes: tuple[str, ...] = OUTCOMES) -> pd.DataFrame:
    """One row per (method, problem, outcome) present, with every ConditionFit field.

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
                         **fit_condition(sub, outcome).as_dict()})
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
    """Pearson r (t-test p) of outcome vs effect within each (method, problem, central layer) (SPEC §6.3)."""
    rows = []
    for method, problem in conditions(per_edit):
        sub = per_edit[(per_edit["method"] == method) & (per_edit["problem"] == problem)]
        for layer, grp in sub.groupby("layer", sort=True):
            pair = grp[[effect, outcome]].dropna()
            r, p = _pearson(pair[effect].to_numpy(float), pair[outcome].to_numpy(float))
            rows.append({"method": method, "problem": problem, "outcome": outcome, "effect": effect,
                         "layer": int(layer), "n": len(pair), "r": r, "p": p})
    return pd.DataFrame(rows, columns=["method", "problem", "outcome", "effect", "layer", "n", "r", "p"])
