"""Second moments of MLP keys, C = E[k kᵀ], for ROME and MEMIT (docs/algorithms.md#key-statistics, #caches).

k is the input to the MLP down projection at every non-padding token of a text corpus. All requested
layers are accumulated in ONE pass over the corpus, each forward stopping right before the down
projection of the last needed layer; sums are float32. Documents are shuffled (seed 1), truncated to
``max_doc_tokens`` (default: the model context, at most 1,024 so a small budget still spans many
articles) and taken until exactly ``n_tokens`` tokens are seen.

Results are cached on disk per (model fingerprint, corpus content hash, token count, truncation,
layer) under ``cache_dir("stats")``, with the float32 inverse (ROME) and float64 inverse (MEMIT's
Sherman–Morrison update) cached beside them; the files carry a checksum, and a damaged one is reported
and recomputed. Statistics are never computed under a Fact Forcing noise
hook (docs/algorithms.md#key-statistics): that raises.
"""

from __future__ import annotations

import io
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from locedit.edit.corpus import Corpus, resolve_corpus
from locedit.models.fingerprint import model_fingerprint
from locedit.files import read_checked, write_checked
from locedit.models.families import family_for
from locedit.models.interventions import Edit, intervene, run_until_stopped
from locedit.models.noise import noise_installed
from locedit.models.scoring import pad_id_of, pad_right
from locedit.models.tokens import context_length, encode
from locedit.paths import cache_dir

DEFAULT_N_TOKENS = 20_000
MAX_DOC_TOKENS = 1024
BATCH_TOKENS = 4096


@dataclass(frozen=True)
class StatsInfo:
    """What the statistics were computed from; results store ``asdict(info)``."""

    model: str
    corpus: str
    corpus_id: str
    n_tokens: int
    max_doc_tokens: int
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)


class StatsUnderNoiseError(RuntimeError):
    """Statistics were requested while a Fact Forcing noise hook is installed."""


def _check_layers(model: nn.Module, layers: Iterable[int]) -> list[int]:
    n = family_for(model).n_layers(model)
    out = sorted(set(int(layer) for layer in layers))
    bad = [layer for layer in out if not 0 <= layer < n]
    if bad or not out:
        raise ValueError(f"layers {bad or '(none)'} invalid for a model with {n} layers; use 0..{n - 1}")
    return out


def _token_docs(tok: PreTrainedTokenizerBase, corpus: Corpus, n_tokens: int, max_doc: int) -> list[list[int]]:
    docs, total = [], 0
    for text in corpus.documents():
        ids = encode(tok, text)[: min(max_doc, n_tokens - total)]
        if ids:
            docs.append(ids)
            total += len(ids)
        if total >= n_tokens:
            return docs
    raise ValueError(f"corpus {corpus.description} has only {total} tokens, fewer than the {n_tokens} requested; "
                     "lower --tokens or pass a larger --corpus")


def _batches(docs: list[list[int]], batch_tokens: int) -> list[list[list[int]]]:
    """Length-sorted batches whose padded size stays within ``batch_tokens`` (one long document may exceed it)."""
    out: list[list[list[int]]] = []
    for ids in sorted(docs, key=len, reverse=True):
        if out and (len(out[-1]) + 1) * len(out[-1][0]) <= batch_tokens:
            out[-1].append(ids)
        else:
            out.append([ids])
    return out


@torch.no_grad()
def accumulate_second_moments(model: nn.Module, tok: PreTrainedTokenizerBase, layers: Sequence[int], corpus: Corpus,
                              n_tokens: int, *, max_doc_tokens: int, batch_tokens: int = BATCH_TOKENS,
                              progress: bool = False) -> dict[int, torch.Tensor]:
    """Uncached one-pass computation: {layer: (1/N) Σ k kᵀ} in float32 over exactly ``n_tokens`` tokens."""
    if noise_installed(model):
        raise StatsUnderNoiseError("statistics must not be computed under Fact Forcing noise; compute them before the edit")
    fam = family_for(model)
    layers = _check_layers(model, layers)
    docs = _token_docs(tok, corpus, n_tokens, max_doc_tokens)
    m = fam.down_weight(model, layers[0]).shape[1]
    sums = {layer: torch.zeros(m, m, dtype=torch.float32, device=model.device) for layer in layers}
    state: dict[str, torch.Tensor] = {}

    def accumulate(layer: int) -> Edit:
        def edit(key: torch.Tensor) -> None:
            keys = key[state["mask"]].float()
            sums[layer].addmm_(keys.T, keys)
        return edit

    sites = {fam.site("mlp_down_input", layer): accumulate(layer) for layer in layers}
    bar = tqdm(total=n_tokens, unit="tok", desc="key statistics", disable=not progress)
    with intervene(model, sites, stop_after=fam.site("mlp_down_input", layers[-1])):
        for batch in _batches(docs, batch_tokens):
            ids, mask = pad_right(batch, pad_id_of(tok), model.device)
            state["mask"] = mask.bool()
            run_until_stopped(model, input_ids=ids, attention_mask=mask, use_cache=False)
            bar.update(int(mask.sum()))
    bar.close()
    return {layer: s / n_tokens for layer, s in sums.items()}


