"""The CUDA paths give the CPU's results (float32, up to float rounding). Skipped without a GPU: CI has none,
so these run on a GPU machine (``pytest tests/test_cuda.py``); BENCHMARKS.md records when they last passed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locedit.data.fact import Fact
from locedit.data.loaders import load_demo_facts
from locedit.experiment import api
from locedit.experiment.config import parse_config
from locedit.experiment.store import read_frames
from locedit.localize.causal_trace import trace
from locedit.models import tiny
from locedit.models.specs import load_spec
from locedit.study.session import edit_and_evaluate_many

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SCORES = ("rewrite_score", "paraphrase_score", "neighborhood_score")


def _pair(family: str):
    """The same tiny model twice: on the CPU and on the GPU."""
    (cpu, tok), (gpu, _) = tiny(family), tiny(family)
    return cpu, gpu.to("cuda"), tok


@pytest.mark.parametrize("family", ["llama", "gemma3", "gptj"])
def test_tracing_on_cuda_equals_the_cpu(family):
    cpu, gpu, tok = _pair(family)
    fact = load_demo_facts()[0]
    a = trace(cpu, tok, fact, kinds=["mlp", "attn"], windows=[1, 3], samples=3)
    b = trace(gpu, tok, fact, kinds=["mlp", "attn"], windows=[1, 3], samples=3)
    assert b.p_clean == pytest.approx(a.p_clean, rel=1e-4) and b.p_noise == pytest.approx(a.p_noise, rel=1e-4)
    for kind in ("mlp", "attn"):
        np.testing.assert_allclose(b.full_grid(kind, 3), a.full_grid(kind, 3), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("method, problem", [("rome", "error-injection"), ("memit", "tracing-reversal"),
                                             ("ft-1", "fact-forcing"), ("ft-5", "fact-erasure")])
def test_batched_edits_on_cuda_equal_the_cpu(method, problem, corpus_file):
    cpu, gpu, tok = _pair("llama")
    facts = load_demo_facts()[:3]
    hp = ({"v_num_grad_steps": 5, "mom2_corpus": str(corpus_file), "mom2_n_tokens": 1500}
          if method in ("rome", "memit") else {"num_steps": 5})
    a = edit_and_evaluate_many(cpu, tok, facts, method, 2, problem, hp, essence=False)
    b = edit_and_evaluate_many(gpu, tok, facts, method, 2, problem, hp, essence=False)
    for x, y in zip(a, b):
        assert not isinstance(x, Exception) and not isinstance(y, Exception), (x, y)
        assert y.weights_restored
        for col in SCORES:
            assert getattr(y, col) == pytest.approx(getattr(x, col), abs=1e-4), col


def test_a_random_model_is_built_on_the_gpu(tmp_path):
    from transformers import GPTJConfig

    GPTJConfig(n_layer=2, n_embd=64, n_head=4, rotary_dim=8, vocab_size=50400).save_pretrained(tmp_path)
    model, _ = load_spec(f"random:{tmp_path / 'config.json'}", device="cuda", dtype="bfloat16")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_a_run_on_cuda_writes_the_cpu_results(tmp_path):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in (
        Fact(0, "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English"),
        Fact(1, "Toko Yasuda", "Toko Yasuda plays the instrument", "guitar", "piano"))]))
    tables = {}
    for device in ("cpu", "cuda"):
        cfg = parse_config({
            "name": "cuda", "model": {"name": "tiny:llama", "device": device},
            "data": {"source": str(facts), "correctness_filter": False},
            "localize": {"windows": [3], "samples": 2},
            "edit": {"methods": ["ft-1", "rome"], "problems": ["error-injection"], "layers": [1, 4],
                     "essence": False, "hparams": {"ft-1": {"num_steps": 5}, "rome": {"v_num_grad_steps": 5}}},
        })
        result = api.run(cfg, tmp_path / device)
        assert result.tracing.failed == result.editing.failed == 0
        tables[device] = read_frames(tmp_path / device)["edits"].sort_values(["method", "layer", "case_id"])
    a, b = tables["cpu"], tables["cuda"]
    assert len(a) == len(b) == 8
    for col in SCORES:
        np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float), atol=1e-4)
