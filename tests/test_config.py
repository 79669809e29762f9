"""Experiment configs: parsing, hashing, TOML round trip, shipped configs, one-line errors before work."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from locedit.edit.methods import METHODS
from locedit.edit.problems import PROBLEMS, get_problem
from locedit.experiment.config import ConfigError, ExperimentConfig, dump_toml, load_config, parse_config
from locedit.experiment.demo import demo_config
from locedit.experiment.manifest import RunDirError, check_run_dir, new_manifest, write_manifest
from locedit.experiment.runner import check_layers, preflight
from locedit.experiment.worker import hparam_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _cfg(**sections) -> ExperimentConfig:
    return parse_config({"name": "t", "model": {"name": "tiny:llama"}, **sections})


def test_hash_is_stable_and_sensitive():
    a, b = _cfg(), _cfg()
    assert a.hash() == b.hash() and len(a.hash()) == 64
    assert _cfg(edit={"layers": [1]}).hash() != a.hash()
    assert _cfg(seeds={"editing": 1}).hash() != a.hash()
    # explicit defaults hash like omitted ones: the hash is over the resolved config
    assert _cfg(localize={"windows": [5]}).hash() == a.hash()


def test_toml_round_trip_keeps_the_hash():
    cfg = _cfg(edit={"methods": ["rome", "ft-1"], "layers": [0, 3],
                     "hparams": {"rome": {"kl_factor": 1.0, "fact-forcing": {"v_lr": 0.05}}}},
               stats={"n_tokens": 1000})
    back = parse_config(tomllib.loads(dump_toml(cfg)))
    assert back == cfg and back.hash() == cfg.hash()


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_parse_and_name_known_methods(name):
    cfg = load_config(CONFIGS / name)  # parsing checks method, problem and hyperparameter names
    assert set(cfg.edit.methods) <= set(METHODS) and set(cfg.edit.problems) <= set(PROBLEMS)
    assert cfg.edit.layers == sorted(set(cfg.edit.layers))


def test_demo_config_meets_the_brief():
    cfg = demo_config()
    assert cfg.model.name == "smollm2-135m" and cfg.data.source == "demo"
    assert sorted(cfg.edit.methods) == sorted(METHODS.names()) and cfg.edit.problems == ["error-injection"]
    assert cfg.localize.enabled and cfg.analysis.analyze and cfg.analysis.report
    assert len(cfg.edit.layers) >= 5 and max(cfg.edit.layers) - min(cfg.edit.layers) >= 20
    check_layers(cfg, 30)


def test_paper_config_is_the_paper_grid():
    cfg = load_config(CONFIGS / "paper_gptj.toml")
    assert cfg.edit.layers == [0, 4, 5, 8, 12, 16, 20, 24, 27]
    assert len(cfg.edit.methods) == 4 and len(cfg.edit.problems) == 5
    assert cfg.data.first_n == 2000 and cfg.localize.noise == 0.094


@pytest.mark.parametrize("sections, match", [
    ({"edit": {"methods": ["romeo"]}}, "edit.methods: unknown editing method 'romeo'; use one of ft-1, "),
    ({"edit": {"problems": ["fact-forging"]}}, "edit.problems: unknown editing problem 'fact-forging'"),
    ({"edit": {"hparams": {"rome": {"v_lrr": 0.1}}}}, "edit.hparams: unknown rome hyperparameter"),
    ({"edit": {"hparams": {"rome": {"fact-forgery": {"v_lr": 0.1}}}}}, "not a problem"),
    ({"edit": {"hparams": {"rome": {"ff": {"v_lrr": 0.1}}}}}, "unknown rome hyperparameter"),
    ({"edit": {"hparams": {"romeo": {"v_lr": 0.1}}}}, "unknown editing method 'romeo'"),
    ({"edit": {"problems": ["ei", "error-injection"]}}, "duplicates"),
])
def test_unknown_names_are_one_line_errors(sections, match):
    with pytest.raises(ConfigError, match=match) as err:
        _cfg(**sections)
    assert "\n" not in str(err.value) and "Value error" not in str(err.value)


def test_every_name_get_problem_accepts_is_a_valid_config_problem():
    """The problem registry is the one list: an alias that get_problem accepts is accepted by the config too
    (before, config validation kept its own list and refused "ff"), and stored by its registered name."""
    for problem in PROBLEMS.values():
        for spelling in (problem.name, problem.label, problem.label.lower(), *problem.aliases):
            assert get_problem(spelling) is problem
            cfg = _cfg(edit={"problems": [spelling], "hparams": {"FT-1": {spelling: {"num_steps": 3}}}})
            assert cfg.edit.problems == [problem.name]
            assert cfg.edit.hparams == {"ft-1": {problem.name: {"num_steps": 3}}}
            assert hparam_overrides(cfg, "ft-1", problem.name) == {"num_steps": 3}
    assert _cfg(edit={"problems": ["ff"]}).hash() == _cfg(edit={"problems": ["fact-forcing"]}).hash()


@pytest.mark.parametrize("data, match", [
    ({"bogus": 1}, "data.bogus: Extra inputs"),
    ({"first_n": 0}, "data.first_n"),
])
def test_schema_errors_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"data": data}, origin="x.toml")


def test_duplicate_and_empty_lists_are_refused():
    with pytest.raises(ConfigError, match="edit.layers: .*duplicates"):
        _cfg(edit={"layers": [1, 1]})
    with pytest.raises(ConfigError, match="edit.methods"):
        _cfg(edit={"methods": []})


def test_out_of_range_layer_and_missing_dataset_fail_in_preflight(tmp_path):
    with pytest.raises(ConfigError, match=r"edit.layers: \[6\] out of range .* 6 layers"):
        preflight(_cfg(edit={"layers": [0, 6]}), tmp_path / "run")
    with pytest.raises(ConfigError, match="does not exist"):
        preflight(_cfg(data={"source": str(tmp_path / "missing.json")}), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was started


def test_run_dir_of_another_config_is_refused(tmp_path):
    a, b = _cfg(), _cfg(edit={"layers": [2]})
    write_manifest(tmp_path, new_manifest(a, device="cpu"))
    assert check_run_dir(tmp_path, a)["config_hash"] == a.hash()
    with pytest.raises(RunDirError, match="not of this config") as err:
        preflight(b, tmp_path)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_config(bad)


def test_overrides_merge_stats_common_and_problem():
    cfg = _cfg(stats={"corpus": "/c.txt", "n_tokens": 500},
               edit={"hparams": {"rome": {"kl_factor": 1.0, "fact-forcing": {"v_lr": 0.05, "kl_factor": 0.5}}}})
    assert hparam_overrides(cfg, "rome", "error-injection") == {"mom2_corpus": "/c.txt", "mom2_n_tokens": 500,
                                                                "kl_factor": 1.0}
    assert hparam_overrides(cfg, "rome", "fact-forcing")["kl_factor"] == 0.5
    assert hparam_overrides(cfg, "ft-1", "fact-forcing") == {}
