"""The `models` and `predict` commands, run as a user would (subprocess), including bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "locedit.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_models_json_lists_families_and_aliases():
    out = run_cli("models", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"gpt2", "gptj", "gpt_neox", "llama", "qwen2"} <= set(data["families"])
    assert "smollm2-135m" in data["aliases"]


def test_unknown_model_is_one_line_error():
    out = run_cli("predict", "--prompt", "Hi", "--model", "no-such-model")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "unknown model" in out.stderr


@pytest.mark.embedded
def test_predict_json_on_embedded_model(embedded):
    out = run_cli("predict", "--prompt", "The mother tongue of Danielle Darrieux is", "--target", "French", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["top_k"][0]["token"] == " French"
    # the target is scored in a longer forward than the top-k one: float32 rounding differs slightly
    assert data["targets"][0]["prob"] == pytest.approx(data["top_k"][0]["prob"], rel=1e-4)
