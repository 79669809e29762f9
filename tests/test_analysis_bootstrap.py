"""The cluster bootstrap of the R² increase from tracing: exact against refits, and right on planted data."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from locedit.analysis.bootstrap import bootstrap_diff, diff_resamples, fact_counts
from locedit.analysis.regressions import fit_condition, per_edit_frame, regression_table
from synthetic import synthetic_frames


def _condition(per_edit: pd.DataFrame, method: str, problem: str) -> pd.DataFrame:
    sub = per_edit[(per_edit["method"] == method) & (per_edit["problem"] == problem)]
    return pd.DataFrame({"y": sub["rewrite_score"].to_numpy(float), "x": sub["effect"].to_numpy(float),
                         "layer": sub["layer"].to_numpy(), "case_id": sub["case_id"].to_numpy()})


@pytest.fixture(scope="module")
def per_edit():
    return per_edit_frame(synthetic_frames(seed=3, n_facts=30, n_layers=10, edit_layers=(0, 2, 5, 9)))


def _resample(data: pd.DataFrame, counts: np.ndarray) -> np.ndarray:
    fact, _ = pd.factorize(data["case_id"], sort=True)
    return diff_resamples(data["y"].to_numpy(), data["layer"].to_numpy(), data["x"].to_numpy(), fact, counts)


@pytest.mark.parametrize("method, problem", [("ROME", "EI"), ("FT-5", "FF"), ("MEMIT", "FE")])
def test_resampled_diff_equals_refit_on_duplicated_facts(per_edit, method, problem):
    data = _condition(per_edit, method, problem)
    n_facts = data["case_id"].nunique()
    counts = fact_counts(n_facts, 3, seed=7)
    got = _resample(data, np.vstack([np.ones((1, n_facts)), counts]))
    assert got[0] == pytest.approx(fit_condition(data.rename(columns={"y": "score"}), "score", "x", n_boot=0).diff,
                                   abs=1e-10)
    cases = np.sort(data["case_id"].unique())
    for b in range(3):  # a fact drawn k times = k copies of its rows under new ids, refitted by statsmodels
        copies = [data[data["case_id"] == c].assign(case_id=f"{c}-{k}")
                  for c, n in zip(cases, counts[b].astype(int)) for k in range(n)]
        refit = fit_condition(pd.concat(copies).rename(columns={"y": "score"}), "score", "x", n_boot=0)
        assert got[b + 1] == pytest.approx(refit.diff, abs=1e-9)


def test_interval_above_zero_with_a_planted_slope_and_covering_zero_without():
    covered, null_conditions = 0, 0
    for seed in range(3):
        reg = regression_table(per_edit_frame(synthetic_frames(seed=seed, n_facts=40, n_layers=12)),
                               outcomes=("rewrite_score",), n_boot=1000, seed=seed)
        planted = reg["problem"].eq("FF") & reg["method"].isin(["FT-1", "FT-5"])  # synthetic DEFAULT_SLOPES
        assert (reg.loc[planted, "diff_lo"] > 0.05).all()
        assert (reg.loc[planted, "diff_lo"] < reg.loc[planted, "diff"]).all()
        assert (reg.loc[planted, "diff"] < reg.loc[planted, "diff_hi"]).all()
        null = reg[~planted]
        null_conditions += len(null)
        covered += int(((null["diff_lo"] <= 0) & (null["diff_hi"] >= 0)).sum())
        assert (null["diff"] > 0).all()  # the in-sample increase itself is never zero: why the interval corrects it
    assert covered >= 0.9 * null_conditions, f"{covered} of {null_conditions} intervals cover zero"


def test_bootstrap_is_seeded_and_recorded(per_edit):
    data = _condition(per_edit, "ROME", "EI")
    first, again, other = bootstrap_diff(data, 200, seed=5), bootstrap_diff(data, 200, seed=5), bootstrap_diff(
        data, 200, seed=6)
    assert (first.lo, first.hi) == (again.lo, again.hi) and (first.lo, first.hi) != (other.lo, other.hi)
    assert first.lo < first.hi and first.n_valid == 200 and first.seed == 5
    reg = regression_table(per_edit, outcomes=("rewrite_score",), n_boot=200, seed=5)
    rome = reg[(reg["method"] == "ROME") & (reg["problem"] == "EI")].iloc[0]
    assert (rome["diff_lo"], rome["diff_hi"], rome["boot_n"], rome["boot_seed"]) == (first.lo, first.hi, 200, 5)
    off = regression_table(per_edit, outcomes=("rewrite_score",), n_boot=0)
    assert off["diff_lo"].isna().all() and off["diff"].tolist() == pytest.approx(reg["diff"].tolist())


def test_thousand_resamples_of_twenty_conditions_take_seconds():
    per_edit = per_edit_frame(synthetic_frames(seed=0, n_facts=40, n_layers=12))
    start = time.perf_counter()
    reg = regression_table(per_edit, outcomes=("rewrite_score",), n_boot=1000)
    assert len(reg) == 20 and reg["diff_lo"].notna().all()
    assert time.perf_counter() - start < 30  # about 1 s on a quiet core
