"""The registries: lookup, aliases, errors and order; and that a new method, problem or metric is one
registered object that labels, config validation, CLI help, hyperparameters and tables pick up."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from locedit.analysis import labels
from locedit.analysis.figures import FIGURES
from locedit.analysis.regressions import regression_table
from locedit.analysis.tables import SCORE_COLUMNS, score_table
from locedit.cli.main import app
from locedit.data.fact import Fact
from locedit.edit.finetune import trained_parameters
from locedit.edit.handle import snapshot, weights_equal
from locedit.edit.methods import METHODS, Method, apply_edit, get_method, resolve_hparams
from locedit.edit.problems import PROBLEMS, Problem, ProblemContext, get_problem
from locedit.edit.request import EditRequest
from locedit.edit.result import MethodResult
from locedit.evaluate.metrics import METRICS, Metric
from locedit.experiment.config import ConfigError, parse_config
from locedit.experiment.worker import hparam_overrides, memory_skipped
from locedit.registry import Registry, lookup_key

runner = CliRunner()


@dataclass(frozen=True)
class Colour:
    name: str
    label: str
    aliases: tuple[str, ...] = ()


def test_registry_finds_by_name_label_and_alias_in_any_spelling():
    reg: Registry[Colour] = Registry("colour")
    red = reg.register(Colour("dark-red", "DR", aliases=("crimson",)))
    blue = reg.register(Colour("blue", "B"))
    assert lookup_key("Dark_Red") == "darkred"
    assert reg["dark-red"] is reg["DARK_RED"] is reg["darkred"] is reg["dr"] is reg["Crimson"] is red
    assert reg.get("b") is blue and "B" in reg and "green" not in reg and reg.find("green") is None
    assert list(reg) == ["dark-red", "blue"] and reg.names() == ("dark-red", "blue") and len(reg) == 2
    with pytest.raises(ValueError, match=r"^unknown colour 'green'; use one of dark-red, blue$"):
        reg.get("green")
    with pytest.raises(ValueError, match="clashes with the registered colour 'dark-red'"):
        reg.register(Colour("crimson", "C"))
    assert reg.unregister("DR") is red and list(reg) == ["blue"] and reg.find("crimson") is None
    reg.register(Colour("crimson", "C"))  # the alias is free again


def test_live_views_follow_registrations():
    reg: Registry[Colour] = Registry("colour")
    column = reg.column(lambda c: c.label)
    mapping = reg.mapping(lambda c: c.label, lambda c: c.name, lambda c: c.name != "blue")
    assert column == () and dict(mapping) == {}
    reg.register(Colour("red", "R"))
    reg.register(Colour("blue", "B"))
    assert column == ("R", "B") and list(column) == ["R", "B"] and column[1] == "B" and len(column) == 2
    assert dict(mapping) == {"R": "red"} and mapping.get("B") is None


def test_shipped_entries_carry_their_metadata():
    assert list(METHODS) == ["ft-1", "ft-5", "rome", "memit"]
    assert [(m.label, m.uses_stats, m.window) for m in METHODS.values()] == [
        ("FT-1", False, 1), ("FT-5", False, 5), ("ROME", True, 1), ("MEMIT", True, 5)]
    assert [(p.label, p.long_name, p.needs_noise) for p in PROBLEMS.values()] == [
        ("EI", "Error Injection", False), ("TR", "Tracing Reversal", True), ("FE", "Fact Erasure", False),
        ("FA", "Fact Amplification", False), ("FF", "Fact Forcing", True)]
    assert get_method("ROME") is METHODS["rome"] and get_problem("ff") is PROBLEMS["fact-forcing"]
    assert labels.METHODS == ("FT-1", "FT-5", "ROME", "MEMIT") and labels.PROBLEMS == ("EI", "TR", "FE", "FA", "FF")
    assert labels.OUTCOMES == ("rewrite_score", "paraphrase_score", "neighborhood_score", "overall_score",
                               "essence_score")
    assert dict(SCORE_COLUMNS) == {"rewrite_score": "rewrite", "paraphrase_score": "paraphrase",
                                   "neighborhood_score": "neighborhood", "essence_score": "essence",
                                   "overall_score": "overall", "rome_rewrite_success": "efficacy success"}
    assert dict(labels.METHOD_COLORS) == {"FT-1": "#1f77b4", "FT-5": "#ff7f0e", "ROME": "#2ca02c",
                                          "MEMIT": "#d62728"}
    assert [f.number for f in FIGURES.values()][:3] == ["1", "2", "4"]


def test_every_metric_is_an_edits_column_that_edit_scores_fills():
    from locedit.edit.problems import PreparedEdit
    from locedit.evaluate.evaluation import GROUPS, Evaluation, edit_scores
    from locedit.experiment.schema import TABLES

    assert set(METRICS) <= set(TABLES["edits"])
    fact = Fact(case_id=0, subject="S", prompt="S is", target_true="a", target_new="b",
                paraphrase_prompts=("S, as is known, is",), neighborhood_prompts=("T is",))
    prepared = PreparedEdit("error-injection", fact, EditRequest(fact.prompt, "S", "b"), "a")
    pre = Evaluation({g: (-2.0,) for g in GROUPS}, {g: (-1.0,) for g in GROUPS}, 10.0, 0.0)
    post = Evaluation({g: (-0.5,) for g in GROUPS}, {g: (-1.5,) for g in GROUPS}, 11.0, 0.0)
    row = edit_scores(prepared, pre, post)
    assert all(row[m] is not None for m in METRICS)


def test_reference_memory_skips_follow_method_and_problem_attributes():
    skipped = {(m, p) for m in METHODS for p in PROBLEMS if memory_skipped(METHODS[m], PROBLEMS[p])}
    assert skipped == {("ft-5", p) for p in PROBLEMS} | {("memit", p) for p in PROBLEMS} | {
        ("rome", "tracing-reversal")}


# -- a toy method, problem and metric, registered by a test only ------------------------------------------


@dataclass(frozen=True)
class ToyHparams:
    window: int = 1
    scale: float = 1e-3


def toy_compute(model, tok, request: EditRequest, layers: list[int], hp: ToyHparams, stats) -> MethodResult:
    """Adds ``scale`` to every down-projection weight of the edit layers."""
    return MethodResult({n: torch.full_like(p, hp.scale) for n, p in trained_parameters(model, layers).items()})


class ToyProblem(Problem):
    """Make the model say the true object, under its own name."""

    name, label, long_name, aliases = "toy-problem", "TP", "Toy Problem", ("tiny-problem",)
    target_from_noise = True

    def target(self, ctx: ProblemContext, fact: Fact) -> str:
        return fact.target_true


@pytest.fixture
def toys():
    method = METHODS.register(Method("toy-edit", toy_compute, ToyHparams, "TOY", "#000000", uses_stats=False,
                                     window=3))
    problem = PROBLEMS.register(ToyProblem())
    metric = METRICS.register(Metric("toy_score", "toy score", "toy", outcome=True))
    try:
        yield method, problem, metric
    finally:
        METHODS.unregister(method.name)
        PROBLEMS.unregister(problem.name)
        METRICS.unregister(metric.name)
    assert "toy-edit" not in METHODS and "TP" not in PROBLEMS and "toy_score" not in METRICS


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def test_toy_entries_show_up_in_cli_help(toys):
    edit_help, bench_help = _help("edit"), _help("bench", "edit")
    assert "ft-1, ft-5, rome, memit, toy-edit" in edit_help and "toy-edit" in bench_help
    assert "toy-problem" in edit_help and "TP)" in edit_help
    assert "tracing-reversal / fact-forcing / toy-problem" in edit_help  # it needs the noise level
    assert "toy-problem" in bench_help


def test_toy_entries_pass_config_validation_and_hparams(toys):
    cfg = parse_config({"model": {"name": "tiny:llama"},
                        "edit": {"methods": ["TOY", "rome"], "problems": ["tp", "ei"],
                                 "hparams": {"toy_edit": {"scale": 0.5, "tiny-problem": {"window": 1}}}}})
    assert cfg.edit.methods == ["toy-edit", "rome"] and cfg.edit.problems == ["toy-problem", "error-injection"]
    assert hparam_overrides(cfg, "toy-edit", "toy-problem") == {"scale": 0.5, "window": 1}
    with pytest.raises(ConfigError, match="unknown toy-edit hyperparameter.*scal.*valid: scale, window"):
        parse_config({"edit": {"methods": ["toy-edit"], "hparams": {"toy-edit": {"scal": 1}}}})
    hp = resolve_hparams("toy-edit", "gpt-j", "TP", {"scale": 0.25})
    assert hp == ToyHparams(window=3, scale=0.25)  # the method's window, no table entry needed
    assert memory_skipped(METHODS["toy-edit"], PROBLEMS["ei"])  # a multi-layer method


def test_toy_entries_get_labels_and_table_columns(toys):
    assert labels.METHODS[-1] == "TOY" and labels.method_label("toy_edit") == "TOY"
    assert labels.METHOD_COLORS["TOY"] == "#000000"
    assert labels.PROBLEMS[-1] == "TP" and labels.problem_label("Toy-Problem") == "TP"
    assert labels.PROBLEM_NAMES["TP"] == "Toy Problem"
    assert "toy_score" in labels.OUTCOMES and labels.OUTCOME_NAMES["toy_score"] == "toy score"
    edits = pd.DataFrame({"method": ["toy-edit", "toy-edit", "rome"], "problem": ["toy-problem"] * 3,
                          "layer": [1, 1, 1], "rewrite_score": [0.5, 0.7, 0.9], "toy_score": [0.1, 0.3, 0.5]})
    table = score_table(edits).frame
    assert list(table.columns) == ["method", "problem", "layer", "n", "rewrite", "toy"]
    assert table["method"].tolist() == ["ROME", "TOY"] and table["toy"].tolist() == pytest.approx([0.5, 0.2])
    per_edit = pd.DataFrame({"method": ["TOY"] * 8, "problem": ["TP"] * 8, "case_id": [0, 1, 2, 3] * 2,
                             "layer": [0] * 4 + [1] * 4, "effect": [0.1, 0.4, 0.2, 0.9, 0.3, 0.8, 0.5, 0.6],
                             "toy_score": [0.2, 0.5, 0.1, 0.9, 0.4, 0.7, 0.6, 0.3]})
    assert regression_table(per_edit)["outcome"].tolist() == ["toy_score"]


def test_toy_method_edits_and_restores(toys, tiny_llama):
    model, tok = tiny_llama
    before = snapshot(model)
    request = EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English")
    with apply_edit(model, tok, request, "TOY", 2, problem="tp") as handle:
        assert handle.method == "toy-edit" and handle.layers == [1, 2, 3]
        assert not weights_equal(model, before)
    assert weights_equal(model, before)
