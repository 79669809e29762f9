"""Shared fixtures: tiny random models of every family, the real embedded model, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from locedit.models import TINY_FAMILIES, load_model, tiny
from locedit.paths import data_dir


@pytest.fixture(scope="session", params=TINY_FAMILIES)
def tiny_model(request):
    """(model, tokenizer) for each tiny random-weight family."""
    return tiny(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny("llama")


@pytest.fixture(scope="session")
def tiny_gpt2():
    return tiny("gpt2")


@pytest.fixture(scope="session")
def embedded():
    """The real SmolLM2-135M (dequantized once, then read from the safetensors cache)."""
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data or $LOCEDIT_DATA_DIR; skipped outside CI when absent, an error inside CI."""
    path = data_dir()
    if path is None or not (path / "counterfact_mend_edit.json").exists():
        if os.environ.get("CI"):
            pytest.fail("shared data not found in CI: set LOCEDIT_DATA_DIR to the folder with counterfact_mend_*.json")
        pytest.skip("shared data not found: set LOCEDIT_DATA_DIR to the folder with counterfact_mend_*.json")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one thread than on two busy cores; restores the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """A small random-word text corpus for key statistics of tiny models (``mom2_corpus``)."""
    g = torch.Generator().manual_seed(5)
    words = "the of and in river city painter language music history was is a to by with".split()
    paras = [" ".join(words[i] for i in torch.randint(len(words), (40 + 10 * j,), generator=g).tolist()) + "."
             for j in range(30)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(paras), encoding="utf-8")
    return path
