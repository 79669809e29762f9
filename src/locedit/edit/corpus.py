"""Text corpora for MLP-key statistics (docs/algorithms.md#key-statistics): local text files, or a Hugging Face dataset
online.

The reference samples 100,000 Wikipedia documents; offline, the default is the WikiText files in the
data folder (``data_dir() / "wikitext"``), split into articles at their `` = Title = `` headings and
lightly detokenized. Documents are shuffled with a fixed seed so any token budget takes a fixed,
varied sample. A corpus names itself (``description``) and hashes its content (``identity``) so
cached statistics never mix corpora.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from locedit.models.loading import hub_reachable
from locedit.paths import data_dir

# The WikiText-2 raw test file holds the same articles as the WikiText-103 test split; skip the duplicate.
DEFAULT_FILES = ("wikitext103_train_prefix.tokens", "wikitext103_wiki.valid.tokens", "wikitext103_wiki.test.tokens")
_SUFFIXES = (".txt", ".tokens", ".raw", ".jsonl")
_HEADING = re.compile(r"^ = [^=].* = $")
_DETOK = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "), (" ; ", "; "),
          (" : ", ": "), (" 's ", "'s "), ("( ", "("), (" )", ")"))


class CorpusError(ValueError):
    """A corpus cannot be read; the message names the flag or path to use instead."""


def detokenize_wikitext(text: str) -> str:
    """Undo the most visible WikiText tokenization artefacts (``@-@``, spaces before punctuation)."""
    for a, b in _DETOK:
        text = text.replace(a, b)
    return text.strip()


def _wikitext_articles(lines: list[str]) -> list[str]:
    docs: list[list[str]] = []
    for line in lines:
        if _HEADING.match(line.rstrip("\r\n")) or not docs:
            docs.append([])
        if line.strip():
            docs[-1].append(detokenize_wikitext(line))
    return ["\n".join(d) for d in docs if d]


def _documents_of_file(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = path.read_text(encoding="utf-8").splitlines()
    if any(_HEADING.match(line) for line in lines[:200]):
        return _wikitext_articles(lines)
    paragraphs = re.split(r"\n\s*\n", "\n".join(lines))
    return [p.strip() for p in paragraphs if p.strip()]


@dataclass
class Corpus:
    """A list of documents with a description and a content hash."""

    description: str
    identity: str
    docs: list[str] = field(repr=False)

    def documents(self, seed: int = 1) -> Iterator[str]:
        """The documents in a seeded random order."""
        order = list(range(len(self.docs)))
        random.Random(seed).shuffle(order)
        return (self.docs[i] for i in order)


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        preferred = [path / f for f in DEFAULT_FILES if (path / f).exists()]
        files = preferred or sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
        if not files:
            raise CorpusError(f"no .txt/.tokens/.raw/.jsonl files in {path}; pass --corpus FILE or a folder of text files")
        return files
    if not path.exists():
        raise CorpusError(f"corpus {path} does not exist; pass --corpus PATH to a text file or folder")
    return [path]


def local_corpus(path: Path) -> Corpus:
    """Documents of a text file (``.txt``, WikiText ``.tokens``/``.raw``, ``.jsonl`` with "text") or folder."""
    files = _local_files(path)
    digest = hashlib.sha1()
    docs: list[str] = []
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
        docs.extend(_documents_of_file(f))
    if not docs:
        raise CorpusError(f"corpus {path} holds no text; pass --corpus PATH to a non-empty text file")
    names = "+".join(f.name for f in files)
    return Corpus(description=f"local:{names} ({len(docs)} documents)", identity=digest.hexdigest()[:16], docs=docs)


def hub_corpus(name: str, max_docs: int = 100_000) -> Corpus:
    """A Hugging Face dataset ``name[:config]`` (train split, "text" column); needs ``datasets`` and the hub."""
    try:
        import datasets  # noqa: F401 - optional dependency, needed only for hub corpora
    except ModuleNotFoundError:
        raise CorpusError(f"corpus {name!r} is not a local path and the datasets package is not installed; "
                          "pass --corpus PATH to local text files") from None
    if not hub_reachable():
        raise CorpusError(f"corpus {name!r} is not a local path and the Hugging Face hub is unreachable; "
                          "pass --corpus PATH to local text files")
    ds_name, _, config = name.partition(":")
    stream = datasets.load_dataset(ds_name, config or None, split="train", streaming=True)
    docs = [row["text"] for row, _ in zip(stream.shuffle(seed=1), range(max_docs))]
    return Corpus(description=f"hub:{name} ({len(docs)} documents)", identity=hashlib.sha1(name.encode()).hexdigest()[:16],
                  docs=docs)


def resolve_corpus(corpus: str | Path | None = None) -> Corpus:
    """A local path, a hub dataset name, or ``None`` for the WikiText files in the data folder."""
    if corpus is None:
        root = data_dir()
        if root is None or not (root / "wikitext").is_dir():
            raise CorpusError("no default corpus: the data folder has no wikitext/ (set LOCEDIT_DATA_DIR) "
                              "or pass --corpus PATH")
        return local_corpus(root / "wikitext")
    path = Path(corpus).expanduser()
    text = str(corpus)
    looks_local = isinstance(corpus, Path) or text.startswith((".", "/", "~")) or path.suffix in _SUFFIXES
    if path.exists() or looks_local:
        return local_corpus(path)
    return hub_corpus(text)
