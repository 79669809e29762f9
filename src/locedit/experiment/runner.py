"""``locedit run``: trace every selected fact once, then run every (fact, method, problem, layer) edit.

Order of work (docs/algorithms.md#edit-order, with the caches of docs/algorithms.md#caches):

1. Check the config before any work: method, problem and hyperparameter names, layers against the
   model's depth, the dataset path, and that the run directory belongs to this config's hash; then
   take the run directory's lock (a second process on it is refused) and open its database.
2. Start the executor (it loads the model where the work runs); select the facts.
3. Unit ``trace:{case_id}`` per fact: the knowledge filters (cached as its ``facts`` row), then causal
   tracing for every configured kind and window (and zeroing), for facts that pass the filter.
4. Precompute the second-moment statistics of every layer the ROME / MEMIT edits need.
5. Unit ``edit:{case_id}:{method}:{problem}:{layer}`` per edit of an eligible fact, handed out in groups of
   up to ``edit.batch_size`` edits of one (method, problem, layer).

The analysis and report come after, from the caller (``locedit run`` calls
:func:`locedit.analysis.pipeline.analyze_run`, which fills :attr:`RunResult.report`).

This process is the driver whatever the backend (:mod:`locedit.experiment.executors`): it alone owns the run
directory, plans the units, skips completed ones and commits each unit in its own transaction
(:func:`locedit.experiment.sweep.run_items`); the executor computes them, each unit from its seed. The named
:func:`~locedit.experiment.killpoints.checkpoint` calls are where the crash test kills the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import AutoConfig

from locedit.data import Fact
from locedit.experiment.config import ConfigError, ExperimentConfig, data_paths
from locedit.experiment.executors import executor_for
from locedit.experiment.killpoints import checkpoint
from locedit.experiment.manifest import check_run_dir, git_commit, new_manifest, write_manifest
from locedit.experiment.selection import select_facts
from locedit.experiment.store import Store, run_lock
from locedit.experiment.sweep import Executor, SweepSummary, progress_bar, run_items
from locedit.experiment.work import EditUnit, edit_grid, edit_groups, trace_items, trace_unit_name
from locedit.experiment.worker import edit_eligible
from locedit.models.loading import resolve_source
from locedit.models.specs import spec_n_layers


@dataclass
class RunResult:
    """What ``locedit run`` did: where, how many units, and the report (if one was written)."""

    run_dir: Path
    config_hash: str
    tracing: SweepSummary
    editing: SweepSummary
    n_facts: int
    n_eligible: dict[str, int] = field(default_factory=dict)
    report: Path | None = None
    analysis_error: str | None = None

    @property
    def summary(self) -> SweepSummary:
        return self.tracing.add(self.editing)

    def as_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "config_hash": self.config_hash, "facts": self.n_facts,
                "eligible_facts": self.n_eligible, "tracing": self.tracing.as_dict(),
                "editing": self.editing.as_dict(), "failed": self.summary.failed,
                "report": str(self.report) if self.report else None, "analysis_error": self.analysis_error}


def default_run_dir(cfg: ExperimentConfig) -> Path:
    """``runs/<name>-<hash10>`` under the working directory."""
    return Path("runs") / f"{cfg.name}-{cfg.short_hash()}"


# --------------------------------------------------------------------------------------------- checks
def model_n_layers(name: str) -> int:
    """Number of blocks of a configured model, read from its config (no weights loaded)."""
    try:
        n = spec_n_layers(name)
    except ValueError as err:
        raise ConfigError(f"model.name: {err}") from None
    if n is not None:
        return n
    source, local_only = resolve_source(name)
    return int(AutoConfig.from_pretrained(source, local_files_only=local_only).num_hidden_layers)


def check_layers(cfg: ExperimentConfig, n_layers: int) -> None:
    bad = [layer for layer in cfg.edit.layers if not 0 <= layer < n_layers]
    if bad:
        raise ConfigError(f"edit.layers: {bad} out of range for {cfg.model.name} with {n_layers} layers "
                          f"(0..{n_layers - 1})")
    too_wide = [w for w in cfg.localize.windows if w > n_layers]
    if too_wide:
        raise ConfigError(f"localize.windows: {too_wide} wider than the model's {n_layers} layers")


def preflight(cfg: ExperimentConfig, run_dir: Path) -> int:
    """Every check that needs no weights (names were checked when the config was parsed); returns the
    model's number of layers."""
    data_paths(cfg.data.source)
    check_run_dir(run_dir, cfg)
    n_layers = model_n_layers(cfg.model.name)
    check_layers(cfg, n_layers)
    return n_layers


