"""Edit metrics: hand-computable formulas, batched evaluation against a one-prompt-at-a-time oracle,
paired Fact Forcing noise, essence perplexity and its disk cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from locedit.data.fact import Fact
from locedit.edit.problems import ProblemContext, get_problem
from locedit.evaluate import Evaluator, edit_scores, evaluate_state
from locedit.evaluate import metrics as M
from locedit.evaluate.essence import essence_texts, perplexities
from locedit.evaluate.evaluation import Evaluation
from locedit.files import verify_checked, write_checked
from locedit.models.families import family_for
from locedit.models.tokens import SubjectNotFoundError, encode, subject_span, target_ids

FACT = Fact(case_id=7, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is",
            target_true="French", target_new="English",
            paraphrase_prompts=("Where Danielle Darrieux is from, people speak the language of",
                                "Danielle Darrieux was born in a country whose language is"),
            neighborhood_prompts=("The mother tongue of Léon Blum is", "Michel Rocard is a native speaker of"),
            attribute_prompts=("Bill Gates speaks",))


# -- formulas ------------------------------------------------------------------------------------

def test_rewrite_score_by_hand():
    assert M.rewrite_score(0.2, 0.6) == pytest.approx(0.5)  # (0.6-0.2)/(1-0.2)
    assert M.rewrite_score(0.0, 1.0) == pytest.approx(1.0)
    assert M.rewrite_score(0.5, 0.4) == M.REWRITE_FLOOR  # a drop is floored at 2e-8
    assert M.rewrite_score(1.0, 1.0) == 1.0


def test_erasure_score_by_hand():
    assert M.erasure_score(0.8, 0.2) == pytest.approx(0.75)
    assert M.erasure_score(0.3, 0.6) == 0.0
    assert M.erasure_score(0.0, 0.0) == 0.0


def test_neighborhood_score_by_hand():
    assert M.neighborhood_score(0.3, 0.3) == 1.0
    assert M.neighborhood_score(0.2, 0.6) == pytest.approx(1 - 0.4 / 0.8)
    assert M.neighborhood_score(0.9, 0.0) == pytest.approx(0.0)  # the largest move possible from 0.9
    assert M.neighborhood_score(0.5, 1.0) == pytest.approx(0.0)


def test_essence_and_overall_by_hand():
    assert M.essence_score(10.0, 12.0) == pytest.approx(0.6)
    assert M.essence_score(10.0, 9.0) == 1.0
    assert M.essence_score(10.0, 30.0) == 0.0
    assert M.overall_score(0.9, 0.6, 0.3) == pytest.approx(0.6)
    assert M.overall_score(0.9, None, 0.3) == pytest.approx(0.6)  # a missing score is left out
    assert M.overall_essence_score(1.0, 0.5, 0.5, 0.0) == pytest.approx(0.5)


def test_rome_success_magnitude_by_hand():
    new, base = [math.log(0.5), math.log(0.1)], [math.log(0.2), math.log(0.3)]
    s, m = M.rome_success_magnitude(new, base)
    assert s == 0.5 and m == pytest.approx(((0.5 - 0.2) + (0.1 - 0.3)) / 2)
    s, m = M.rome_success_magnitude(new, base, neighborhood=True)
    assert s == 0.5 and m == pytest.approx(-((0.5 - 0.2) + (0.1 - 0.3)) / 2)
    assert M.rome_success_magnitude([], []) == (None, None)


def _ev(new: dict, base: dict | None = None, ppl: float | None = None) -> Evaluation:
    lg = {g: tuple(math.log(p) for p in v) for g, v in new.items()}
    lb = {g: tuple(math.log(p) for p in v) for g, v in (base or {g: [0.5] * len(v) for g, v in new.items()}).items()}
    return Evaluation(lg, lb, ppl, 0.0)


def test_edit_scores_first_prompt_and_average(tiny_llama):
    prepared = get_problem("ei").prepare(ProblemContext(*tiny_llama), FACT)
    pre = _ev({"rewrite": [0.2], "paraphrase": [0.2, 0.5], "neighborhood": [0.3, 0.1], "attribute": [0.1]}, ppl=10.0)
    post = _ev({"rewrite": [0.6], "paraphrase": [0.6, 0.5], "neighborhood": [0.3, 0.6], "attribute": [0.1]}, ppl=11.0)
    row = edit_scores(prepared, pre, post)
    assert row["rewrite_score"] == pytest.approx(0.5) and row["paraphrase_score"] == pytest.approx(0.5)
    assert row["neighborhood_score"] == pytest.approx(1.0)  # first neighbor only (compat)
    assert row["essence_score"] == pytest.approx(0.8)
    assert row["overall_score"] == pytest.approx(2 / 3)
    assert row["overall_essence_score"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.8) / 4)
    avg = edit_scores(prepared, pre, post, average=True)
    assert avg["paraphrase_score"] == pytest.approx((0.5 + M.REWRITE_FLOOR) / 2)
    assert avg["neighborhood_score"] == pytest.approx((1.0 + (1 - 0.5 / 0.9)) / 2)
    assert avg["paraphrase_pre"] == pytest.approx(0.35)


def test_edit_scores_fact_erasure_uses_erased_proportion(tiny_llama):
    prepared = get_problem("fe").prepare(ProblemContext(*tiny_llama), FACT)
    pre = _ev({"rewrite": [0.8], "paraphrase": [0.4], "neighborhood": [0.3], "attribute": []})
    post = _ev({"rewrite": [0.2], "paraphrase": [0.5], "neighborhood": [0.3], "attribute": []})
    row = edit_scores(prepared, pre, post)
    assert row["rewrite_score"] == pytest.approx(0.75) and row["paraphrase_score"] == 0.0
    assert row["neighborhood_score"] == 1.0 and row["essence_score"] is None


# -- batched evaluation vs a one-prompt-at-a-time oracle ---------------------------------------------

def _slow_logp(model, tok, prefix: str, target: str, eps: torch.Tensor | None, span) -> float:
    """One forward per (prefix, target): noise added to inputs_embeds by hand, log-softmax summed."""
    p, t = encode(tok, prefix), target_ids(tok, target)
    ids = torch.tensor([p + t])
    fam = family_for(model)
    emb = fam.module(model, fam.embed)(ids).clone()
    if eps is not None and span is not None:
        s0, s1 = span
        emb[0, s0:s1] += eps[: s1 - s0].to(emb.dtype)
    with torch.no_grad():
        logits = model(inputs_embeds=emb).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    return float(sum(lp[len(p) - 1 + i, y] for i, y in enumerate(t)))


@pytest.mark.parametrize("problem", ["error-injection", "fact-forcing"])
def test_batched_evaluation_matches_slow_oracle(tiny_model, problem):
    model, tok = tiny_model
    sigma = 0.5
    prepared = get_problem(problem).prepare(ProblemContext(model, tok, sigma=sigma), FACT)
    ev = evaluate_state(model, tok, prepared)
    prompts = [FACT.prompt, *FACT.paraphrase_prompts, *FACT.neighborhood_prompts, *FACT.attribute_prompts]
    rows = [(p, t) for p in prompts for t in (prepared.target_new, prepared.request_baseline)]
    eps = None
    spans = []
    for p, _ in rows:
        try:
            spans.append(subject_span(tok, p, FACT.subject))
        except SubjectNotFoundError:
            spans.append(None)
    if problem == "fact-forcing":
        width = max(s1 - s0 for s0, s1 in (s for s in spans if s))
        d = family_for(model).module(model, family_for(model).embed).weight.shape[1]
        gen = torch.Generator().manual_seed(1)
        eps = sigma * torch.randn((len(rows), width, d), generator=gen, dtype=torch.float64)
    slow = [_slow_logp(model, tok, p, t, None if eps is None else eps[r], spans[r]) for r, (p, t) in enumerate(rows)]
    fast = [v for g in ("rewrite", "paraphrase", "neighborhood", "attribute")
            for pair in zip(ev.logp_new[g], ev.logp_base[g]) for v in pair]
    assert fast == pytest.approx(slow, abs=1e-4)
    if problem == "fact-forcing":  # noise really changed something: the clean rewrite differs
        clean = _slow_logp(model, tok, FACT.prompt, prepared.target_new, None, None)
        assert abs(clean - slow[0]) > 1e-3


def test_fact_forcing_evaluation_is_paired(tiny_gpt2):
    model, tok = tiny_gpt2
    prepared = get_problem("ff").prepare(ProblemContext(model, tok, sigma=1.0), FACT)
    evaluator = Evaluator(model, tok, essence=False)
    pre = evaluator.pre(prepared)
    post = evaluator.evaluate(prepared)  # no edit in between: identical noise -> identical numbers
    assert post.logp_new == pre.logp_new and post.logp_base == pre.logp_base
    row = evaluator.scores(prepared, pre, post)
    assert row["rewrite_score"] == M.REWRITE_FLOOR and row["neighborhood_score"] == 1.0


# -- essence ------------------------------------------------------------------------------------------

def test_perplexity_matches_definition(tiny_llama):
    model, tok = tiny_llama
    texts = ["Danielle Darrieux is a French actress and singer.", "Danielle Darrieux is a name"]
    batched = perplexities(model, tok, texts)
    for text, value in zip(texts, batched):
        ids = torch.tensor([encode(tok, text)])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        n = ids.shape[1]
        expected = math.exp(-sum(float(lp[i - 1, ids[0, i]]) for i in range(1, n)) / n)  # divided by N
        assert value == pytest.approx(expected, rel=1e-4)
    noised = perplexities(model, tok, texts, noise_sigma=1.0, subject="Danielle Darrieux")
    assert noised[0] != pytest.approx(batched[0], rel=1e-4)
    assert noised == perplexities(model, tok, texts, noise_sigma=1.0, subject="Danielle Darrieux")


def test_essence_texts_are_cached_on_disk(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path))
    model, tok = tiny_llama
    first = essence_texts(model, tok, "Danielle Darrieux", length=20)
    files = list((tmp_path / "essence").rglob("*.json"))
    assert len(first) == 5 and len(files) == 1
    assert all(t.startswith("Danielle Darrieux is a") for t in first)
    stored = json.loads(verify_checked(files[0]))
    stored["texts"][0] = "Danielle Darrieux is a cached text"
    write_checked(files[0], json.dumps(stored).encode())
    again = essence_texts(model, tok, "Danielle Darrieux", length=20)
    assert again[0] == "Danielle Darrieux is a cached text"  # read from disk, not re-sampled
    fresh = essence_texts(model, tok, "Danielle Darrieux", length=20, use_cache=False)
    assert fresh == first  # the seed makes sampling deterministic


def test_evaluator_caches_pre_evaluation(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path))
    model, tok = tiny_llama
    evaluator = Evaluator(model, tok)
    prepared = get_problem("fa").prepare(ProblemContext(model, tok), FACT)
    assert not evaluator.is_cached(prepared)
    pre = evaluator.pre(prepared)
    assert evaluator.is_cached(prepared) and evaluator.pre(prepared) is pre
    assert pre.essence_ppl is not None and pre.essence_ppl > 1
