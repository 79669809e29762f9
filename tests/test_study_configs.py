"""The study configs (configs/study_*.toml, configs/zsre_*.toml) parse and fit the models they name."""

from __future__ import annotations

from pathlib import Path

import pytest

from locedit.edit.methods import METHODS
from locedit.edit.problems import PROBLEMS
from locedit.data.known import load_known_ids
from locedit.experiment.config import ConfigError, load_config
from locedit.experiment.selection import select_facts

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEPTHS = {"smollm2-135m": 30, "gemma3-270m": 18}  # num_hidden_layers; checked against the models below
STUDIES = ("study_smollm2.toml", "study_gemma3.toml")


def _configs() -> list[Path]:
    return sorted([*CONFIGS.glob("study_*.toml"), *CONFIGS.glob("zsre*.toml")])


def test_the_study_configs_exist():
    assert {p.name for p in _configs()} == {*STUDIES, "zsre_gemma3.toml"}


@pytest.mark.parametrize("path", _configs(), ids=lambda p: p.name)
def test_config_parses_and_its_layers_fit_the_model(path):
    cfg = load_config(path)
    depth = DEPTHS[cfg.model.name]
    layers = cfg.edit.layers
    assert len(layers) >= 5 and all(0 <= layer < depth for layer in layers)
    assert min(layers) == 0 and max(layers) == depth - 1  # spread over the whole depth
    assert 5 in cfg.localize.windows and cfg.localize.kinds == ["mlp"]


@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_every_condition_with_both_windows_and_zeroing(name):
    cfg = load_config(CONFIGS / name)
    assert set(cfg.edit.methods) == {m.name for m in METHODS.values()} and len(cfg.edit.methods) == 4
    assert set(cfg.edit.problems) == {p.name for p in PROBLEMS.values()} and len(cfg.edit.problems) == 5
    assert cfg.localize.windows == [5, 10] and cfg.localize.zeroing and cfg.localize.zeroing_window == 5
    assert not cfg.edit.essence  # stated as a deviation in the config's comment


def test_both_studies_select_facts_by_the_same_rule():
    smollm2, gemma3 = (load_config(CONFIGS / name) for name in STUDIES)
    assert smollm2.data == gemma3.data
    assert smollm2.data.correctness_filter and smollm2.data.known_only and smollm2.data.limit == 30


@pytest.mark.parametrize("name", STUDIES)
def test_study_edits_the_first_30_facts_its_model_knows(name):
    """The rule of the configs' comments: the first 30 case ids of the model's own shipped known-ids list."""
    cfg = load_config(CONFIGS / name)
    ids = [f.case_id for f in select_facts(cfg.data, cfg.model.name)]
    assert ids == sorted(load_known_ids(model_name=cfg.model.name)["case_ids"])[:30]


def test_known_only_reads_the_configured_models_list():
    data = load_config(CONFIGS / STUDIES[0]).data
    smollm2, gemma3 = (set(load_known_ids(model_name=m)["case_ids"]) for m in DEPTHS)
    assert smollm2 != gemma3  # two models, two lists
    for model, known in (("smollm2-135m", smollm2), ("gemma3-270m", gemma3)):
        assert {f.case_id for f in select_facts(data, model)} <= known
    with pytest.raises(ConfigError, match="no known-ids list ships for model 'tiny:llama'.*known_only = false"):
        select_facts(data, "tiny:llama")


def test_zsre_config_is_rome_on_the_zsre_slice():
    cfg = load_config(CONFIGS / "zsre_gemma3.toml")
    study = load_config(CONFIGS / "study_gemma3.toml")
    assert cfg.edit.methods == ["rome"] and cfg.edit.problems == ["error-injection"]
    assert cfg.edit.layers == study.edit.layers and not cfg.data.correctness_filter
    assert cfg.data.erasure_threshold == 0.02  # the paper's filter, no deviation
    facts = select_facts(cfg.data)
    assert facts and all(f.source == "zsre_mend" for f in facts)


@pytest.mark.embedded
@pytest.mark.parametrize("alias", sorted(DEPTHS))
def test_depths_are_the_models_depths(alias):
    from transformers import AutoConfig

    from locedit.models.loading import embedded_model_dir

    assert AutoConfig.from_pretrained(embedded_model_dir(alias)).num_hidden_layers == DEPTHS[alias]
