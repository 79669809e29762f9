"""Atomic writes and checked cache files: concurrent writers, failing writers, damaged files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from locedit.files import (CacheCorruptError, atomic_path, checked_folder, read_checked, temp_sibling, verify_checked,
                           write_atomic, write_checked)

SIZE = 1 << 20
WRITER = """
import sys
from locedit.files import write_atomic
target, byte, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(rounds):
    write_atomic(target, bytes([byte]) * {size})
""".format(size=SIZE)


def _uniform(data: bytes) -> bool:
    return len(data) == SIZE and data.count(data[:1]) == SIZE


def test_temp_names_are_unique_per_process_thread_and_call(tmp_path):
    target = tmp_path / "x.json"
    names = {temp_sibling(target) for _ in range(100)}
    seen: list[Path] = []
    worker = threading.Thread(target=lambda: seen.append(temp_sibling(target)))
    worker.start()
    worker.join()
    assert len(names | set(seen)) == 101
    assert all(n.parent == tmp_path and n.name.startswith(".x.json.") for n in names)


def test_two_processes_writing_leave_one_complete_file(tmp_path):
    target = tmp_path / "cache.bin"
    write_atomic(target, b"\x00" * SIZE)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(byte), "40"]) for byte in (1, 2)]
    reads = 0
    while any(w.poll() is None for w in writers):
        assert _uniform(target.read_bytes())  # a reader never sees a mix or a part
        reads += 1
    assert [w.returncode for w in writers] == [0, 0] and reads > 0
    final = target.read_bytes()
    assert _uniform(final) and final[0] in (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.bin"]  # no temp file left behind


def test_two_threads_writing_leave_one_complete_file(tmp_path):
    target = tmp_path / "cache.bin"

    def write(byte: int) -> None:
        for _ in range(20):
            write_atomic(target, bytes([byte]) * SIZE)

    threads = [threading.Thread(target=write, args=(b,)) for b in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _uniform(target.read_bytes()) and sorted(p.name for p in tmp_path.iterdir()) == ["cache.bin"]


def test_a_failing_writer_leaves_no_temp_and_no_partial_target(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b'{"half": ')
            raise RuntimeError("disk gone")
    assert list(tmp_path.iterdir()) == []
    write_atomic(target, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new but unfinished")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_checked_file_round_trip_and_damage(tmp_path, caplog):
    path = tmp_path / "c.json"
    payload = json.dumps({"sigma": 0.125, "texts": ["é"] * 50}).encode()
    write_checked(path, payload)
    assert read_checked(path) == payload and verify_checked(path) == payload
    assert read_checked(tmp_path / "missing.json") is None

    damages = {
        "truncated": lambda raw: raw[:-7],
        "corrupted": lambda raw: raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:],
        "no header": lambda raw: raw.partition(b"\n")[2],
        "header only": lambda raw: raw.partition(b"\n")[0],
        "empty": lambda raw: b"",
    }
    for what, damage in damages.items():
        write_checked(path, payload)
        path.write_bytes(damage(path.read_bytes()))
        with pytest.raises(CacheCorruptError, match=str(path)):
            verify_checked(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="locedit.files"):
            assert read_checked(path) is None, what
        assert str(path) in caplog.text and "rebuilding" in caplog.text, what


def test_checked_folder_is_rebuilt_when_damaged(tmp_path, caplog):
    builds: list[int] = []

    def build(folder: Path) -> None:
        builds.append(1)
        (folder / "weights.bin").write_bytes(bytes(range(256)) * 100)
        (folder / "config.json").write_text('{"layers": 2}')

    target = tmp_path / "model"
    assert checked_folder(target, build) == target and len(builds) == 1
    original = {p.name: p.read_bytes() for p in target.iterdir()}
    assert checked_folder(target, build) == target and len(builds) == 1  # checked, not rebuilt

    damages = {
        "weights.bin": lambda p: p.write_bytes(p.read_bytes()[:1000]),  # truncated
        "config.json": lambda p: p.write_text('{"layers": 3}'),  # same size, other content
        "complete": lambda p: p.write_text("/old/format/marker"),
    }
    for name, damage in damages.items():
        damage(target / name)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="locedit.files"):
            checked_folder(target, build)
        assert str(target) in caplog.text and "rebuilding" in caplog.text, name
        assert {p.name: p.read_bytes() for p in target.iterdir()} == original, name
    (target / "weights.bin").unlink()
    checked_folder(target, build)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == original
    assert len(builds) == 5 and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_checked_folder_failing_build_leaves_nothing(tmp_path):
    def build(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"part")
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space"):
        checked_folder(tmp_path / "model", build)
    assert list(tmp_path.iterdir()) == []
