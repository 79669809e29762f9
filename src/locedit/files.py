"""Atomic file writes and checksummed cache files, shared by every package (it imports no locedit module).

* :func:`atomic_path` / :func:`write_atomic`: write to a temp file beside the target, named uniquely per
  process, thread and call, then ``os.replace`` it onto the target. Readers see the old file or the new
  one, never a part; concurrent writers leave one complete file; a writer that fails leaves neither a
  temp file nor a partial target.
* :func:`write_checked` / :func:`read_checked`: a cache file that carries its own size and SHA-256
  (a one-line header before the payload). A file that is truncated, corrupted or of an older format is
  reported with a warning naming it and read as missing, so the caller rebuilds it.
* :func:`checked_folder`: the same check for a cache folder (the dequantized model, the tokenizer): a
  record of every file's size and SHA-256, written last and checked on every use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

CHECKED_MAGIC = b"locedit-checked-cache v1 "
FOLDER_RECORD = "complete"
_CHUNK = 1 << 22


class CacheCorruptError(RuntimeError):
    """A cache file failed its size or checksum check; the message names the file."""


def temp_sibling(target: str | Path, suffix: str = ".tmp") -> Path:
    """A hidden name beside ``target``, unique per process, thread and call."""
    target = Path(target)
    unique = f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}"
    return target.with_name(f".{target.name}.{unique}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a unique temp path beside ``target``; on success move it onto ``target``, on error remove it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def write_atomic(target: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``target`` atomically (temp file + rename)."""
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(target) as tmp:
        tmp.write_bytes(payload)
    return Path(target)


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def write_checked(target: str | Path, payload: bytes) -> Path:
    """Write ``payload`` atomically behind a header recording its size and SHA-256."""
    header = json.dumps({"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
    return write_atomic(target, CHECKED_MAGIC + header.encode() + b"\n" + payload)


def verify_checked(path: str | Path) -> bytes:
    """The payload of a file written by :func:`write_checked`; :class:`CacheCorruptError` if it fails a check."""
    path = Path(path)
    raw = path.read_bytes()
    head, sep, payload = raw.partition(b"\n")
    if not head.startswith(CHECKED_MAGIC) or not sep:
        raise CacheCorruptError(f"cache file {path} has no integrity header (truncated or of an older format)")
    try:
        record = json.loads(head[len(CHECKED_MAGIC):])
        size, sha = int(record["size"]), str(record["sha256"])
    except (ValueError, KeyError, TypeError):
        raise CacheCorruptError(f"cache file {path} has a damaged integrity header") from None
    if len(payload) != size:
        raise CacheCorruptError(f"cache file {path} holds {len(payload)} bytes, its header says {size} (truncated)")
    if hashlib.sha256(payload).hexdigest() != sha:
        raise CacheCorruptError(f"cache file {path} fails its SHA-256 check (corrupted)")
    return payload


def read_checked(path: str | Path) -> bytes | None:
    """The verified payload of a checked cache file, or None when it is missing or failed a check.

    A failed file is logged (naming it) and never returned; the caller rebuilds it and replaces it
    atomically (it is not deleted here, so a reader cannot remove a good file another process just wrote).
    """
    try:
        return verify_checked(path)
    except FileNotFoundError:
        return None
    except CacheCorruptError as err:
        log.warning("%s; rebuilding it", err)
        return None


def folder_files(folder: str | Path) -> dict[str, dict[str, int | str]]:
    """{name: {size, sha256}} of the plain files in ``folder``, the record file excluded."""
    folder = Path(folder)
    return {f.name: {"size": f.stat().st_size, "sha256": sha256_of_file(f)}
            for f in sorted(folder.iterdir()) if f.is_file() and f.name != FOLDER_RECORD}


def write_folder_record(folder: str | Path, **extra: str) -> Path:
    """Record every file's size and SHA-256 in ``folder/complete`` (atomically; write it last)."""
    record = {"files": folder_files(folder), **extra}
    return write_atomic(Path(folder) / FOLDER_RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")


def check_folder_record(folder: str | Path) -> None:
    """Raise :class:`CacheCorruptError` (naming the file) unless ``folder`` matches its record exactly."""
    folder = Path(folder)
    marker = folder / FOLDER_RECORD
    if not marker.exists():
        raise CacheCorruptError(f"cache folder {folder} has no {FOLDER_RECORD} record (incomplete)")
    try:
        expected = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise CacheCorruptError(f"cache record {marker} is damaged or of an older format") from None
    for name, want in expected.items():
        path = folder / name
        if not path.is_file():
            raise CacheCorruptError(f"cache file {path} is missing")
        if path.stat().st_size != want["size"]:
            raise CacheCorruptError(f"cache file {path} has {path.stat().st_size} bytes, expected {want['size']} "
                                    "(truncated)")
        if sha256_of_file(path) != want["sha256"]:
            raise CacheCorruptError(f"cache file {path} fails its SHA-256 check (corrupted)")


def checked_folder(target: str | Path, build: Callable[[Path], None], **record: str) -> Path:
    """``target`` if it matches its record, else rebuilt: ``build(tmp)`` fills a private folder whose files
    are renamed into ``target`` one by one, and the record is written last.

    A failed check is logged naming the file, so a damaged cache is never read silently.
    """
    target = Path(target)
    try:
        check_folder_record(target)
        return target
    except CacheCorruptError as err:
        if (target / FOLDER_RECORD).exists():
            log.warning("%s; rebuilding it", err)
            (target / FOLDER_RECORD).unlink(missing_ok=True)
    tmp = temp_sibling(target, ".partial")
    try:
        tmp.mkdir(parents=True)
        build(tmp)
        target.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, target / f.name)
    finally:
        _remove(tmp)
    write_folder_record(target, **record)
    return target