# --------------------------------------------------------------------------------------------- run
def run_experiment(cfg: ExperimentConfig, out: str | Path | None = None, console: Console | None = None,
                   progress: bool = True, executor: Executor | None = None) -> RunResult:
    """Run (or resume) ``cfg`` into ``out`` (default :func:`default_run_dir`); see the module docstring.

    ``executor``: where the units are computed (default: the config's ``run.backend`` with its defaults);
    the run closes it at the end.
    """
    console = console or Console(stderr=True)
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    try:
        preflight(cfg, run_dir)
        executor = executor or executor_for(cfg.run.backend)
        checkpoint("run:checked")
        with run_lock(run_dir), Store(run_dir) as store:
            checkpoint("run:locked")
            result = _run_locked(cfg, run_dir, store, executor, console, progress)
            checkpoint("run:done")
    finally:
        if executor is not None:
            executor.close()
    return result


def eligible_edits(cfg: ExperimentConfig, facts: list[Fact], fact_rows: dict[int, dict[str, Any]]) -> list[EditUnit]:
    """The edits of traced, eligible facts (a fact whose trace unit failed waits for the next run)."""
    traced = [f for f in facts if f.case_id in fact_rows]
    e = cfg.edit
    return [u for u in edit_grid(traced, e.methods, e.problems, e.layers)
            if edit_eligible(cfg, fact_rows[u.fact.case_id], u.method, u.problem)]


def _run_locked(cfg: ExperimentConfig, run_dir: Path, store: Store, executor: Executor, console: Console,
                progress: bool) -> RunResult:
    """Steps 2-5 of the module docstring, in a locked run directory with its store open."""
    facts = select_facts(cfg.data, cfg.model.name)

    with console.status(f"loading {cfg.model.name} ({executor.name} backend) ..."):
        executor.start(cfg)
    checkpoint("run:loaded")

    manifest = check_run_dir(run_dir, cfg) or new_manifest(cfg, device=cfg.model.device)
    session: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "facts": len(facts),
                               "backend": executor.name, "workers": executor.workers, "git_commit": git_commit()}
    manifest["sessions"].append(session)
    write_manifest(run_dir, manifest)
    checkpoint("run:manifest-written")

    with progress_bar(console, disable=not progress) as bar:
        done = store.completed_units()
        untraced = [f for f in facts if trace_unit_name(f.case_id) not in done]
        if untraced:
            task = bar.add_task("filters", total=2 * len(untraced), visible=False)
            executor.prefilter(untraced, progress=lambda n: bar.update(task, advance=n, visible=True))
        checkpoint("run:filtered")
        tracing = run_items(store, trace_items(untraced), executor, "tracing", bar, total=len(facts))
        fact_rows = {r["case_id"]: r for r in store.rows("facts")}
        units = eligible_edits(cfg, facts, fact_rows)
        done = store.completed_units()
        pending = [u for u in units if u.name not in done]
        if pending:
            with console.status("second-moment statistics ..."):
                stats_info = executor.prepare_edits()
            if stats_info:
                manifest["stats"] = {**manifest.get("stats", {}), **stats_info}
            checkpoint("run:statistics")
        editing = run_items(store, edit_groups(pending, cfg.edit.batch_size), executor, "editing", bar,
                            total=len(units))
        eligible = {p: len({u.fact.case_id for u in units if u.problem == p}) for p in cfg.edit.problems}

    result = RunResult(run_dir, cfg.hash(), tracing, editing, len(facts), eligible)
    session.update(finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), tracing=tracing.as_dict(),
                   editing=editing.as_dict())
    manifest["finished_at"] = session["finished_at"]
    write_manifest(run_dir, manifest)
    checkpoint("run:finished")
    return result
