"""``locedit data inspect | known | download`` through the real typer app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from locedit.cli.main import app
from locedit.data import Fact
from locedit.data.known import load_known_ids

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["data", *args])


def test_inspect_counterfact_folder(shared_data):
    res = invoke("inspect", str(shared_data), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["format"] == "counterfact_mend" and out["n_loaded"] == 21_919 and out["n_skipped"] == 0
    assert out["example"]["subject"] == "Danielle Darrieux"
    text = invoke("inspect", *(str(shared_data / f"counterfact_mend_{s}.json") for s in ("edit", "train", "val")))
    assert text.exit_code == 0 and "loaded: 21919" in text.stdout and "format: counterfact_mend" in text.stdout


def test_inspect_lenient_reports_skips(tmp_path):
    good = Fact(1, "Ada Lovelace", "Ada Lovelace was born in", "London").to_dict()
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([good, dict(good, case_id=2, subject="Bob"), dict(good, case_id=3, target_true="")]))
    res = invoke("inspect", str(path), "--lenient", "--json")
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert (out["n_records"], out["n_loaded"]) == (3, 1)
    assert out["skipped"] == {"subject not in prompt": 1, "empty target": 1}
    strict = invoke("inspect", str(path))
    assert strict.exit_code == 2
    assert "record 1: field 'subject': subject not in prompt" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1 and "Traceback" not in strict.output


@pytest.mark.parametrize("content, message", [
    ("{oops", "not valid JSON"), ('[{"question": 1}]', "unknown dataset format"), ("[]", "holds no records")])
def test_bad_input_is_one_line_exit_2(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    res = invoke("inspect", str(tmp_path / "bad.json"))
    assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    missing = invoke("inspect", str(tmp_path / "missing.json"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_download_offline_is_one_line(tmp_path, monkeypatch):
    from locedit.data import download as dl

    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(dl.REMOTE, "nowhere", dl.RemoteDataset("nowhere", "https://locedit.invalid/x.json", "x.json"))
    res = invoke("download", "nowhere")
    assert res.exit_code == 2 and "LOCEDIT_DATA_DIR" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_known_on_a_saved_tiny_model_resumes_from_cache(tiny_llama, tmp_path):
    model, tok = tiny_llama
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    cache, known = tmp_path / "verdicts.jsonl", tmp_path / "known.json"
    args = ("known", "--model", str(tmp_path / "tiny"), "--limit", "5", "--batch-size", "2", "--cache", str(cache),
            "--save-known", str(known), "--json")
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert out["n_candidates"] == 5 and out["dataset"] == "demo"
    assert out["known_and_erasure"] <= out["known_compat"] <= 5
    assert len(cache.read_text().splitlines()) == 5
    saved = load_known_ids(known)
    assert saved["n_candidates"] == 5 and len(saved["case_ids"]) == out["known_compat"]
    assert set(saved["erasure_case_ids"]) <= set(saved["case_ids"])
    assert len(saved["erasure_case_ids"]) == out["known_and_erasure"]
    second = invoke(*args)
    assert json.loads(second.stdout)["known_compat"] == out["known_compat"]
    assert len(cache.read_text().splitlines()) == 5  # nothing recomputed


@pytest.mark.embedded
def test_known_on_embedded_demo_facts():
    res = invoke("known", "--limit", "6")
    assert res.exit_code == 0, res.output
    assert "known (correctness, compat): 6 (100.0%)" in res.stdout
