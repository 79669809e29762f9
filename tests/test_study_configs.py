"""The study configs (configs/study_*.toml, configs/zsre_*.toml) parse and fit the models they name."""

from __future__ import annotations

from pathlib import Path

import pytest

from locedit.edit.methods import METHODS
from locedit.edit.problems import PROBLEMS
from locedit.experiment.config import load_config
from locedit.experiment.selection import select_facts

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEPTHS = {"smollm2-135m": 30, "gemma3-270m": 18}  # num_hidden_layers; checked against the models below
STUDIES = ("study_smollm2.toml", "study_gemma3.toml")


def _configs() -> list[Path]:
    return sorted([*CONFIGS.glob("study_*.toml"), *CONFIGS.glob("zsre*.toml")])


def test_the_study_configs_exist():
    assert {p.name for p in _configs()} == {*STUDIES, "zsre_smollm2.toml"}


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
    assert smollm2.data.correctness_filter and not smollm2.data.known_only and smollm2.data.limit is None


def test_smollm2_study_has_at_least_30_known_facts():
    """The shipped SmolLM2 known-ids list (the same correctness filter) counts the facts the study edits."""
    from locedit.experiment.selection import known_case_ids

    cfg = load_config(CONFIGS / "study_smollm2.toml")
    candidates = {f.case_id for f in select_facts(cfg.data)}
    assert len(candidates) == 256 and len(candidates & known_case_ids()) == 37  # as the config's comment says


def test_zsre_config_is_rome_on_the_zsre_slice():
    cfg = load_config(CONFIGS / "zsre_smollm2.toml")
    study = load_config(CONFIGS / "study_smollm2.toml")
    assert cfg.edit.methods == ["rome"] and cfg.edit.problems == ["error-injection"]
    assert cfg.edit.layers == study.edit.layers and not cfg.data.correctness_filter
    facts = select_facts(cfg.data)
    assert facts and all(f.source == "zsre_mend" for f in facts)


@pytest.mark.embedded
@pytest.mark.parametrize("alias", sorted(DEPTHS))
def test_depths_are_the_models_depths(alias):
    from transformers import AutoConfig

    from locedit.models.loading import embedded_model_dir

    assert AutoConfig.from_pretrained(embedded_model_dir(alias)).num_hidden_layers == DEPTHS[alias]
