"""Regressions against an obviously-correct numpy oracle, and on synthetic data of known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from locedit.analysis.regressions import (
    fit_condition, format_p, layer_correlations, p_phrase, per_edit_frame, regression_table,
)
from synthetic import synthetic_frames


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames(seed=3, n_facts=30, methods=("ROME", "FT-1"), problems=("EI", "FF"),
                            slopes={("FT-1", "FF"): 0.8})


@pytest.fixture(scope="module")
def per_edit(frames):
    return per_edit_frame(frames)


def _design(layer: np.ndarray, x: np.ndarray, model: str) -> np.ndarray:
    """Written out column by column: intercept, one dummy per non-first layer, slope, dummy*slope."""
    levels = sorted(set(layer.tolist()))
    cols = [np.ones(len(x))]
    if model in ("layer", "both"):
        cols += [(layer == lv).astype(float) for lv in levels[1:]]
    if model in ("trace", "both"):
        cols.append(x)
    if model == "both":
        cols += [(layer == lv).astype(float) * x for lv in levels[1:]]
    return np.column_stack(cols)


def _ols(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, int]:
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    return resid, float(resid @ resid), len(y) - np.linalg.matrix_rank(design)


def test_fit_matches_numpy_oracle(per_edit):
    sub = per_edit[(per_edit.method == "ROME") & (per_edit.problem == "EI")]
    y, x, layer = sub.rewrite_score.to_numpy(), sub.effect.to_numpy(), sub.layer.to_numpy()
    tss = float(((y - y.mean()) ** 2).sum())
    fits = {m: _ols(_design(layer, x, m), y) for m in ("layer", "trace", "both")}
    r2 = {m: 1 - fits[m][1] / tss for m in fits}
    (_, rss_l, df_l), (_, rss_b, df_b) = fits["layer"], fits["both"]
    f = ((rss_l - rss_b) / (df_l - df_b)) / (rss_b / df_b)
    p = stats.f.sf(f, df_l - df_b, df_b)

    fit = fit_condition(sub, "rewrite_score")
    assert fit.n == len(y) and fit.n_layers == len(set(layer))
    assert fit.r2_layer == pytest.approx(r2["layer"], abs=1e-10)
    assert fit.r2_trace == pytest.approx(r2["trace"], abs=1e-10)
    assert fit.r2_both == pytest.approx(r2["both"], abs=1e-10)
    assert fit.diff == pytest.approx(r2["both"] - r2["layer"], abs=1e-10)
    assert fit.f == pytest.approx(f, rel=1e-8) and fit.p == pytest.approx(p, rel=1e-6, abs=1e-15)
    assert (fit.df_num, fit.df_den) == (df_l - df_b, df_b)
    for name, (resid, _, _) in (("layer", fits["layer"]), ("trace", fits["trace"])):
        assert getattr(fit, f"rmse_{name}") == pytest.approx(np.sqrt(np.mean(resid**2)), rel=1e-9)
        assert getattr(fit, f"mae_{name}") == pytest.approx(np.mean(np.abs(resid)), rel=1e-9)


def test_cluster_wald_matches_sandwich_oracle(per_edit):
    sub = per_edit[(per_edit.method == "FT-1") & (per_edit.problem == "FF")]
    y, x, layer = sub.rewrite_score.to_numpy(), sub.effect.to_numpy(), sub.layer.to_numpy()
    design = _design(layer, x, "both")
    n, k = design.shape
    beta = np.linalg.solve(design.T @ design, design.T @ y)
    resid = y - design @ beta
    bread = np.linalg.inv(design.T @ design)
    groups = sub.case_id.to_numpy()
    meat = np.zeros((k, k))
    for g in np.unique(groups):
        s = design[groups == g].T @ resid[groups == g]
        meat += np.outer(s, s)
    n_groups = len(np.unique(groups))
    cov = bread @ meat @ bread * n_groups / (n_groups - 1) * (n - 1) / (n - k)
    tracing = list(range(len(set(layer)), k))  # slope and interactions follow intercept + dummies
    b, v = beta[tracing], cov[np.ix_(tracing, tracing)]
    wald_f = float(b @ np.linalg.solve(v, b)) / len(tracing)
    fit = fit_condition(sub, "rewrite_score")
    assert fit.cluster_f == pytest.approx(wald_f, rel=1e-6)
    assert fit.cluster_df_den == n_groups - 1
    assert fit.cluster_p == pytest.approx(stats.f.sf(wald_f, len(tracing), n_groups - 1), rel=1e-6)


def test_known_structure_is_recovered(per_edit):
    table = regression_table(per_edit, outcomes=("rewrite_score",)).set_index(["method", "problem"])
    slope_row, flat_row = table.loc[("FT-1", "FF")], table.loc[("ROME", "EI")]
    assert slope_row.p < 1e-4 and slope_row["diff"] > 0.1 and slope_row.slope > 0.3
    assert flat_row["diff"] < 0.05 and flat_row.p > 1e-3 and abs(flat_row.slope) < 0.3
    assert flat_row.r2_layer > 0.3  # per-layer means drive the scores


def test_single_layer_and_too_few_rows():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"case_id": range(40), "layer": 3, "effect": rng.uniform(size=40)})
    df["score"] = 0.5 * df.effect + rng.normal(0, 0.05, 40)
    fit = fit_condition(df, "score")
    assert fit.n_layers == 1 and fit.r2_layer == 0.0 and fit.r2_both == pytest.approx(fit.r2_trace)
    assert np.isnan(fit_condition(df.head(3), "score").r2_both)
    with pytest.raises(ValueError, match="lacks column"):
        fit_condition(df, "rewrite_score")


def test_per_edit_frame_join_and_filters(frames):
    pe = per_edit_frame(frames)
    correct = set(frames["facts"].loc[frames["facts"].is_correct == 1, "case_id"])
    assert set(pe.case_id) <= correct and len(correct) < len(frames["facts"])
    assert set(pe.method) == {"ROME", "FT-1"} and set(pe.problem) == {"EI", "FF"}  # normalised from rome, ...
    tl = frames["trace_layers"].set_index(["case_id", "layer"])
    row = pe.iloc[7]
    assert row.effect == tl.loc[(row.case_id, row.layer), "te"]
    assert len(per_edit_frame(frames, correct_only=False)) > len(pe)
    gappy = dict(frames, trace_layers=frames["trace_layers"][frames["trace_layers"].case_id != row.case_id])
    assert row.case_id not in set(per_edit_frame(gappy).case_id)  # missing effect: dropped
    assert (per_edit_frame(frames, effect="te_last").effect == pe.te_last).all()
    with pytest.raises(ValueError, match=r"window 10 .*have: mlp w=5.*--window"):
        per_edit_frame(frames, window=10)
    with pytest.raises(ValueError, match="unknown effect"):
        per_edit_frame(frames, effect="nope")


def test_layer_correlations_match_numpy(per_edit):
    corr = layer_correlations(per_edit)
    sub = per_edit[(per_edit.method == "ROME") & (per_edit.problem == "EI") & (per_edit.layer == 5)]
    row = corr[(corr.method == "ROME") & (corr.problem == "EI") & (corr.layer == 5)].iloc[0]
    assert row.r == pytest.approx(np.corrcoef(sub.effect, sub.rewrite_score)[0, 1], rel=1e-9)
    assert row.n == len(sub) and 0 < row.p < 1


def test_format_p():
    assert format_p(5e-5) == "<1e-4" and format_p(0.1234) == "0.123" and format_p(float("nan")) == "–"
    assert format_p(3.2e-4) == "3.2e-04"
    assert p_phrase(1e-9) == "p < 1e-4" and p_phrase(0.5) == "p = 0.500"
