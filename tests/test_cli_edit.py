"""`locedit edit` and `locedit bench edit`: JSON keys on the embedded model, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from locedit.cli.edit_cmd import first_word
from locedit.cli.main import app

runner = CliRunner()
EDIT = ["edit", "--prompt", "The mother tongue of Danielle Darrieux is", "--subject", "Danielle Darrieux",
        "--target-new", " English"]


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert fragment in result.output.replace("\n", " ")


@pytest.mark.parametrize("extra,fragment", [
    (["--problem", "flip"], "unknown editing problem 'flip'"),
    (["--method", "bogus"], "unknown editing method 'bogus'"),
    (["--generate", "-1"], "--generate must be >= 0"),
])
def test_bad_options_exit_2_with_one_line(extra, fragment):
    _one_line_error(runner.invoke(app, [*EDIT, *extra]), fragment)


def test_missing_prompt_exits_2():
    _one_line_error(runner.invoke(app, ["edit", "--subject", "Danielle Darrieux"]), "give --prompt and --subject")


def test_bench_rejects_bad_method():
    _one_line_error(runner.invoke(app, ["bench", "edit", "--method", "bogus"]), "unknown editing method 'bogus'")


def test_first_word():
    assert first_word(" French, and English") == "French"
    assert first_word("\n'Rock-n-roll' music") == "Rock-n-roll'"


@pytest.mark.embedded
def test_edit_json_on_the_embedded_model():
    result = runner.invoke(app, [*EDIT, "--method", "ft-1", "--layer", "12", "--no-essence", "--generate", "3",
                                 "--paraphrase", "Danielle Darrieux grew up speaking",
                                 "--neighbor", "The mother tongue of Léon Blum is", "--neighbor-target", "French",
                                 "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score", "weights_restored"):
        assert key in out
    assert out["weights_restored"] is True and out["target_true"] == "French"  # true target from the greedy continuation
    assert out["rewrite_post"] > out["rewrite_pre"]
    assert [p["kind"] for p in out["prompts"]] == ["rewrite", "paraphrase", "neighborhood"]
    assert out["generation_before"].startswith(out["prompt"])


@pytest.mark.embedded
def test_edit_layer_out_of_range_exits_2():
    _one_line_error(runner.invoke(app, [*EDIT, "--layer", "99", "--no-essence"]), "layer 99 is out of range")


def test_unknown_fact_id_exits_2():
    _one_line_error(runner.invoke(app, ["edit", "--fact-id", "999999"]), "no fact with case_id 999999")
