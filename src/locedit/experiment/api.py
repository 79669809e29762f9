"""Run an experiment config from Python: the call behind ``locedit run``.

>>> import tempfile
>>> from locedit.experiment.config import parse_config
>>> cfg = parse_config({"name": "doc", "model": {"name": "tiny:gpt2"},
...                     "data": {"source": "demo", "limit": 2, "correctness_filter": False},
...                     "localize": {"windows": [2], "samples": 2, "noise": 0.5},
...                     "edit": {"methods": ["ft-1"], "layers": [1, 4], "essence": False},
...                     "analysis": {"analyze": False, "report": False}})
>>> with tempfile.TemporaryDirectory() as tmp:
...     result = run(cfg, f"{tmp}/run")
...     again = run(cfg, f"{tmp}/run")                       # resumes: every unit is already done
>>> result.n_facts, result.tracing.done, result.editing.done, result.summary.failed
(2, 2, 4, 0)
>>> again.editing.done, again.editing.skipped
(0, 4)
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from locedit.experiment.config import ExperimentConfig, load_config
from locedit.experiment.runner import RunResult, run_experiment


def run(config: str | Path | ExperimentConfig, out: str | Path | None = None, *, progress: bool = False,
        console: Console | None = None) -> RunResult:
    """Run (or resume) an experiment: a TOML config file or an :class:`ExperimentConfig`.

    ``out``: the run directory (default ``runs/<name>-<config hash>`` under the working directory).
    Status lines, and the progress bar with ``progress=True``, go to ``console`` (default: stderr).
    """
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    return run_experiment(cfg, out, console=console, progress=progress)
