"""Fetch ROME's public CounterFact and zsRE files into the locedit cache, for machines that are online.

Offline the fetch fails within seconds (bounded name lookup and connect timeout) with one line that
says how to point locedit at local data instead.
"""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from locedit.data.validation import DataError, read_records
from locedit.files import atomic_path
from locedit.paths import cache_dir


@dataclass(frozen=True)
class RemoteDataset:
    """A dataset file published at ``url``, cached as ``filename``."""

    name: str
    url: str
    filename: str


REMOTE: dict[str, RemoteDataset] = {
    "counterfact": RemoteDataset("counterfact", "https://rome.baulab.info/data/dsets/counterfact.json", "counterfact.json"),
    "zsre": RemoteDataset("zsre", "https://rome.baulab.info/data/dsets/zsre_mem.json", "zsre_mem.json"),
}
OFFLINE_HINT = "pass a local copy with --data PATH or set LOCEDIT_DATA_DIR to a folder holding the data"


class DownloadError(RuntimeError):
    """A dataset could not be fetched; the message names the local alternative."""


def _resolve(host: str, port: int, timeout: float) -> None:
    """Name lookup bounded by ``timeout`` (getaddrinfo itself has no timeout)."""
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port)
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise OSError(f"name lookup of {host} timed out after {timeout:g}s")
    if outcome[0] is not None:
        raise outcome[0]


def download(name: str, *, force: bool = False, timeout: float = 5.0) -> Path:
    """Path of the cached dataset ``name`` (see ``REMOTE``), downloading it first if needed.

    The file is written beside its final name and renamed only after it parses as a JSON list.
    """
    if name not in REMOTE:
        raise DataError(f"unknown dataset {name!r}; downloadable: {', '.join(REMOTE)}")
    remote = REMOTE[name]
    target = cache_dir("data") / remote.filename
    if target.exists() and not force:
        return target
    url = urlparse(remote.url)
    try:
        _resolve(url.hostname or "", url.port or 443, timeout)
        with atomic_path(target) as partial:
            with urllib.request.urlopen(remote.url, timeout=timeout) as response, partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            read_records(partial)
    except (OSError, urllib.error.URLError, DataError) as err:
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"cannot download {name} from {remote.url} ({reason}); {OFFLINE_HINT}") from None
    return target

