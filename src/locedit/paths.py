"""Where locedit reads data and writes caches; every location can be overridden."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir(*parts: str) -> Path:
    """Cache root (``LOCEDIT_CACHE_DIR``, else the user cache dir), created on demand."""
    root = Path(os.environ.get("LOCEDIT_CACHE_DIR") or user_cache_dir("locedit"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path | None:
    """The shared data folder: ``LOCEDIT_DATA_DIR``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("LOCEDIT_DATA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if (parent / ".git").exists() and candidate.is_dir():
            return candidate
    return None
