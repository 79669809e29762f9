"""manifest.json beside a run's database: the config, its hash, versions, seeds, corpus and times.

The manifest is how a run directory remembers which config it belongs to: resuming with a config of a
different hash is refused before any work starts. It is written atomically (temp file + rename), so a
killed run never leaves a half-written manifest.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from locedit.experiment.config import ExperimentConfig, dump_toml
from locedit.files import write_atomic

MANIFEST_NAME = "manifest.json"
SQL_EXPORT_SCHEMA = "schema.sql"  # marks a folder written by `locedit export --format sql`
_VERSIONED = ("locedit", "torch", "transformers", "numpy", "pandas", "pydantic")


class RunDirError(ValueError):
    """A run directory that belongs to another config, or is not a run directory."""


def manifest_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / MANIFEST_NAME


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a run directory, or None when there is none yet."""
    path = manifest_path(run_dir)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err}); move it away or choose another --out") from None


def refuse_sql_export(run_dir: str | Path) -> None:
    """Refuse a SQL export (it carries a manifest but no database) where a run directory is expected."""
    if (Path(run_dir) / SQL_EXPORT_SCHEMA).is_file():
        raise RunDirError(f"{run_dir} is a SQL export of a run, not a run directory; rebuild one with "
                          f"`locedit import {run_dir} --out RUN_DIR` and use RUN_DIR")


def check_run_dir(run_dir: str | Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """Refuse a SQL export, or a run directory whose manifest names a different config hash; return its manifest."""
    refuse_sql_export(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is not None and manifest.get("config_hash") != cfg.hash():
        raise RunDirError(
            f"{run_dir} holds a run of config {str(manifest.get('config_hash'))[:10]} "
            f"({manifest.get('config', {}).get('name', '?')}), not of this config {cfg.short_hash()}; "
            "choose another --out or restore the original config"
        )
    return manifest


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout locedit is imported from (with ``+dirty``), or None outside git."""
    here = start or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def new_manifest(cfg: ExperimentConfig, device: str) -> dict[str, Any]:
    """A fresh manifest for ``cfg``; the runner adds stats, counts and times as it goes."""
    return {
        "config_hash": cfg.hash(),
        "config": cfg.model_dump(mode="json"),
        "config_toml": dump_toml(cfg),
        "versions": versions(),
        "git_commit": git_commit(),
        "seeds": cfg.seeds.model_dump(),
        "device": device,
        "stats": {"corpus": cfg.stats.corpus or "wikitext (shared data)", "n_tokens": cfg.stats.n_tokens},
        "started_at": _now(),
        "sessions": [],
    }


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write atomically: a temp file in the same folder, then rename over the old manifest."""
    return write_atomic(manifest_path(run_dir), json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
