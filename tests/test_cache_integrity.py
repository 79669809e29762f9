"""Every on-disk cache is checked on load: a truncated or corrupted file is reported (naming it) and rebuilt
to the same value, never silently used."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from locedit.edit.stats import SecondMoments
from locedit.edit.templates import template_groups
from locedit.evaluate.essence import essence_texts
from locedit.files import FOLDER_RECORD, check_folder_record, sha256_of_file, verify_checked
from locedit.localize.noise import noise_level
from locedit.models import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_last_byte(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x20]))


DAMAGES = {"truncated": truncate, "corrupted": flip_last_byte}


@pytest.fixture()
def cache(tmp_path, monkeypatch, tiny_llama) -> Path:
    """A fresh cache root (the tiny model is built first: its tokenizer lives in the real cache)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(root))
    return root


def only_file(folder: Path, pattern: str) -> Path:
    files = sorted(folder.rglob(pattern))
    assert len(files) == 1, files
    return files[0]


def assert_rebuilt(caplog, path: Path) -> None:
    """The damaged file was reported by name and written again, complete (it passes its check)."""
    assert f"{path}" in caplog.text and "rebuilding" in caplog.text
    if (path.parent / FOLDER_RECORD).exists():
        check_folder_record(path.parent)
    else:
        verify_checked(path)


@pytest.mark.parametrize("damage", DAMAGES)
def test_key_statistics(damage, cache, tmp_path, tiny_llama, caplog):
    model, tok = tiny_llama
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"paragraph {i} about rivers, cities and music." * (i + 2) for i in range(8)))
    built = SecondMoments(model, tok, corpus, 300)
    moment, inverse = built.moment(1).clone(), built.inverse(1).clone()
    for kind in ("moment", "inv32"):
        DAMAGES[damage](built.path(1, kind))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="locedit.files"):
        again = SecondMoments(model, tok, corpus, 300)  # fresh memory: reads the damaged files
        assert torch.equal(again.moment(1), moment) and torch.equal(again.inverse(1), inverse)
    for kind in ("moment", "inv32"):
        assert_rebuilt(caplog, built.path(1, kind))
    assert torch.equal(SecondMoments(model, tok, corpus, 300).moment(1), moment)  # the rebuilt file reads back


@pytest.mark.parametrize("damage", DAMAGES)
def test_context_templates(damage, cache, tiny_llama, caplog):
    model, tok = tiny_llama
    groups = template_groups(model, tok, "memit")
    path = only_file(cache / "templates", "*.json")
    DAMAGES[damage](path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="locedit.files"):
        assert template_groups(model, tok, "memit") == groups
    assert_rebuilt(caplog, path)


@pytest.mark.parametrize("damage", DAMAGES)
def test_essence_texts(damage, cache, tiny_llama, caplog):
    model, tok = tiny_llama
    texts = essence_texts(model, tok, "Danielle Darrieux", length=16)
    path = only_file(cache / "essence", "*.json")
    DAMAGES[damage](path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="locedit.files"):
        assert essence_texts(model, tok, "Danielle Darrieux", length=16) == texts
    assert_rebuilt(caplog, path)


@pytest.mark.shared_data
@pytest.mark.parametrize("damage", DAMAGES)
def test_noise_level(damage, cache, shared_data, monkeypatch, tiny_llama, caplog):
    monkeypatch.setenv("LOCEDIT_DATA_DIR", str(shared_data))
    model, tok = tiny_llama
    sigma = noise_level(model, tok)
    path = only_file(cache / "noise", "*.json")
    DAMAGES[damage](path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="locedit.files"):
        assert noise_level(model, tok) == sigma
    assert_rebuilt(caplog, path)


def test_tokenizer_folder(cache, caplog):
    tok = tiny("llama")[1]
    path = only_file(cache / "tokenizers", "tokenizer.json")
    truncate(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="locedit.files"):
        again = tiny("llama")[1]
    assert_rebuilt(caplog, path)
    text = "The mother tongue of Danielle Darrieux is"
    assert again(text)["input_ids"] == tok(text)["input_ids"] and len(again) == len(tok)


@pytest.mark.embedded
def test_dequantized_embedded_model(cache, caplog):
    from locedit.models.loading import embedded_model_dir

    folder = embedded_model_dir()
    weights = folder / "model.safetensors"
    original = sha256_of_file(weights)
    flip_last_byte(weights)  # the same size: only the recorded hash can tell (each conversion takes a minute)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="locedit.files"):
        assert embedded_model_dir() == folder
    assert_rebuilt(caplog, weights)
    assert sha256_of_file(weights) == original  # converted again, byte for byte
