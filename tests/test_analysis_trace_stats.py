"""Peak rule, average effect curve and concentrated subset on hand-built grids (docs/algorithms.md#tracing-effects,
#concentrated-subset)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from locedit.analysis.trace_stats import cell_effects, concentrated_cases, effect_curve, peak_layers


def _point(case_id, s0=1, n_tokens=3, p_clean=0.8, p_noise=0.1, p_high=0.9, window=5):
    return {"case_id": case_id, "kind": "mlp", "window": window, "n_tokens": n_tokens, "s0": s0, "s1": s0 + 1,
            "p_clean": p_clean, "p_noise": p_noise, "p_high": p_high, "noise_sigma": 0.1, "samples": 10}


def _cells(case_id, grid, s0=1, window=5):
    return [{"case_id": case_id, "kind": "mlp", "window": window, "token": s0 + i, "layer": layer,
             "p_restored": v} for i, row in enumerate(grid) for layer, v in enumerate(row)]


@pytest.fixture()
def trace():
    points = pd.DataFrame([_point(0), _point(1), _point(2)])
    cells = pd.DataFrame(
        _cells(0, [[0.1, 0.5, 0.9, 0.2], [0.1, 0.9, 0.3, 0.1]])  # tie: layers 1 and 2
        + _cells(1, [[0.05, 0.3, 0.2, 0.1], [0.1, 0.1, 0.1, 0.1]])  # peak at layer 1; layer 0 negative
        + _cells(2, [[0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]])  # no positive effect anywhere
    )
    return points, cells


def test_peak_rule_keeps_ties_and_drops_non_positive(trace):
    peaks = peak_layers(*trace, window=5)
    assert sorted(peaks[peaks.case_id == 0].layer) == [1, 2]
    assert list(peaks[peaks.case_id == 1].layer) == [1]
    assert 2 not in set(peaks.case_id)
    assert peak_layers(*trace, window=10).empty


def test_fractions_use_p_high_or_p_clean(trace):
    eff = cell_effects(*trace, window=5)
    cell = eff[(eff.case_id == 0) & (eff.token == 1) & (eff.layer == 1)].iloc[0]
    assert cell.effect == pytest.approx(0.4) and cell.fraction == pytest.approx(0.4 / 0.8)
    clean = cell_effects(*trace, window=5, denominator="p_clean")
    assert clean.loc[cell.name, "fraction"] == pytest.approx(0.4 / 0.7)
    assert (eff.fraction >= 0).all()
    with pytest.raises(ValueError, match="denominator"):
        cell_effects(*trace, window=5, denominator="p_x")


def test_effect_curve_drops_facts_without_positive_cells(trace):
    curve = effect_curve(*trace, window=5).set_index("layer")
    # layer 0: fact 0 has no positive cell, fact 1 is negative -> layer absent
    assert 0 not in curve.index
    # layer 1: fact 0 max fraction 0.8/0.8 = 1, fact 1 = 0.2/0.8 -> mean 0.625 over 2 facts
    assert curve.loc[1, "mean"] == pytest.approx((1.0 + 0.25) / 2) and curve.loc[1, "n"] == 2
    assert curve.loc[3, "n"] == 1  # only fact 0 is positive at layer 3


def test_concentrated_rule():
    def rows(case_id, values):
        return [{"case_id": case_id, "kind": "mlp", "window": 5, "layer": i, "te": v} for i, v in enumerate(values)]

    layers = pd.DataFrame(
        rows(0, [0, 1.0, 0.6, 0.6, 0.6, 0.1])  # 3 others >= 0.5 M -> concentrated
        + rows(1, [0, 1.0, 0.6, 0.6, 0.6, 0.5])  # 4 others -> not
        + rows(2, [0.0] * 6)  # M = 0 -> not
        + rows(3, [0.2, 0.09, 0.0, np.nan, 0.0, 0.0])  # sharp -> concentrated
    )
    assert concentrated_cases(layers, window=5) == [0, 3]
    assert concentrated_cases(layers, window=10) == []
