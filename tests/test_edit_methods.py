"""ROME, MEMIT and constrained fine-tuning: algebraic properties, objectives, noise, validation, hyperparameters."""

from __future__ import annotations

import pytest
import torch

from locedit.edit.handle import snapshot, weights_equal
from locedit.edit.hparams import FtHparams, MemitHparams, RomeHparams, table_key
from locedit.edit.memit import update_direction
from locedit.edit.methods import METHODS, apply_edit, compute_edits, resolve_hparams
from locedit.edit.request import EditRequest
from locedit.edit.stats import SecondMoments
from locedit.edit.templates import memit_templates, rome_templates
from locedit.models import family_for
from locedit.models.noise import SubjectNoise, noise_installed, noised_subject
from locedit.models.scoring import next_token_top_k, target_probs

# Subject at the end, so a tiny random model's prediction depends directly on the edited position.
PROMPT, SUBJECT = "The mother tongue of Danielle Darrieux", "Danielle Darrieux"
FAST_ROME = {"v_num_grad_steps": 8}
FAST_MEMIT = {"v_num_grad_steps": 8, "mom2_update_weight": 50.0}  # lambda scaled to the tiny d_mlp


pytestmark = pytest.mark.usefixtures("one_thread")


def stats_for(model, tok, corpus_file) -> SecondMoments:
    return SecondMoments(model, tok, corpus_file, 1500)


def down_of(model, layer):
    return model.get_submodule(family_for(model).down_name(layer))


def test_rome_is_rank_one_and_maps_k_star_to_v_star(tiny_model, corpus_file):
    model, tok = tiny_model
    req = EditRequest(PROMPT, SUBJECT, "Paris")
    hp = resolve_hparams("rome", model, "error-injection", FAST_ROME)
    with apply_edit(model, tok, req, "rome", 3, hparams=hp, stats=stats_for(model, tok, corpus_file)) as h:
        (name, delta), = h.deltas.items()
        assert name == f"{family_for(model).down_name(3)}.weight"
        s = torch.linalg.svdvals(delta.double())
        assert s[0] > 0 and s[1] / s[0] < 1e-6
        with torch.no_grad():
            out = down_of(model, 3)(h.info["k_star"][None])[0]
        v_star = h.info["v_star"]
        assert not torch.allclose(h.info["o_star"], v_star, atol=1e-3)  # the edit moved the output
        assert torch.allclose(out, v_star, rtol=1e-4, atol=1e-4 * v_star.norm().item())


def test_memit_spreads_a_rank_one_update_over_every_window_layer(tiny_llama, tiny_gpt2, corpus_file):
    for model, tok in (tiny_llama, tiny_gpt2):
        hp = resolve_hparams("memit", model, "error-injection", FAST_MEMIT)
        req = EditRequest(PROMPT, SUBJECT, "Paris")
        with apply_edit(model, tok, req, "memit", 3, hparams=hp, stats=stats_for(model, tok, corpus_file)) as h:
            assert h.layers == [1, 2, 3, 4, 5]
            fam = family_for(model)
            assert sorted(h.deltas) == sorted(f"{fam.down_name(layer)}.weight" for layer in h.layers)
            for delta in h.deltas.values():
                s = torch.linalg.svdvals(delta.double())
                assert s[0] > 1e-6 and s[1] / s[0] < 1e-6
            gaps = h.info["gap_norms"]
            assert gaps[-1] < gaps[0]  # the window closes part of the gap to z


@pytest.mark.parametrize("method, fast", [("rome", FAST_ROME), ("memit", FAST_MEMIT)])
def test_low_rank_factors_rebuild_every_delta(method, fast, tiny_llama, tiny_gpt2, corpus_file):
    for model, tok in (tiny_llama, tiny_gpt2):
        hp = resolve_hparams(method, model, "error-injection", fast)
        [result] = compute_edits(model, tok, [EditRequest(PROMPT, SUBJECT, "Paris")], method, 3, hp,
                                 stats_for(model, tok, corpus_file))
        fam = family_for(model)
        assert sorted(result.low_rank) == sorted(result.deltas)
        for name, (left, right) in result.low_rank.items():
            rebuilt = fam.down_update(torch.outer(left.double(), right.double()))
            delta = result.deltas[name].double()
            assert torch.allclose(rebuilt, delta, rtol=1e-5, atol=1e-6 * delta.abs().max().item())


def test_compute_edits_fails_one_request_alone_and_leaves_weights(tiny_llama, corpus_file):
    model, tok = tiny_llama
    hp = resolve_hparams("rome", model, "error-injection", FAST_ROME)
    before = snapshot(model)
    good, bad = EditRequest(PROMPT, SUBJECT, "Paris"), EditRequest(PROMPT, "Marie Curie", "Paris")
    stats = stats_for(model, tok, corpus_file)
    results = compute_edits(model, tok, [good, bad, good], "rome", 3, hp, stats)
    assert isinstance(results[1], ValueError) and "Marie Curie" in str(results[1])
    alone = apply_edit(model, tok, good, "rome", 3, hparams=hp, stats=stats)
    alone.restore()
    for result in (results[0], results[2]):
        (name, delta), = result.deltas.items()
        assert torch.equal(delta, alone.deltas[name]) and result.info["edit_seconds"] > 0
    assert weights_equal(model, before)


