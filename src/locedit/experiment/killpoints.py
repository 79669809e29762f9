"""Named checkpoints at which a crash test SIGKILLs a run, in the manner of SQLite's crash testing.

The runner, the sweep and the store pass :func:`checkpoint` at every step that matters for durability
(before, inside and after each unit's transaction, around statistics and analysis). Two environment
variables, both unset in normal use, turn them into a test harness:

- ``LOCEDIT_CHECKPOINT_LOG=PATH`` appends the name of every checkpoint passed to PATH;
- ``LOCEDIT_KILL_AT=NAME`` SIGKILLs the process at checkpoint NAME, and ``NAME+SECONDS`` that many
  seconds after it (to land inside a long step such as the analysis).
"""

from __future__ import annotations

import os
import signal
import threading

LOG_ENV = "LOCEDIT_CHECKPOINT_LOG"
KILL_ENV = "LOCEDIT_KILL_AT"


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def checkpoint(name: str) -> None:
    """Record ``name`` and die there if the environment asks for it; a no-op otherwise."""
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    if target == name:
        _kill()
    at, plus, delay = target.rpartition("+")
    if plus and at == name:
        threading.Timer(float(delay), _kill).start()
