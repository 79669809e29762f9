"""`locedit trace` on a tiny model saved as a local folder: one fact, a dataset with a bad fact, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from locedit.cli.main import app
from locedit.localize import TraceResult

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from locedit.models import tiny

    model, tok = tiny("llama")
    path = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_trace_one_fact_json(tiny_dir, tmp_path):
    res = runner.invoke(app, ["trace", "--model", str(tiny_dir), "--prompt", "Paris is the capital of", "--subject", "Paris",
                              "--window", "3", "--samples", "2", "--noise", "0.4", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["target_source"] == "greedy" and out["p_clean"] > out["p_noise"] >= 0
    assert out["traces"][0]["window"] == 3 and len(out["traces"][0]["top_layers"]) == 3
    assert any("greedy next token" in n for n in out["notes"])
    assert (tmp_path / "trace_mlp_w3.png").exists() and (tmp_path / "trace_mlp_w3.svg").exists()
    assert TraceResult.load(tmp_path / "trace.npz").settings["samples"] == 2


def test_trace_dataset_skips_bad_facts(tiny_dir, tmp_path):
    facts = [{"case_id": 1, "subject": "Paris", "prompt": "Paris is the capital of", "target_true": "France"},
             {"case_id": 2, "subject": "Rome", "prompt": "Rome is the capital of" + " and more" * 300, "target_true": "Italy"},
             {"case_id": 3, "subject": "Rome", "prompt": "Rome is the capital of", "target_true": "Italy"}]
    data = tmp_path / "facts.json"
    data.write_text(json.dumps(facts))
    res = runner.invoke(app, ["trace", "--model", str(tiny_dir), "--dataset", str(data), "--limit", "3", "--window", "1",
                              "--samples", "1", "--noise", "0.4", "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["traced"] == 2 and out["skipped"] == 1 and "context" in out["skipped_reasons"]["2"]
    assert (tmp_path / "out" / "trace_1.npz").exists() and (tmp_path / "out" / "summary.csv").exists()


def test_trace_bad_input_is_one_line(tiny_dir, tmp_path):
    res = runner.invoke(app, ["trace", "--model", str(tiny_dir), "--prompt", "Paris is the capital of", "--subject", "Oslo",
                              "--noise", "0.4", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not found in prompt" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["trace", "--model", str(tiny_dir), "--prompt", "Paris is the capital of", "--subject", "Paris",
                              "--window", "9", "--noise", "0.4", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "window 9" in res.output