def test_sherman_morrison_equals_direct_float64_solve(tiny_llama, corpus_file):
    model, tok = tiny_llama
    stats = stats_for(model, tok, corpus_file)
    c = stats.moment(2)
    g = torch.Generator().manual_seed(0)
    for lam in (1.0, 50.0, 15000.0):
        k = torch.randn(c.shape[0], generator=g, dtype=torch.float64).float()
        fast = update_direction(k, lam, c_inv64=stats.inverse(2, torch.float64))
        direct = update_direction(k, lam, c=c)
        assert torch.allclose(fast, direct, rtol=1e-6, atol=1e-12 * direct.abs().max().item())
    req = EditRequest(PROMPT, SUBJECT, "Paris")
    deltas = {}
    for solver in ("sherman_morrison", "compat"):
        hp = resolve_hparams("memit", model, "error-injection", {**FAST_MEMIT, "solver": solver})
        with apply_edit(model, tok, req, "memit", 2, hparams=hp, stats=stats) as h:
            deltas[solver] = h.deltas
    for name, d in deltas["compat"].items():
        assert torch.allclose(deltas["sherman_morrison"][name], d, rtol=1e-4, atol=1e-6 * d.abs().max().item())


@pytest.mark.parametrize("method", ["ft-1", "ft-5"])
def test_finetuning_stays_inside_its_linf_bound(method, tiny_llama, tiny_gpt2):
    eps = 2e-3
    for model, tok in (tiny_llama, tiny_gpt2):
        hp = resolve_hparams(method, model, "error-injection", {"norm_constraint": eps})
        with apply_edit(model, tok, EditRequest(PROMPT, SUBJECT, "Paris"), method, 2, hparams=hp) as h:
            fam = family_for(model)
            kinds = {"weight", "bias"} if fam.name == "gpt2" else {"weight"}
            assert sorted(h.deltas) == sorted(f"{fam.down_name(layer)}.{k}" for layer in h.layers for k in kinds)
            worst = max(d.abs().max().item() for d in h.deltas.values())
            assert eps * 0.5 < worst <= eps * (1 + 1e-4)  # moved, and no further than the bound


@pytest.mark.parametrize("method", ["rome", "memit", "ft-1", "ft-5"])
def test_objectives_raise_or_lower_the_target_probability(method, tiny_model, corpus_file):
    model, tok = tiny_model
    stats = stats_for(model, tok, corpus_file) if METHODS[method].uses_stats else None
    likely = next(s.strip() for s, _ in next_token_top_k(model, tok, PROMPT, k=100) if s.startswith(" ") and s[1:].isalpha())
    overrides = {"rome": FAST_ROME, "memit": FAST_MEMIT,
                 "ft-1": {"norm_constraint": 1e-2, "loss_threshold": 1e-6},
                 "ft-5": {"norm_constraint": 1e-2, "loss_threshold": 1e-6}}[method]
    for objective, target in (("maximize", "Paris"), ("minimize", likely)):
        problem = "fact-erasure" if objective == "minimize" else "error-injection"
        hp = resolve_hparams(method, model, problem, overrides)
        req = EditRequest(PROMPT, SUBJECT, target, objective=objective)
        before = target_probs(model, tok, [PROMPT], [target])[0].item()
        with apply_edit(model, tok, req, method, 3, hparams=hp, stats=stats):
            after = target_probs(model, tok, [PROMPT], [target])[0].item()
        assert after > before * 1.01 if objective == "maximize" else after < before * 0.99, (objective, before, after)


@pytest.mark.parametrize("method", ["rome", "ft-1"])
def test_fact_forcing_noise_is_seeded_and_changes_the_edit(method, tiny_llama, corpus_file):
    model, tok = tiny_llama
    stats = stats_for(model, tok, corpus_file)
    hp = resolve_hparams(method, model, "fact-forcing", {"v_num_grad_steps": 4} if method == "rome" else {"num_steps": 4})
    prompt = "Danielle Darrieux was born in the city of"

    def deltas(**noise):
        req = EditRequest(prompt, SUBJECT, "Paris", **noise)
        with apply_edit(model, tok, req, method, 2, hparams=hp, stats=stats) as h:
            out = dict(h.deltas)
        assert not noise_installed(model)
        return out

    clean, noised = deltas(), deltas(noise_sigma=0.5)
    again, fixed = deltas(noise_sigma=0.5), deltas(noise_sigma=0.5, noise_mode="fixed")
    for name in clean:
        assert torch.equal(noised[name], again[name])
        assert not torch.allclose(noised[name], clean[name])
        if method == "rome":  # context rows: compat noises the plain prompt's span, fixed each row's subject
            assert not torch.allclose(noised[name], fixed[name])


