"""One place for model-specific presets and the shared model/token helpers."""

from __future__ import annotations

import pytest

from locedit.edit.methods import resolve_hparams, table_key
from locedit.localize.noise import table_sigma
from locedit.models import tiny
from locedit.models.presets import DEFAULT, GPTJ, HPARAM_TABLES, NOISE_SIGMA, preset_key, preset_noise_sigma
from locedit.models.tokens import context_length, subject_span, subject_spans


def test_presets_drive_noise_and_hparams(tiny_llama, tiny_gpt2):
    gptj = tiny("gptj")[0]
    assert preset_key(gptj) == table_key(gptj) == GPTJ
    assert preset_noise_sigma(gptj) == table_sigma(gptj) == NOISE_SIGMA[GPTJ] == 0.094
    for model in (tiny_llama[0], tiny_gpt2[0]):  # a 6-layer GPT-2 is not GPT2-XL
        assert preset_key(model) == table_key(model) == DEFAULT and table_sigma(model) is None
    assert resolve_hparams("memit", gptj).mom2_update_weight == HPARAM_TABLES[GPTJ]["memit"]["base"]["mom2_update_weight"]
    assert resolve_hparams("rome", tiny_llama[0]).v_num_grad_steps == 40


def test_context_length_and_subject_spans(tiny_model):
    model, tok = tiny_model
    assert context_length(model) == 512
    prompts = ["Danielle Darrieux's mother tongue is", "Paris is the capital of"]
    assert subject_spans(tok, prompts, "Danielle Darrieux") == [subject_span(tok, prompts[0], "Danielle Darrieux"), None]


def test_context_length_is_none_without_a_limit(tiny_llama):
    class Bare:
        config = type("Config", (), {})()

    assert context_length(Bare()) is None
    with pytest.raises(AttributeError):
        context_length(object())
