"""Foundation: family table, tokenization rules, batched scoring and generation, model loading (interventions:
test_interventions.py)."""

from __future__ import annotations

import pytest
import torch

from locedit.models import UnsupportedModelError, family_for, load_model
from locedit.models.generation import greedy_generate, sample_top_k
from locedit.models.scoring import target_log_probs
from locedit.models.tokens import (EmptyTargetError, SubjectNotFoundError, encode, subject_last_index, subject_span,
                                   target_ids, template_of)
from locedit.windows import window_layers

PROMPTS = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of", "Toyota was founded in the country of"]
TARGETS = ["French", "France", "Japan is great"]


def test_family_modules_resolve(tiny_model):
    model, _ = tiny_model
    fam = family_for(model)
    n = fam.n_layers(model)
    d, m = model.config.hidden_size, fam.down_weight(model, 0).shape[1]
    assert fam.down_weight(model, n - 1).shape == (d, m)
    for kind in ("mlp", "attn", "block"):
        model.get_submodule(fam.site(f"{kind}_output", n - 1).path)
    assert fam.unembed_module(model).weight.shape[1] == d
    assert fam.module(model, fam.unembed) is fam.unembed_module(model)


def test_unknown_family_names_supported_ones(tiny_llama):
    with pytest.raises(UnsupportedModelError, match="supported: .*gpt2.*llama.*families.py"):
        family_for("bert")


def test_target_has_exactly_one_leading_space(tiny_llama):
    _, tok = tiny_llama
    assert target_ids(tok, "French") == target_ids(tok, " French") == encode(tok, " French")
    assert target_ids(tok, " French", spacing="compat") == encode(tok, "  French")
    with pytest.raises(EmptyTargetError, match="empty target"):
        target_ids(tok, "  ")


@pytest.mark.parametrize("prompt,subject", [
    ("The mother tongue of Danielle Darrieux is", "Danielle Darrieux"),
    ("Danielle Darrieux speaks", "Danielle Darrieux"),
    ("The best city is Paris", "Paris"),
    ("Paris is a city in", "Paris"),
])
def test_subject_span_covers_subject(tiny_llama, prompt, subject):
    _, tok = tiny_llama
    ids = encode(tok, prompt)
    s0, s1 = subject_span(tok, prompt, subject)
    assert subject in tok.decode(ids[s0:s1])
    assert subject not in tok.decode(ids[s0 + 1:s1]) and subject not in tok.decode(ids[s0:s1 - 1])
    assert subject_last_index(tok, template_of(prompt, subject), subject) == s1 - 1


def test_subject_span_ascii_fallback_and_missing(tiny_llama):
    _, tok = tiny_llama
    s0, s1 = subject_span(tok, "The capital of Curaçao is", "Curacao")
    assert s1 > s0
    with pytest.raises(SubjectNotFoundError, match="not found"):
        subject_span(tok, "The capital of France is", "Germany")


def test_subject_last_index_with_context_prefix(tiny_llama):
    _, tok = tiny_llama
    template = "Some words here. {} speaks the language"
    idx = subject_last_index(tok, template, "Danielle Darrieux")
    ids = encode(tok, template.format("Danielle Darrieux"))
    assert tok.decode(ids[: idx + 1]).endswith("Darrieux")


def _slow_log_prob(model, tok, prefix: str, target: str) -> float:
    """Oracle: one sequence at a time, one target token at a time."""
    pre, tgt = encode(tok, prefix), target_ids(tok, target)
    total = 0.0
    for j, y in enumerate(tgt):
        ids = torch.tensor([pre + tgt[:j]])
        total += torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)[y].item()
    return total


def test_batched_scoring_equals_slow_oracle(tiny_model):
    model, tok = tiny_model
    with torch.no_grad():
        batched = target_log_probs(model, tok, PROMPTS, TARGETS)
        slow = [_slow_log_prob(model, tok, p, t) for p, t in zip(PROMPTS, TARGETS)]
    assert torch.allclose(batched.double(), torch.tensor(slow, dtype=torch.float64), atol=1e-4)


def test_batched_greedy_equals_unbatched(tiny_model):
    model, tok = tiny_model
    batched = greedy_generate(model, tok, PROMPTS, max_new_tokens=6)
    single = [greedy_generate(model, tok, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert batched == single


def test_sampling_is_seeded(tiny_llama):
    model, tok = tiny_llama
    a = sample_top_k(model, tok, ["", "The"], max_length=6, seed=3)
    b = sample_top_k(model, tok, ["", "The"], max_length=6, seed=3)
    c = sample_top_k(model, tok, ["", "The"], max_length=6, seed=4)
    assert a == b and a != c
    assert a[1].startswith("The")


def test_window_clipping():
    assert window_layers(0, 5, 28) == [0, 1, 2]
    assert window_layers(27, 5, 28) == [25, 26, 27]
    assert window_layers(10, 10, 28) == list(range(5, 15))
    assert window_layers(4, 1, 28) == [4]
    with pytest.raises(ValueError, match="out of range"):
        window_layers(28, 5, 28)
    with pytest.raises(ValueError, match="larger than the model"):
        window_layers(2, 40, 28)


@pytest.mark.embedded
def test_embedded_model_knows_a_fact(embedded):
    model, tok = embedded
    assert family_for(model).n_layers(model) == 30
    ids = greedy_generate(model, tok, [PROMPTS[0]], max_new_tokens=3)[0]
    assert "French" in tok.decode(ids)


@pytest.mark.embedded
def test_embedded_batched_generation_equals_unbatched(embedded):
    model, tok = embedded
    batched = greedy_generate(model, tok, PROMPTS, max_new_tokens=8)
    assert batched == [greedy_generate(model, tok, [p], max_new_tokens=8)[0] for p in PROMPTS]


@pytest.mark.embedded
def test_cached_weights_equal_fresh_dequantization(embedded):
    from transformers import AutoModelForCausalLM

    from locedit.models.loading import embedded_gguf_path

    gguf = embedded_gguf_path()
    fresh = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached, tok = embedded
    ids = torch.tensor([encode(tok, PROMPTS[0])])
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, cached(input_ids=ids).logits)


def test_unknown_model_fails_fast():
    from locedit.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="--model PATH"):
        load_model("someone/not-a-real-model-xyz")
