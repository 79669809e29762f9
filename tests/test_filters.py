"""Correctness and Fact Erasure filters (docs/algorithms.md#selection, #reference-deviations)."""

from __future__ import annotations

import copy

import pytest

from locedit.data import Fact, load_counterfact_mend, load_demo_facts
from locedit.data.filters import (
    contains_target,
    continuation_texts,
    correctness_filter,
    erasure_filter,
    verdict_of,
)
from locedit.models.scoring import target_probs
from locedit.models.tokens import encode


def cleanup_tokenizer(tok):
    """A copy whose decode strips spaces before punctuation, like the GPT-2 tokenizer of the reference era."""
    t = copy.deepcopy(tok)
    t.clean_up_tokenization_spaces = True
    t.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    return t


def test_substring_rule():
    assert contains_target(" He was a Frenchman.", "French")
    assert contains_target("PARIS", " paris ")
    assert not contains_target("Par is", "Paris")


def test_compat_keeps_an_unreproduced_prompt(tiny_llama):
    _, tok = tiny_llama
    prompt, new = "Apple Inc . was founded by", encode(tok, " Steve Jobs in a garage")
    assert continuation_texts(tok, prompt, new) == ("Steve Jobs in a garage", "Steve Jobs in a garage")
    cleaning = cleanup_tokenizer(tok)
    compat, fixed = continuation_texts(cleaning, prompt, new)
    assert compat.startswith("Apple Inc.") and fixed == "Steve Jobs in a garage"
    fact = Fact(0, "Apple Inc", prompt, "Apple")
    v = verdict_of(cleaning, fact, new)
    assert (v.compat, v.fixed) == (True, False)
    v = verdict_of(tok, fact, new)
    assert (v.compat, v.fixed) == (False, False)


def test_pad_and_eos_are_dropped(tiny_llama):
    _, tok = tiny_llama
    new = encode(tok, " Par") + [tok.eos_token_id] + encode(tok, "is")
    assert continuation_texts(tok, "The capital of France is", new) == ("Paris", "Paris")


def test_batched_equals_single_and_keeps_input_order(tiny_llama):
    model, tok = tiny_llama
    facts = [Fact(i, s, p, "x") for i, (s, p) in enumerate([
        ("Danielle Darrieux", "The mother tongue of Danielle Darrieux is"), ("Toko", "Toko plays"),
        ("the Autonomous University of Madrid", "Where is the Autonomous University of Madrid? It is in"),
        ("BBC One", "BBC One, by")])]
    batched = correctness_filter(model, tok, facts, max_new_tokens=8, batch_size=3)
    single = [correctness_filter(model, tok, [f], max_new_tokens=8).verdicts[0] for f in facts]
    assert [v.case_id for v in batched.verdicts] == [0, 1, 2, 3]
    assert [v.text_fixed for v in batched.verdicts] == [v.text_fixed for v in single]
    with pytest.raises(ValueError, match="unknown filter mode"):
        correctness_filter(model, tok, facts, mode="strict")


def test_erasure_threshold_is_strict(tiny_llama):
    model, tok = tiny_llama
    facts = [Fact(0, "France", "The capital of France is", "Paris"), Fact(1, "Ada", "Ada was born in", "New York City")]
    p = target_probs(model, tok, [f.prompt for f in facts], [f.target_true for f in facts])
    at = erasure_filter(model, tok, facts, threshold=float(p[0]), batch_size=1)
    assert at[0].p_true == pytest.approx(float(p[0]), rel=1e-5) and at[1].p_true == pytest.approx(float(p[1]), rel=1e-5)
    assert not at[0].passes
    assert erasure_filter(model, tok, facts[:1], threshold=float(p[0]) * 0.999)[0].passes


@pytest.mark.embedded
def test_batched_verdicts_equal_single_on_embedded(embedded, shared_data):
    model, tok = embedded
    facts = load_counterfact_mend(shared_data)[:6]
    batched = correctness_filter(model, tok, facts, batch_size=4)
    single = [correctness_filter(model, tok, [f]).verdicts[0] for f in facts]
    assert [(v.compat, v.fixed) for v in batched.verdicts] == [(v.compat, v.fixed) for v in single]
    assert batched.n_known >= 1  # case 0 (French) is known
    p_batched = [e.p_true for e in erasure_filter(model, tok, facts)]
    p_single = [erasure_filter(model, tok, [f])[0].p_true for f in facts]
    assert p_batched == pytest.approx(p_single, rel=1e-4)


@pytest.mark.embedded
def test_compat_and_fixed_differ_only_for_unreproduced_prompts(embedded):
    model, tok = embedded
    facts = load_demo_facts()[:4] + [
        Fact(100, "Paris", "Paris , the capital of France, lies on the river", "Paris"),
        Fact(101, "Berlin", "Berlin , the capital of Germany, lies on the river", "Berlin")]
    plain = correctness_filter(model, tok, facts)
    assert plain.n_disagree == 0  # SmolLM2's byte-level BPE reproduces every prompt exactly
    assert not any(v.fixed for v in plain.verdicts[-2:])  # the model names the river, not the city
    cleaned = correctness_filter(model, cleanup_tokenizer(tok), facts)
    differs = [v.case_id for v in cleaned.verdicts if v.compat != v.fixed]
    assert differs == [100, 101]
    assert [v.fixed for v in cleaned.verdicts] == [v.fixed for v in plain.verdicts]
    assert cleaned.count("compat") == plain.count("compat") + 2
