"""Model names that build random weights: ``tiny:<family>`` and ``random:<preset | config.json>``."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTJConfig

from locedit.experiment.config import ConfigError, parse_config
from locedit.experiment.runner import preflight
from locedit.models.families import family_for
from locedit.models.presets import GPT2_XL, GPTJ, preset_key
from locedit.models.specs import RANDOM_PRESETS, build_random, load_spec, random_config, spec_n_layers, tiny_family


def test_tiny_family():
    assert tiny_family("tiny:gptj") == "gptj"
    assert tiny_family("smollm2-135m") is None


@pytest.mark.parametrize("preset, table, down", [("gptj-6b", GPTJ, (4096, 16384)), ("gpt2-xl", GPT2_XL, (1600, 6400))])
def test_presets_have_the_published_shapes_and_take_their_hparam_table(preset, table, down):
    with torch.device("meta"):  # the architecture without memory for its weights
        model, _ = build_random(random_config(f"random:{preset}"), device="meta")
    family = family_for(model)
    assert preset_key(model) == table
    assert tuple(family.down_weight(model, 0).shape) == down  # [out, in] in every family
    assert family.n_layers(model) == spec_n_layers(f"random:{preset}")


def test_random_from_a_config_file_is_seeded_and_runs(tmp_path):
    GPTJConfig(n_layer=2, n_embd=16, n_head=2, rotary_dim=4, n_positions=64, vocab_size=50400).save_pretrained(tmp_path)
    name = f"random:{tmp_path / 'config.json'}"
    assert spec_n_layers(name) == 2
    (a, tok), (b, _) = load_spec(name), load_spec(name)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    ids = tok("The mother tongue of Danielle Darrieux is", return_tensors="pt")["input_ids"]
    assert a(ids).logits.shape == (1, ids.shape[1], 50400) and not a.training


def test_an_unknown_random_model_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="random:<preset> .*" + ", ".join(RANDOM_PRESETS)):
        spec_n_layers("random:gpt-17")
    cfg = parse_config({"name": "t", "model": {"name": "random:gpt-17"}})
    with pytest.raises(ConfigError, match="model.name: unknown random-weight model 'random:gpt-17'"):
        preflight(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
