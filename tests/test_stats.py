"""Key statistics: the one-pass multi-layer computation against a slow per-layer oracle, caching, corpus errors, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from locedit.edit import stats as stats_mod
from locedit.edit.corpus import CorpusError, local_corpus, resolve_corpus
from locedit.models.fingerprint import model_fingerprint
from locedit.edit.stats import SecondMoments, StatsUnderNoiseError, second_moments
from locedit.models import capture, family_for, tiny
from locedit.models.noise import SubjectNoise, noised_subject
from locedit.models.tokens import encode

WORDS = ("river mountain city language painter music history science football election harbour violin "
         "the of and in to a is was for on by with as at from").split()


@pytest.fixture(scope="module")
def other_llama():
    """A second tiny Llama with different weights (built before the cache is redirected)."""
    return tiny("llama", seed=1)[0]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch, tiny_llama, tiny_gpt2, other_llama):
    """Statistics go to a fresh cache (models are built first: their tokenizer lives in the real cache)."""
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path / "cache"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def corpus_file(tmp_path):
    """Twelve seeded pseudo-text paragraphs of different lengths."""
    g = torch.Generator().manual_seed(3)
    paras = []
    for i in range(12):
        n = 20 + 15 * i
        idx = torch.randint(len(WORDS), (n,), generator=g).tolist()
        paras.append(" ".join(WORDS[j] for j in idx) + ".")
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(paras), encoding="utf-8")
    return path


def oracle_moment(model, tok, corpus_path, layer: int, n_tokens: int, max_doc: int) -> torch.Tensor:
    """Obviously correct: one full forward per document, every key collected, KᵀK / N."""
    corpus = local_corpus(corpus_path)
    key = family_for(model).site("mlp_down_input", layer)
    keys, total = [], 0
    for doc in corpus.documents():
        ids = encode(tok, doc)[: min(max_doc, n_tokens - total)]
        if not ids:
            continue
        with capture(model, [key]) as got, torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        keys.append(got[key][0].double())
        total += len(ids)
        if total >= n_tokens:
            break
    k = torch.cat(keys)
    assert k.shape[0] == n_tokens
    return (k.T @ k / n_tokens).float()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_one_pass_matches_per_layer_oracle(family, corpus_file, tiny_llama, tiny_gpt2):
    model, tok = {"llama": tiny_llama, "gpt2": tiny_gpt2}[family]
    n_tokens, max_doc = 700, 90
    got = second_moments(model, tok, [1, 4], corpus=corpus_file, n_tokens=n_tokens, max_doc_tokens=max_doc,
                         batch_tokens=300)
    for layer in (1, 4):
        want = oracle_moment(model, tok, corpus_file, layer, n_tokens, max_doc)
        assert torch.allclose(got[layer], want, rtol=1e-4, atol=1e-6), (got[layer] - want).abs().max()


def test_cache_hit_returns_identical_tensors_without_recomputing(corpus_file, monkeypatch, tiny_llama):
    model, tok = tiny_llama
    first = SecondMoments(model, tok, corpus_file, 400)
    first.prefetch([0, 2, 3])
    c2, inv = first.moment(2), first.inverse(2, torch.float32)
    assert first.path(2).exists() and first.path(2, "inv32").exists()

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(stats_mod, "accumulate_second_moments", boom)
    again = SecondMoments(model, tok, corpus_file, 400)  # fresh in-memory state: reads the disk cache
    assert again.cached_layers([0, 2, 3, 5]) == [0, 2, 3]
    assert torch.equal(again.moment(2), c2)
    assert torch.equal(again.inverse(2, torch.float32), inv)
    eye = torch.eye(c2.shape[0], dtype=torch.float64)
    assert torch.allclose(again.inverse(2, torch.float64) @ c2.double(), eye, atol=1e-6)


def test_cache_key_separates_token_counts_corpora_and_models(corpus_file, tmp_path, tiny_llama, other_llama):
    model, tok = tiny_llama
    a = SecondMoments(model, tok, corpus_file, 400)
    b = SecondMoments(model, tok, corpus_file, 500)
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text() + "\n\nmore text here.", encoding="utf-8")
    c = SecondMoments(model, tok, other, 400)
    d = SecondMoments(other_llama, tok, corpus_file, 400)
    assert len({a.path(1), b.path(1), c.path(1), d.path(1)}) == 4
    a.prefetch([1])
    b.prefetch([1])
    assert not torch.equal(a.moment(1), b.moment(1))
    assert model_fingerprint(model) != model_fingerprint(other_llama)


def test_refuses_under_fact_forcing_noise(corpus_file, tiny_llama):
    model, tok = tiny_llama
    store = SecondMoments(model, tok, corpus_file, 300)
    with noised_subject(model, SubjectNoise(0.1, default_span=(0, 1))):
        with pytest.raises(StatsUnderNoiseError):
            store.prefetch([1])
    store.prefetch([1])  # fine once the hook is gone


def test_corpus_errors_are_one_line(tmp_path, monkeypatch, corpus_file, tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(CorpusError, match="--corpus"):
        resolve_corpus(tmp_path / "missing.txt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusError, match="--corpus PATH"):
        resolve_corpus("wikipedia:20200501.en")
    with pytest.raises(ValueError, match="fewer than"):
        SecondMoments(model, tok, corpus_file, 10**6).prefetch([0])
    with pytest.raises(ValueError, match="layers"):
        SecondMoments(model, tok, corpus_file, 300).prefetch([99])


def test_default_corpus_is_the_shared_wikitext(shared_data):
    corpus = resolve_corpus(None)
    assert "wikitext103_train_prefix" in corpus.description and len(corpus.docs) > 200
    assert "@-@" not in next(corpus.documents())


def test_cli_stats_json(tmp_path, corpus_file, tiny_gpt2):
    from locedit.cli.main import app

    model, tok = tiny_gpt2
    folder = tmp_path / "tiny-gpt2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    args = ["stats", "--model", str(folder), "--layers", "0,2-3", "--corpus", str(corpus_file), "--tokens", "300", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["layer"] for r in out["layers"]] == [0, 2, 3] and out["info"]["n_tokens"] == 300
    assert not any(r["cached"] for r in out["layers"])
    again = json.loads(CliRunner().invoke(app, args).stdout)
    assert all(r["cached"] for r in again["layers"])
    assert [r["trace"] for r in again["layers"]] == [r["trace"] for r in out["layers"]]
    bad = CliRunner().invoke(app, args[:3] + ["--layers", "0,x"] + args[5:])
    assert bad.exit_code == 2 and "--layers" in bad.output
