"""``locedit run``: trace every selected fact once, then run every (fact, method, problem, layer) edit.

Order of work (docs/algorithms.md#edit-order, with the caches of docs/algorithms.md#caches):

1. Check the config before any work: method, problem and hyperparameter names, layers against the
   model's depth, the dataset path, and that the run directory belongs to this config's hash; then
   take the run directory's lock (a second process on it is refused) and open its database.
2. Load the model once; select the facts.
3. Unit ``trace:{case_id}`` per fact: the knowledge filters (cached as its ``facts`` row), then causal
   tracing for every configured kind and window (and zeroing), for facts that pass the filter.
4. Precompute the second-moment statistics of every layer the ROME / MEMIT edits need.
5. Unit ``edit:{case_id}:{method}:{problem}:{layer}`` per edit of an eligible fact.

The analysis and report come after, from the caller (``locedit run`` calls
:func:`locedit.analysis.pipeline.analyze_run`, which fills :attr:`RunResult.report`).

Every unit goes through :func:`locedit.experiment.sweep.run_units`: seeded, atomic, resumable. The
named :func:`~locedit.experiment.killpoints.checkpoint` calls are where the crash test kills the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from locedit.data import Fact
from locedit.data.filters import correctness_filter, erasure_filter
from locedit.edit.methods import Method, edit_layers, get_method, resolve_hparams
from locedit.edit.problems import Problem, get_problem
from locedit.edit.stats import moments_for
from locedit.experiment.config import ConfigError, ExperimentConfig, data_paths, tiny_family
from locedit.experiment.manifest import check_run_dir, new_manifest, write_manifest
from locedit.experiment.selection import select_facts
from locedit.experiment.killpoints import checkpoint
from locedit.experiment.store import Store, run_lock
from locedit.experiment.sweep import SweepAbort, SweepSummary, Unit, progress_bar, run_units
from locedit.localize.causal_trace import trace, zero
from locedit.models.loading import load_model, parse_dtype, resolve_source
from locedit.models.tiny import N_LAYERS, tiny
from locedit.study.session import edit_and_evaluate, store_row

# Reference hard skips (docs/algorithms.md#selection), applied when data.compat_skips is on.
ALWAYS_SKIPPED = 1531
MEMORY_SKIPPED = 1517


def memory_skipped(method: Method, problem: Problem) -> bool:
    """Whether the reference skipped case 1517 (memory): every multi-layer method, and ROME (a one-layer method
    with key statistics) under Tracing Reversal (a target from the noised model)."""
    return method.window > 1 or (method.uses_stats and problem.target_from_noise)


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
def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(overrides for every problem, {problem: overrides}) from one method's hparams table."""
    common = {k: v for k, v in overrides.items() if not isinstance(v, dict)}
    per_problem = {k: v for k, v in overrides.items() if isinstance(v, dict)}
    return common, per_problem


def hparam_overrides(cfg: ExperimentConfig, method: str, problem: str) -> dict[str, Any]:
    """The config's overrides for (method, problem): the stats corpus, then common, then per-problem."""
    out: dict[str, Any] = {}
    if get_method(method).uses_stats:
        if cfg.stats.corpus is not None:
            out["mom2_corpus"] = cfg.stats.corpus
        if cfg.stats.n_tokens is not None:
            out["mom2_n_tokens"] = cfg.stats.n_tokens
    common, per_problem = _split_overrides(cfg.edit.hparams.get(method, {}))
    return {**out, **common, **per_problem.get(problem, {})}


def model_n_layers(name: str) -> int:
    """Number of blocks of a configured model, read from its config (no weights loaded)."""
    if tiny_family(name) is not None:
        return N_LAYERS
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


