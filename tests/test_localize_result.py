"""TraceResult / ZeroingResult: derived effects (docs/algorithms.md#tracing-effects, #representation-zeroing), table
rows, file round trip, input errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from locedit.experiment.schema import TABLES
from locedit.localize import TargetWarning, TraceResult, TraceSettings, ZeroingResult, plot_trace, trace, zero
from locedit.localize.noise import noise_level, sigma_from_subjects, table_sigma
from locedit.models.tokens import EmptyTargetError, SubjectNotFoundError


def _hand_made() -> TraceResult:
    """T = 4 tokens, subject 1..2, L = 3 layers; grid rows are tokens 1..3."""
    grid = np.array([[0.10, 0.30, 0.20],
                     [0.05, 0.50, 0.25],
                     [0.60, 0.10, 0.50]])
    return TraceResult(settings={"case_id": 7, "sigma": 0.1, "samples": 10, "kinds": ["mlp"], "windows": [5]},
                       tokens=["A", " b", " c", " d"], s0=1, s1=3, p_clean=0.4, p_noise=0.1, grids={"mlp:5": grid})


def test_derived_effects_follow_the_spec():
    r = _hand_made()
    assert r.p_high() == 0.6  # a restored cell beats p_clean
    full = r.full_grid()
    assert full.shape == (4, 3) and np.all(full[0] == 0.1)  # before the subject: p_noise
    frac = r.fraction_restored()
    np.testing.assert_allclose(frac[2, 1], (0.5 - 0.1) / 0.5)
    assert frac[3, 1] == 0.0  # restored = p_noise -> 0; negatives clipped (row 2 col 0 = 0.05 - 0.1 < 0)
    assert frac[2, 0] == 0.0
    np.testing.assert_allclose(r.layer_effect(), [(0.6 - 0.1) / 0.5, (0.5 - 0.1) / 0.5, (0.5 - 0.1) / 0.5])
    np.testing.assert_allclose(r.layer_effect(denominator="clean"), [0.5 / 0.3, 0.4 / 0.3, 0.4 / 0.3])
    np.testing.assert_allclose(r.layer_abs_effect(), [0.5, 0.4, 0.4])
    # last subject token = token 2 = grid row 1; fraction not clipped at 0
    np.testing.assert_allclose(r.last_subject_effect(), [(0.05 - 0.1) / 0.5, 0.4 / 0.5, 0.15 / 0.5])
    np.testing.assert_allclose(r.last_subject_effect(fraction=False), [-0.05, 0.4, 0.15])
    assert r.peak_cells() == [(3, 0)] and r.peak_layers() == [0]
    assert r.top_layers(k=1) == [(0, pytest.approx(1.0))]


def test_table_rows_use_schema_columns():
    r = _hand_made()
    for table in ("trace_points", "trace_cells", "trace_layers"):
        rows = r.rows(table)
        assert rows and all(tuple(row) == TABLES[table] for row in rows)
    assert len(r.rows("trace_cells")) == 3 * 3 and r.rows("trace_cells")[0]["token"] == 1
    point, = r.rows("trace_points")
    assert point["p_high"] == 0.6 and point["n_tokens"] == 4
    assert r.rows("trace_layers")[0]["corruption_effect"] == pytest.approx(0.1 - 0.6)
    with pytest.raises(ValueError, match="no rows"):
        r.rows("edits")


def test_zeroing_effect_and_rows():
    grid = np.array([[0.4, 0.1], [0.5, 0.2], [0.0, 0.3]])
    z = ZeroingResult(settings={"case_id": 3}, tokens=["a", "b", "c"], s0=1, s1=2, p_clean=0.4, grids={"mlp:5": grid})
    np.testing.assert_allclose(z.zeroing_effect(5), [[0, 0.75], [0, 0.5], [1, 0.25]])  # clipped to [0, 1]
    np.testing.assert_allclose(z.layer_effect(5, "subject"), [0, 0.5])
    np.testing.assert_allclose(z.layer_effect(5, "all"), [1, 0.75])
    rows = z.rows()
    assert all(tuple(row) == TABLES["zeroing_layers"] for row in rows) and rows[1]["z_subject"] == 0.5


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_save_load_round_trip(tiny_llama, tmp_path, suffix):
    model, tok = tiny_llama
    r = trace(model, tok, "Paris is the capital of", "Paris", kinds=["mlp", "attn"], windows=[1, 3], samples=2, noise=0.5)
    back = TraceResult.load(r.save(tmp_path / f"t{suffix}"))
    assert back.settings == r.settings and back.tokens == r.tokens and (back.s0, back.s1) == (r.s0, r.s1)
    assert back.p_clean == r.p_clean and back.p_noise == r.p_noise
    assert back.grids.keys() == r.grids.keys() and all(np.array_equal(back.grids[k], r.grids[k]) for k in r.grids)
    with pytest.raises(ValueError, match="not a ZeroingResult"):
        ZeroingResult.load(tmp_path / f"t{suffix}")


def test_trace_shapes_settings_and_heatmap(tiny_gpt2, tmp_path):
    model, tok = tiny_gpt2
    r = trace(model, tok, "The mother tongue of Danielle Darrieux is", "Danielle Darrieux", kinds=["block"], windows=[1, 6],
              samples=2, noise=0.3)
    assert r.grid("block", 6).shape == (r.n_tokens - r.s0, 6)
    assert r.settings["target_source"] == "greedy" and r.settings["sigma"] == 0.3 and r.settings["windows"] == [1, 6]
    files = plot_trace(r, "block", 1, tmp_path / "fig")
    assert [f.suffix for f in files] == [".png", ".svg"] and all(f.stat().st_size > 1000 for f in files)
    z = zero(model, tok, "The mother tongue of Danielle Darrieux is", "Danielle Darrieux", windows=[3])
    assert z.grid("mlp", 3).shape == (z.n_tokens, 6)
    assert plot_trace(z, "mlp", 3, tmp_path / "zero")[0].exists()


def test_bad_input_errors(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(SubjectNotFoundError, match="not found"):
        trace(model, tok, "Paris is the capital of", "London", noise=0.1, samples=1)
    with pytest.raises(EmptyTargetError, match="empty target"):
        trace(model, tok, "Paris is the capital of", "Paris", "  ", noise=0.1, samples=1)
    with pytest.raises(ValueError, match="window 7 does not fit"):
        trace(model, tok, "Paris is the capital of", "Paris", windows=[7], noise=0.1, samples=1)
    with pytest.raises(ValueError, match="longer than the model's context of 512"):
        trace(model, tok, "Paris is the capital of" + " and more" * 300, "Paris", noise=0.1, samples=1)
    with pytest.raises(ValueError, match="unknown kind"):
        trace(model, tok, "Paris is the capital of", "Paris", kinds=["mlpx"], noise=0.1, samples=1)


def test_non_greedy_target_warns(tiny_llama):
    model, tok = tiny_llama
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = trace(model, tok, "Paris is the capital of", "Paris", "zebra crossing", windows=[1], noise=0.1, samples=1)
    assert any(issubclass(w.category, TargetWarning) and "greedy continuation" in str(w.message) for w in caught)
    assert r.settings["target_is_greedy"] is False and len(r.settings["target_ids"]) > 1


def test_noise_level_rules(tiny_llama, tiny_gpt2):
    model, tok = tiny_llama
    assert noise_level(model, tok, 0.2) == 0.2
    with pytest.raises(ValueError, match="> 0"):
        noise_level(model, tok, -1.0)
    assert table_sigma(model) is None and table_sigma(tiny_gpt2[0]) is None  # 6-layer gpt2 is not GPT2-XL
    emb = model.get_input_embeddings().weight
    ids = tok("Paris", add_special_tokens=False)["input_ids"] + tok("Tokyo", add_special_tokens=False)["input_ids"]
    assert sigma_from_subjects(model, tok, ["Paris", "Tokyo"]) == pytest.approx(3 * float(emb[ids].double().std()))


@pytest.mark.shared_data
def test_noise_level_from_known_1000_is_cached(tiny_llama, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LOCEDIT_DATA_DIR", str(shared_data))
    model, tok = tiny_llama
    sigma = noise_level(model, tok)
    assert sigma > 0 and len(list((tmp_path / "noise").glob("*.json"))) == 1
    assert noise_level(model, tok) == sigma


def test_trace_settings_object_equals_keyword_arguments(tiny_llama, tmp_path):
    model, tok = tiny_llama
    prompt, subject = "Paris is the capital of", "Paris"
    by_kwargs = trace(model, tok, prompt, subject, kinds=["mlp", "attn"], windows=[1, 3], samples=2, noise=0.5, seed=3)
    settings = TraceSettings(kinds=("mlp", "attn", "mlp"), windows=(1, 3, 1), samples=2, noise=0.5, seed=3)
    by_settings = trace(model, tok, prompt, subject, settings=settings)
    assert by_settings.settings == by_kwargs.settings
    assert all(np.array_equal(by_settings.grids[k], by_kwargs.grids[k]) for k in by_kwargs.grids)
    recorded = by_kwargs.trace_settings
    assert recorded == TraceSettings(kinds=("mlp", "attn"), windows=(1, 3), samples=2, noise=0.5, seed=3)
    assert TraceResult.load(by_kwargs.save(tmp_path / "t.npz")).trace_settings == recorded
    overridden = trace(model, tok, prompt, subject, settings=settings, kinds=["block"], seed=4)
    assert overridden.trace_settings == TraceSettings(kinds=("block",), windows=(1, 3), samples=2, noise=0.5, seed=4)
    again = trace(model, tok, prompt, subject, settings=recorded)  # the recorded sigma reproduces the grids
    assert all(np.array_equal(again.grids[k], by_kwargs.grids[k]) for k in by_kwargs.grids)


def test_zero_takes_one_kind_from_settings(tiny_gpt2):
    model, tok = tiny_gpt2
    z = zero(model, tok, "Paris is the capital of", "Paris", settings=TraceSettings(kinds=("attn",), windows=(2,)))
    assert list(z.grids) == ["attn:2"] and z.trace_settings.kinds == ("attn",) and z.trace_settings.samples == 1
    assert list(zero(model, tok, "Paris is the capital of", "Paris", windows=[2], kind="block").grids) == ["block:2"]
    with pytest.raises(ValueError, match="zeroing takes one kind"):
        zero(model, tok, "Paris is the capital of", "Paris", settings=TraceSettings(kinds=("mlp", "attn")))


@pytest.mark.parametrize("fields,message", [
    (dict(kinds=()), "unknown kind"), (dict(kinds=["mlp", "neuron"]), r"unknown kind\(s\) \['neuron'\]"),
    (dict(windows=[]), "windows is empty"), (dict(windows=[2, 0]), "window 0 is not an integer >= 1"),
    (dict(samples=0), "samples must be >= 1"), (dict(engine="turbo"), "unknown engine 'turbo'"),
    (dict(max_rows=0), "max_rows must be >= 1"),
])
def test_trace_settings_reject_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        TraceSettings(**fields)
    with pytest.raises(ValueError, match=message):
        TraceSettings().updated(**fields)
