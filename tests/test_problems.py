"""Editing problems: targets, baselines, objectives, o_noise modes, and that each edit moves its target the right way."""

from __future__ import annotations

import pytest
import torch

from locedit.data.fact import Fact
from locedit.study.session import edit_and_evaluate
from locedit.edit.problems import PROBLEMS, ProblemContext, get_problem, most_likely_text, noised_next_token_probs
from locedit.models.families import family_for
from locedit.models.tokens import encode, subject_span, target_ids

FACT = Fact(case_id=3, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is",
            target_true="French", target_new="English",
            paraphrase_prompts=("Danielle Darrieux grew up speaking",),
            neighborhood_prompts=("The mother tongue of Léon Blum is",))


def test_registry_names_and_aliases():
    assert list(PROBLEMS) == ["error-injection", "tracing-reversal", "fact-erasure", "fact-amplification",
                              "fact-forcing"]
    assert get_problem("FF") is PROBLEMS["fact-forcing"] and get_problem("ei").name == "error-injection"
    with pytest.raises(ValueError, match="unknown editing problem 'flip'"):
        get_problem("flip")


def test_targets_baselines_and_objectives(tiny_llama):
    model, tok = tiny_llama
    ctx = ProblemContext(model, tok, sigma=0.3)
    ei = get_problem("ei").prepare(ctx, FACT)
    assert (ei.target_new, ei.request_baseline, ei.request.objective) == ("English", "French", "maximize")
    assert ei.eval_sigma is None and ei.request.noise_sigma is None and not ei.erasure
    fe = get_problem("fe").prepare(ctx, FACT)
    assert (fe.target_new, fe.request_baseline, fe.request.objective, fe.erasure) == ("French", tok.eos_token,
                                                                                       "minimize", True)
    fa = get_problem("fa").prepare(ctx, FACT)
    assert (fa.target_new, fa.request.objective, fa.erasure) == ("French", "maximize", False)
    ff = get_problem("ff").prepare(ctx, FACT)
    assert ff.target_new == "French" and ff.request.noise_sigma == 0.3 and ff.eval_sigma == 0.3
    assert ff.request.noise_mode == "compat"
    assert ProblemContext(model, tok, sigma=0.3, ff_noise_mode="fixed").sigma == 0.3
    assert get_problem("ff").prepare(ProblemContext(model, tok, sigma=0.3, ff_noise_mode="fixed"),
                                     FACT).request.noise_mode == "fixed"


def test_error_injection_rejects_bad_targets(tiny_llama):
    ctx = ProblemContext(*tiny_llama)
    from dataclasses import replace

    with pytest.raises(ValueError, match="equals the true target"):
        get_problem("ei").prepare(ctx, replace(FACT, target_new=" French"))
    with pytest.raises(ValueError, match="no new target"):
        get_problem("ei").prepare(ctx, replace(FACT, target_new=None))
    with pytest.raises(ValueError, match="no true target"):
        get_problem("fa").prepare(ctx, replace(FACT, target_true=""))