def load_configured_model(cfg: ExperimentConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The configured model; ``tiny:<family>`` builds a random-weight tiny model (seed 0)."""
    family = tiny_family(cfg.model.name)
    if family is None:
        return load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)
    model, tok = tiny(family, dtype=parse_dtype(cfg.model.dtype))
    return model.to(cfg.model.device), tok


# --------------------------------------------------------------------------------------------- units
class Experiment:
    """The per-fact and per-edit work of one config on one loaded model."""

    def __init__(self, cfg: ExperimentConfig, model: PreTrainedModel, tok: PreTrainedTokenizerBase):
        self.cfg, self.model, self.tok = cfg, model, tok
        self._filters: dict[int, tuple[bool, float, bool]] = {}

    # -- facts and tracing
    def prefilter(self, facts: list[Fact], progress: Callable[[int], None] | None = None) -> None:
        """Run the knowledge filters for ``facts`` in batches (cached in memory until their units run).

        ``progress`` is called with the number of facts done per batch, once per filter.
        """
        todo = [f for f in facts if f.case_id not in self._filters]
        if not todo:
            return
        verdicts = correctness_filter(self.model, self.tok, todo, mode=self.cfg.data.filter_mode,
                                      progress=progress).known
        erasure = erasure_filter(self.model, self.tok, todo, threshold=self.cfg.data.erasure_threshold,
                                 progress=progress)
        for f, known, e in zip(todo, verdicts, erasure):
            self._filters[f.case_id] = (bool(known), e.p_true, e.passes)

    def fact_row(self, fact: Fact) -> dict[str, Any]:
        """The ``facts`` row: the knowledge filters of docs/algorithms.md#selection, computed once per fact."""
        self.prefilter([fact])
        known, p_true, passes = self._filters[fact.case_id]
        return {"case_id": fact.case_id, "subject": fact.subject, "prompt": fact.prompt,
                "target_true": fact.target_true, "target_new": fact.target_new, "is_correct": known,
                "p_true": p_true, "passes_erasure_filter": passes}

    def trace_unit(self, fact: Fact) -> dict[str, list[dict[str, Any]]]:
        row = self.fact_row(fact)
        rows: dict[str, list[dict[str, Any]]] = {"facts": [row]}
        loc = self.cfg.localize
        if loc.enabled and (row["is_correct"] or not self.cfg.data.correctness_filter):
            traced = trace(self.model, self.tok, fact, kinds=loc.kinds, windows=loc.windows, samples=loc.samples,
                           noise=loc.noise, seed=self.cfg.seeds.tracing)
            for table in ("trace_points", "trace_cells", "trace_layers"):
                rows[table] = traced.rows(table)
            if loc.zeroing:
                rows["zeroing_layers"] = zero(self.model, self.tok, fact, windows=[loc.zeroing_window]).rows()
        return rows

    # -- edits
    def edit_eligible(self, fact_row: dict[str, Any], method: str, problem: str) -> bool:
        """Filters (docs/algorithms.md#selection): known fact; Fact Erasure also p(o_true) > threshold; reference
        skips."""
        if self.cfg.data.correctness_filter and not fact_row["is_correct"]:
            return False
        if get_problem(problem).erasure and not fact_row["passes_erasure_filter"]:
            return False
        if self.cfg.data.compat_skips:
            cid = fact_row["case_id"]
            if cid == ALWAYS_SKIPPED:
                return False
            if cid == MEMORY_SKIPPED and memory_skipped(get_method(method), get_problem(problem)):
                return False
        return True

    def prepare_edits(self) -> dict[str, Any]:
        """Precompute the second-moment statistics of every layer the ROME / MEMIT edits touch
        (docs/algorithms.md#key-statistics).

        Done once before any edit, outside any noise hook (docs/algorithms.md#key-statistics); returns what to record
        in the
        manifest (corpus, token count, layers).
        """
        groups: dict[tuple[str | None, int], set[int]] = {}
        for method in (m for m in self.cfg.edit.methods if get_method(m).uses_stats):
            for problem in self.cfg.edit.problems:
                hp = resolve_hparams(method, self.model, problem, hparam_overrides(self.cfg, method, problem))
                for layer in self.cfg.edit.layers:
                    groups.setdefault((hp.mom2_corpus, hp.mom2_n_tokens), set()).update(
                        edit_layers(self.model, layer, hp))
        infos = []
        for (corpus, n_tokens), layers in groups.items():
            moments = moments_for(self.model, self.tok, corpus, n_tokens)
            moments.prefetch(sorted(layers))
            infos.append({**moments.info.to_dict(), "layers": sorted(layers)})
        return {"second_moments": infos} if infos else {}

    def edit_unit(self, fact: Fact, method: str, problem: str, layer: int) -> dict[str, list[dict[str, Any]]]:
        """One edit with its pre/post evaluation; aborts the sweep if the weights were not restored."""
        e = self.cfg.edit
        result = edit_and_evaluate(self.model, self.tok, fact, method, layer, problem,
                                   hparams=hparam_overrides(self.cfg, method, problem), noise_sigma=e.noise,
                                   o_noise_mode=e.o_noise_mode, ff_noise_mode=e.ff_noise_mode, essence=e.essence,
                                   average=e.average_prompts)
        if not result.weights_restored:
            raise SweepAbort(f"edit {method} of case {fact.case_id} at layer {layer} did not restore the weights; "
                             "the sweep stopped (completed units are kept)")
        return {"edits": [store_row(result)]}


def trace_units(exp: Experiment, facts: list[Fact]) -> list[Unit]:
    return [Unit(f"trace:{f.case_id}", "trace", f.case_id, lambda f=f: exp.trace_unit(f)) for f in facts]


def edit_units(exp: Experiment, facts: list[Fact], fact_rows: dict[int, dict[str, Any]]) -> list[Unit]:
    """Edit units of the traced, eligible facts, ordered fact > problem > method > layer (caches stay warm)."""
    units = []
    for f in facts:
        row = fact_rows.get(f.case_id)
        if row is None:  # its trace unit failed: retried on the next run, edits wait for it
            continue
        for problem in exp.cfg.edit.problems:
            for method in exp.cfg.edit.methods:
                if not exp.edit_eligible(row, method, problem):
                    continue
                for layer in exp.cfg.edit.layers:
                    name = f"edit:{f.case_id}:{method}:{problem}:{layer}"
                    units.append(Unit(name, "edit", f.case_id,
                                      lambda f=f, m=method, p=problem, l=layer: exp.edit_unit(f, m, p, l)))
    return units


# --------------------------------------------------------------------------------------------- run
def run_experiment(cfg: ExperimentConfig, out: str | Path | None = None, console: Console | None = None,
                   progress: bool = True) -> RunResult:
    """Run (or resume) ``cfg`` into ``out`` (default :func:`default_run_dir`); see the module docstring."""
    console = console or Console(stderr=True)
    run_dir = Path(out) if out is not None else default_run_dir(cfg)
    preflight(cfg, run_dir)
    checkpoint("run:checked")
    with run_lock(run_dir), Store(run_dir) as store:
        checkpoint("run:locked")
        result = _run_locked(cfg, run_dir, store, console, progress)
        checkpoint("run:done")
    return result


def _run_locked(cfg: ExperimentConfig, run_dir: Path, store: Store, console: Console, progress: bool) -> RunResult:
    """Steps 2-5 of the module docstring, in a locked run directory with its store open."""
    facts = select_facts(cfg.data)

    with console.status(f"loading {cfg.model.name} ..."):
        model, tok = load_configured_model(cfg)
    exp = Experiment(cfg, model, tok)
    checkpoint("run:loaded")

    manifest = check_run_dir(run_dir, cfg) or new_manifest(cfg, device=cfg.model.device)
    session: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "facts": len(facts)}
    manifest["sessions"].append(session)
    write_manifest(run_dir, manifest)
    checkpoint("run:manifest-written")

    with progress_bar(console, disable=not progress) as bar:
        done = store.completed_units()
        unfiltered = [f for f in facts if f"trace:{f.case_id}" not in done]
        if unfiltered:
            task = bar.add_task("filters", total=2 * len(unfiltered))
            exp.prefilter(unfiltered, progress=lambda n: bar.advance(task, n))
        checkpoint("run:filtered")
        tracing = run_units(store, trace_units(exp, facts), cfg.seeds.tracing, "tracing", bar)
        fact_rows = {r["case_id"]: r for r in store.rows("facts")}
        units = edit_units(exp, facts, fact_rows)
        pending = [u for u in units if u.name not in store.completed_units()]
        if pending:
            with console.status("second-moment statistics ..."):
                stats_info = exp.prepare_edits()
            if stats_info:
                manifest["stats"] = {**manifest.get("stats", {}), **stats_info}
            checkpoint("run:statistics")
        editing = run_units(store, units, cfg.seeds.editing, "editing", bar)
        eligible = {p: len({u.case_id for u in units if f":{p}:" in u.name}) for p in cfg.edit.problems}

    result = RunResult(run_dir, cfg.hash(), tracing, editing, len(facts), eligible)
    session.update(finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), tracing=tracing.as_dict(),
                   editing=editing.as_dict())
    manifest["finished_at"] = session["finished_at"]
    write_manifest(run_dir, manifest)
    checkpoint("run:finished")
    return result