def test_templates_are_seeded_cached_and_well_formed(tiny_llama):
    model, tok = tiny_llama
    rome = rome_templates(model, tok)
    assert len(rome) == 21 and rome[0] == "{}" and rome == rome_templates(model, tok)
    groups = memit_templates(model, tok)
    assert [len(g) for g in groups] == [1, 5] and groups[0] == ["{}"]
    for t in rome[1:] + groups[1]:
        assert t.count("{") == 1 and t.count("}") == 1 and t.endswith(". {}")
    assert memit_templates(model, tok, seed=7) != groups
    with noised_subject(model, SubjectNoise(0.1, default_span=(0, 1))):
        with pytest.raises(RuntimeError, match="noise"):
            rome_templates(model, tok, seed=123)


def test_bad_input_gives_one_line_errors(tiny_llama, corpus_file):
    model, tok = tiny_llama
    snap = snapshot(model)
    req = EditRequest(PROMPT, SUBJECT, "Paris")
    with pytest.raises(ValueError, match=r"out of range .*0\.\.5"):
        apply_edit(model, tok, req, "ft-1", 6)
    with pytest.raises(ValueError, match="empty target"):
        apply_edit(model, tok, EditRequest(PROMPT, SUBJECT, "  "), "ft-1", 1)
    with pytest.raises(ValueError, match="unknown editing method .grace.; use one of ft-1, ft-5, rome, memit"):
        apply_edit(model, tok, req, "grace", 1)
    with pytest.raises(ValueError, match="not found"):
        apply_edit(model, tok, EditRequest(PROMPT, "Nobody", "Paris"), "ft-1", 1)
    with pytest.raises(ValueError, match="fact-forcing"):
        resolve_hparams("rome", model, "fact-forgetting")
    with pytest.raises(ValueError, match="v_lr"):
        resolve_hparams("rome", model, None, {"vlr": 1})
    assert weights_equal(model, snap)


def test_paper_hyperparameter_tables(tiny_model):
    model, _ = tiny_model
    assert table_key(model) == ("gpt-j" if family_for(model).name == "gptj" else "default")
    ei = resolve_hparams("rome", "gpt-j", "error-injection")
    assert isinstance(ei, RomeHparams) and (ei.kl_factor, ei.v_num_grad_steps, ei.v_lr) == (1.0, 20, 0.5)
    ff = resolve_hparams("rome", "gpt-j", "fact-forcing")
    assert (ff.v_num_grad_steps, ff.v_lr, ff.kl_factor) == (25, 0.05, 0.0625)
    assert resolve_hparams("rome", "gpt-j", "fact-erasure").kl_factor == 0.0625
    memit = resolve_hparams("memit", "gpt-j", "error-injection")
    assert isinstance(memit, MemitHparams) and (memit.kl_factor, memit.mom2_update_weight, memit.clamp_norm_factor) == (0.9, 15000.0, 0.75)
    assert resolve_hparams("memit", "gpt2-xl").mom2_update_weight == 20000.0
    eps = {(m, p): resolve_hparams(m, "gpt-j", p).norm_constraint for m in ("ft-1", "ft-5")
           for p in ("error-injection", "tracing-reversal", "fact-erasure", "fact-amplification", "fact-forcing")}
    assert eps[("ft-1", "error-injection")] == 1e-4 and eps[("ft-5", "error-injection")] == 2e-5
    assert eps[("ft-1", "tracing-reversal")] == 1e-5 and eps[("ft-5", "fact-forcing")] == 1e-4
    ft_ff = resolve_hparams("ft-5", "gpt-j", "fact-forcing")
    assert isinstance(ft_ff, FtHparams) and (ft_ff.num_steps, ft_ff.n_copies, ft_ff.window) == (50, 10, 5)
    assert resolve_hparams("ft-1", "gpt-j", "fact-forcing").window == 1


@pytest.mark.embedded
def test_embedded_rome_error_injection_rewrites_one_fact(embedded, shared_data):
    """Default hyperparameters and statistics on SmolLM2-135M: the new object becomes the top continuation."""
    model, tok = embedded
    req = EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English")
    neighbor = "Michel Rocard is a native speaker of"
    assert next_token_top_k(model, tok, req.prompt, k=1)[0][0] == " French"
    neighbor_top = next_token_top_k(model, tok, neighbor, k=1)[0][0]
    snap = snapshot(model)
    # layer 12, as in test_edit_api: one pass over the statistics corpus serves both
    with apply_edit(model, tok, req, "rome", 12, problem="error-injection") as h:
        assert h.layers == [12] and h.edit_seconds > 0
        assert next_token_top_k(model, tok, req.prompt, k=1)[0][0] == " English"
        assert next_token_top_k(model, tok, neighbor, k=1)[0][0] == neighbor_top
    assert weights_equal(model, snap)