def _save(obj: dict, path: Path) -> None:
    """torch.save ``obj`` into a checksummed cache file (atomically)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_checked(path, buffer.getvalue())


def _load(path: Path) -> torch.Tensor | None:
    """The cached tensor at ``path``; None when missing or when it failed its check (then it is rebuilt)."""
    payload = read_checked(path)
    if payload is None:
        return None
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)["tensor"]


class SecondMoments:
    """Per-layer key statistics of one model on one corpus: computed once, cached on disk and in memory.

    ``prefetch(layers)`` computes every missing layer in one pass; ``moment``/``inverse`` load or compute.
    """

    def __init__(self, model: nn.Module, tok: PreTrainedTokenizerBase, corpus: str | Path | Corpus | None = None,
                 n_tokens: int = DEFAULT_N_TOKENS, *, max_doc_tokens: int | None = None,
                 batch_tokens: int = BATCH_TOKENS, progress: bool = False):
        if n_tokens < 1:
            raise ValueError(f"n_tokens must be positive, got {n_tokens}")
        self.model, self.tok = model, tok
        self.corpus = corpus if isinstance(corpus, Corpus) else resolve_corpus(corpus)
        self.batch_tokens, self.progress = batch_tokens, progress
        self.info = StatsInfo(model=model_fingerprint(model), corpus=self.corpus.description,
                              corpus_id=self.corpus.identity, n_tokens=int(n_tokens),
                              max_doc_tokens=int(max_doc_tokens or min(context_length(model) or MAX_DOC_TOKENS, MAX_DOC_TOKENS)))
        self._memory: dict[tuple[int, str], torch.Tensor] = {}

    def path(self, layer: int, kind: str = "moment") -> Path:
        i = self.info
        return cache_dir("stats", i.model) / f"{i.corpus_id}-n{i.n_tokens}-d{i.max_doc_tokens}-L{layer}-{kind}.pt"

    def cached_layers(self, layers: Iterable[int]) -> list[int]:
        return [layer for layer in layers if (layer, "moment") in self._memory or self.path(layer).exists()]

    def prefetch(self, layers: Iterable[int]) -> None:
        """Compute (one pass) and cache every requested layer that is not cached yet."""
        layers = _check_layers(self.model, layers)
        missing = [layer for layer in layers if layer not in self.cached_layers([layer])]
        if not missing:
            return
        for layer, c in self._accumulate(missing).items():
            _save({"tensor": c.cpu(), "info": self.info.to_dict(), "layer": layer}, self.path(layer))
            self._memory[(layer, "moment")] = c

    def _accumulate(self, layers: list[int]) -> dict[int, torch.Tensor]:
        return accumulate_second_moments(self.model, self.tok, layers, self.corpus, self.info.n_tokens,
                                         max_doc_tokens=self.info.max_doc_tokens, batch_tokens=self.batch_tokens,
                                         progress=self.progress)

    def _get(self, layer: int, kind: str, make) -> torch.Tensor:
        key = (layer, kind)
        if key not in self._memory:
            path = self.path(layer, kind)
            tensor = _load(path)
            if tensor is None:
                tensor = make().cpu()
                _save({"tensor": tensor, "info": self.info.to_dict(), "layer": layer}, path)
            self._memory[key] = tensor.to(self.model.device)
        return self._memory[key]

    def moment(self, layer: int) -> torch.Tensor:
        """C = E[k kᵀ] at ``layer`` (float32, [d_mlp, d_mlp], on the model's device)."""
        if (layer, "moment") not in self._memory and not self.path(layer).exists():
            self.prefetch([layer])
        return self._get(layer, "moment", lambda: self._accumulate([layer])[layer])

    def inverse(self, layer: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """C⁻¹ in float32 (ROME) or float64 (MEMIT), cached."""
        kind = {torch.float32: "inv32", torch.float64: "inv64"}.get(dtype)
        if kind is None:
            raise ValueError(f"inverse dtype must be float32 or float64, got {dtype}")
        return self._get(layer, kind, lambda: torch.linalg.inv(self.moment(layer).to(dtype)))


_DEFAULTS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, SecondMoments]]" = weakref.WeakKeyDictionary()


def moments_for(model: nn.Module, tok: PreTrainedTokenizerBase, corpus: str | Path | None = None,
                n_tokens: int = DEFAULT_N_TOKENS, **kw) -> SecondMoments:
    """The :class:`SecondMoments` of ``model`` on ``corpus``, shared across calls while the model lives."""
    per_model = _DEFAULTS.setdefault(model, {})
    key = (model_fingerprint(model), str(corpus), int(n_tokens), tuple(sorted(kw.items())))
    if key not in per_model:
        per_model[key] = SecondMoments(model, tok, corpus, n_tokens, **kw)
    return per_model[key]


def second_moments(model: nn.Module, tok: PreTrainedTokenizerBase, layers: Sequence[int],
                   corpus: str | Path | None = None, n_tokens: int = DEFAULT_N_TOKENS, *,
                   progress: bool = False, **kw) -> dict[int, torch.Tensor]:
    """{layer: C} for every layer, computed in one pass where not cached."""
    store = moments_for(model, tok, corpus, n_tokens, **kw)
    store.progress = progress
    store.prefetch(layers)
    return {layer: store.moment(layer) for layer in _check_layers(model, layers)}