def test_fact_forcing_baseline_is_noised_argmax(tiny_gpt2):
    model, tok = tiny_gpt2
    ctx = ProblemContext(model, tok, sigma=2.0)
    ids = torch.tensor([encode(tok, FACT.prompt)] * 10)
    s0, s1 = subject_span(tok, FACT.prompt, FACT.subject)
    fam = family_for(model)
    emb = fam.module(model, fam.embed)(ids).clone()
    eps = torch.randn((10, s1 - s0, emb.shape[-1]), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    emb[:, s0:s1] += (2.0 * eps).to(emb.dtype)
    with torch.no_grad():
        probs = torch.softmax(model(inputs_embeds=emb).logits[:, -1].float(), -1).mean(0)
    assert torch.allclose(noised_next_token_probs(model, tok, FACT.prompt, FACT.subject, 2.0, 10), probs, atol=1e-6)
    ff10 = get_problem("ff").prepare(ctx, FACT, baseline_rows=10)
    assert ff10.request_baseline == tok.decode([int(probs.argmax())])
    clean = torch.softmax(model(input_ids=ids[:1]).logits[0, -1], -1)
    assert not torch.allclose(clean, probs, rtol=0.05, atol=0)  # the noise did change the distribution


def test_o_noise_modes(tiny_llama):
    model, tok = tiny_llama
    compat = ProblemContext(model, tok, sigma=1.0)
    target = get_problem("tr").prepare(compat, FACT).target_new
    assert target.startswith(FACT.prompt) and len(target) > len(FACT.prompt)  # prompt + sampled tokens
    assert len(encode(tok, target)) <= 13
    assert get_problem("tr").prepare(compat, FACT).target_new is target  # sampled once, cached
    assert ProblemContext(model, tok, sigma=1.0).cached(("x",), lambda: 1) == 1
    again = get_problem("tr").prepare(ProblemContext(model, tok, sigma=1.0), FACT).target_new
    assert again == target  # fixed seed: the same sample in a fresh context
    cont = get_problem("tr").prepare(ProblemContext(model, tok, sigma=1.0, o_noise_mode="continuation"), FACT)
    assert cont.target_new and not cont.target_new.startswith(FACT.prompt) and cont.target_new == cont.target_new.strip()
    arg = get_problem("tr").prepare(ProblemContext(model, tok, sigma=1.0, o_noise_mode="argmax"), FACT)
    assert len(encode(tok, " " + arg.target_new)) >= 1 and arg.target_new.strip() == arg.target_new
    assert get_problem("tr").prepare(compat, FACT).details == {"o_noise_mode": "compat"}


def test_o_noise_compat_of_a_long_prompt_is_the_prompt(tiny_llama):
    model, tok = tiny_llama
    long = Fact(case_id=1, subject="Danielle Darrieux",
                prompt="In the year of her first film, which was long ago, the mother tongue of Danielle Darrieux is",
                target_true="French")
    assert len(encode(tok, long.prompt)) >= 12
    assert get_problem("tr").prepare(ProblemContext(model, tok, sigma=1.0), long).target_new == long.prompt


def test_bad_context_settings(tiny_llama):
    with pytest.raises(ValueError, match="o_noise mode"):
        ProblemContext(*tiny_llama, o_noise_mode="sample")
    with pytest.raises(ValueError, match="noise mode"):
        ProblemContext(*tiny_llama, ff_noise_mode="random")
    with pytest.raises(ValueError, match="sigma"):
        ProblemContext(*tiny_llama, sigma=-1.0)


@pytest.mark.parametrize("problem,direction", [("error-injection", 1), ("tracing-reversal", 1), ("fact-erasure", -1),
                                               ("fact-amplification", 1), ("fact-forcing", 1)])
def test_each_problem_moves_its_target_the_right_way(tiny_gpt2, problem, direction):
    """FT-1 with a loose constraint on a tiny model: the edited probability moves the problem's way.

    (Threshold 0: the tiny model's p(o_true) is far below FT's 0.01 stopping threshold for erasure.)
    """
    model, tok = tiny_gpt2
    row = edit_and_evaluate(model, tok, FACT, "ft-1", 3, problem, hparams={"norm_constraint": 0.05, "loss_threshold": 0.0},
                            noise_sigma=0.5, essence=False)
    assert row.weights_restored
    assert direction * (row.rewrite_post - row.rewrite_pre) > 0
    assert row.rewrite_post / row.rewrite_pre > 1.5 if direction > 0 else row.rewrite_post < row.rewrite_pre


def test_default_sigma_is_the_tracing_noise_level(tiny_llama, shared_data):
    from locedit.localize.noise import noise_level

    model, tok = tiny_llama
    assert ProblemContext(model, tok).sigma == pytest.approx(noise_level(model, tok)) and noise_level(model, tok) > 0


def test_most_likely_text_passes_over_blank_tokens(tiny_gpt2):
    _, tok = tiny_gpt2
    blank, word = encode(tok, "\n")[0], encode(tok, " Paris")[0]
    probs = torch.zeros(len(tok))
    probs[blank], probs[word] = 0.7, 0.2
    assert most_likely_text(tok, probs, "p") == tok.decode([word])
    with pytest.raises(ValueError, match="no non-blank token among the 1 most likely after 'p'"):
        most_likely_text(tok, probs, "p", top=1)


@pytest.mark.embedded
def test_fact_forcing_baseline_is_never_blank_on_the_embedded_model(embedded):
    """CounterFact case 9: with the subject noised, SmolLM2's argmax after the prompt is the blank token " "."""
    model, tok = embedded
    fact = Fact(case_id=9, subject="Shree Pundalik", prompt="Shree Pundalik, created in", target_true="India")
    probs = noised_next_token_probs(model, tok, fact.prompt, fact.subject, 0.35, 10)
    assert not tok.decode([int(probs.argmax())]).strip()  # the case this guards against does occur
    ff = get_problem("ff").prepare(ProblemContext(model, tok, sigma=0.35), fact, baseline_rows=10)
    assert ff.request_baseline == tok.decode([int(probs.argsort(descending=True)[1])]) and target_ids(tok, ff.request_baseline)
