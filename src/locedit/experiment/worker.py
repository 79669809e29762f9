"""The work of a sweep on one loaded model: a fact's filters and tracing, groups of edits; what every executor runs.

:class:`Experiment` holds one config's model and its caches (the knowledge filters, the edit session's
pre-edit evaluations, key statistics) and turns a :class:`~locedit.experiment.work.WorkItem` into one
:class:`~locedit.experiment.work.UnitResult` per unit. Every unit starts from its seed
(:func:`~locedit.experiment.sweep.seed_everything`), so its rows do not depend on which process runs it,
on what ran before it there, or on how edits are grouped. The local executor runs it in the driver's
process; a Ray actor runs the same class in its own (:mod:`locedit.experiment.ray_backend`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data import Fact
from locedit.data.filters import correctness_filter, erasure_filter
from locedit.edit.methods import Method, edit_layers, get_method, resolve_hparams
from locedit.edit.problems import Problem, get_problem
from locedit.edit.stats import moments_for
from locedit.experiment.config import ExperimentConfig
from locedit.experiment.killpoints import checkpoint
from locedit.experiment.sweep import SweepAbort, error_line, seed_everything
from locedit.experiment.work import Rows, UnitResult, WorkItem, edit_unit_name, trace_unit_name
from locedit.localize.causal_trace import trace, zero
from locedit.models.specs import load_spec
from locedit.study.edit_row import EditRow
from locedit.study.session import EditSession, session_for, store_row

# Reference hard skips (docs/algorithms.md#selection), applied when data.compat_skips is on.
ALWAYS_SKIPPED = 1531
MEMORY_SKIPPED = 1517


def memory_skipped(method: Method, problem: Problem) -> bool:
    """Whether the reference skipped case 1517 (memory): every multi-layer method, and ROME (a one-layer method
    with key statistics) under Tracing Reversal (a target from the noised model)."""
    return method.window > 1 or (method.uses_stats and problem.target_from_noise)


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


def edit_eligible(cfg: ExperimentConfig, fact_row: dict[str, Any], method: str, problem: str) -> bool:
    """Filters (docs/algorithms.md#selection): known fact; Fact Erasure also p(o_true) > threshold; reference skips."""
    if cfg.data.correctness_filter and not fact_row["is_correct"]:
        return False
    if get_problem(problem).erasure and not fact_row["passes_erasure_filter"]:
        return False
    if cfg.data.compat_skips:
        cid = fact_row["case_id"]
        if cid == ALWAYS_SKIPPED:
            return False
        if cid == MEMORY_SKIPPED and memory_skipped(get_method(method), get_problem(problem)):
            return False
    return True


def load_configured_model(cfg: ExperimentConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The configured model; ``tiny:`` and ``random:`` names build random weights (seed 0)."""
    return load_spec(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)


class Experiment:
    """The per-fact and per-edit work of one config on one loaded model."""

    def __init__(self, cfg: ExperimentConfig, model: PreTrainedModel, tok: PreTrainedTokenizerBase):
        self.cfg, self.model, self.tok = cfg, model, tok
        self._filters: dict[int, tuple[bool, float, bool]] = {}
        self._edit_info: dict[str, Any] | None = None

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
    def prepare_edits(self) -> dict[str, Any]:
        """Precompute the second-moment statistics of every layer the ROME / MEMIT edits touch
        (docs/algorithms.md#key-statistics), once per process.

        Done before any edit, outside any noise hook (docs/algorithms.md#key-statistics); returns what to record
        in the manifest (corpus, token count, layers).
        """
        if self._edit_info is not None:
            return self._edit_info
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
        self._edit_info = {"second_moments": infos} if infos else {}
        return self._edit_info

    def edit_group(self, facts: list[Fact], method: str, problem: str, layer: int) -> list[Rows | Exception]:
        """The rows of each fact's edit by (method, problem, layer), or the exception that failed it.

        The group is edited together (:meth:`EditSession.run_many`: batched v*/z and fine-tuning, rank-one
        post-evaluation); every fact is prepared from the editing seed, so the results do not depend on how
        edits are grouped beyond float rounding.
        Raises :class:`SweepAbort` if an edit did not restore the weights.
        """
        e = self.cfg.edit
        session = session_for(self.model, self.tok, noise_sigma=e.noise, o_noise_mode=e.o_noise_mode,
                              ff_noise_mode=e.ff_noise_mode, essence=e.essence, average=e.average_prompts)
        hparams = hparam_overrides(self.cfg, method, problem)
        checkpoint(f"{edit_unit_name(facts[0].case_id, method, problem, layer)}:start")
        outcomes = session.run_many(facts, method, layer, problem, hparams, reseed=self._reseed_edit)
        return [o if isinstance(o, Exception) else self._edit_rows(o.row, method, layer) for o in outcomes]

    def _reseed_edit(self) -> None:
        seed_everything(self.cfg.seeds.editing)

    @staticmethod
    def _edit_rows(row: EditRow, method: str, layer: int) -> Rows:
        if not row.weights_restored:
            raise SweepAbort(f"edit {method} of case {row.case_id} at layer {layer} did not restore the weights; "
                             "the sweep stopped (completed units are kept)")
        return {"edits": [store_row(row)]}

    # -- work items
    def run_item(self, item: WorkItem) -> list[UnitResult]:
        """One result per unit of ``item``: its rows, or its error (a failing unit does not stop the others)."""
        start = time.perf_counter()
        if item.kind == "trace":
            outcomes = [self._traced(f) for f in item.facts]
        else:
            self.prepare_edits()
            outcomes = self.edit_group(list(item.facts), item.method, item.problem, item.layer)
        seconds = (time.perf_counter() - start) / len(item.facts)
        return [UnitResult(name, item.kind, f.case_id, seconds, error=error_line(o)) if isinstance(o, Exception)
                else UnitResult(name, item.kind, f.case_id, seconds, rows=o)
                for name, f, o in zip(item.unit_names, item.facts, outcomes)]

    def _traced(self, fact: Fact) -> Rows | Exception:
        seed_everything(self.cfg.seeds.tracing)
        checkpoint(f"{trace_unit_name(fact.case_id)}:start")
        return _attempt(lambda: self.trace_unit(fact))


def _attempt(work: Callable[[], Any]) -> Any:
    """``work()``, or the exception it raised (a :class:`SweepAbort` is raised on)."""
    try:
        return work()
    except SweepAbort:
        raise
    except Exception as err:  # noqa: BLE001 - a failing unit is recorded by the driver and retried next run
        return err
