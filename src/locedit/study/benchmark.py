"""``locedit bench edit --compare``: the oracle (:meth:`EditSession.run` per fact with ``engine="oracle"``: the
full-sequence optimisation of :func:`locedit.edit.target_value.optimize_target_value`) against the fast path
(:meth:`EditSession.run_many`, ``batch`` facts at a time: prefix reuse, batched δ, rank-one evaluation) on the
same facts in one process. Several batch sizes can be timed against one oracle run (``by_batch``), and the
oracle can be limited to the first facts (``oracle_facts``) when it is slow, as on a 6B model. Over several
layers (``by_layer``) the comparison is a small sweep: every method at every layer, one (method, layer) group
at a time as the runner hands them out, and ``sweep`` sums it up as edits per hour of each path.

Per method: seconds per edit of each (edit + post-evaluation + restore; pre-edit evaluations are cached
beforehand, one-time costs such as key statistics and templates are paid by a warm-up edit), the speed-up,
the largest relative difference of the optimised vector (``v_star`` for ROME, ``z`` for MEMIT: max |a - b| /
max |a| per fact), the largest absolute difference of any score column (and which one: on a random model the essence score,
a difference of perplexities in the thousands, shows float rounding magnified), and the FLOP rate of the batched
path (FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` in a third, counted run, divided by the
batched path's wall time) beside a plain matmul's (:func:`locedit.localize.benchmark.matmul_gflops`), and the
oracle's FLOPs per edit counted on the first fact (``oracle_gflop_per_edit``: how much work the fast path
saves, against how much time). Peak memory is the device's high-water mark per path on CUDA and the process's
peak resident set on the CPU (a process-wide high-water mark: it only grows from one path to the next).
"""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import fields, replace
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.localize.benchmark import matmul_gflops
from locedit.study.session import EditOutcome, EditSession, HparamsArg, SessionSettings

VECTOR_KEYS = ("v_star", "z")  # the optimised vector of ROME and of MEMIT in a method's info


def _synced(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    """(result, seconds, peak MiB) of ``fn()``."""
    _reset_peak(device)
    _synced(device)
    start = time.perf_counter()
    out = fn()
    _synced(device)
    return out, time.perf_counter() - start, _peak_mib(device)


def _flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` as ``torch.utils.flop_counter`` counts them (matmuls and attention)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def _oracle(session: EditSession, facts: Sequence[Fact], method: str, layer: int, problem: str,
            hparams: HparamsArg) -> list[EditOutcome | Exception]:
    out: list[EditOutcome | Exception] = []
    for fact in facts:
        try:
            out.append(session.run(fact, method, layer, problem, hparams))
        except Exception as err:  # noqa: BLE001 - counted as a failed edit, as the batched path reports it
            out.append(err)
    return out


def _batched(session: EditSession, facts: Sequence[Fact], method: str, layer: int, problem: str,
             hparams: HparamsArg, batch: int) -> list[EditOutcome | Exception]:
    out: list[EditOutcome | Exception] = []
    for i in range(0, len(facts), batch):
        out.extend(session.run_many(facts[i: i + batch], method, layer, problem, hparams))
    return out


def vector_rel_diff(a: EditOutcome, b: EditOutcome) -> float | None:
    """max |a - b| / max |a| of the optimised vector of two outcomes (None for methods without one)."""
    for key in VECTOR_KEYS:
        if key in a.edit_info and key in b.edit_info:
            x, y = a.edit_info[key].detach().double(), b.edit_info[key].detach().double()
            return float((x - y).abs().max() / x.abs().max().clamp_min(1e-30))
    return None


def score_diff(a: EditOutcome, b: EditOutcome) -> tuple[float, str | None]:
    """The largest absolute difference of a score column present in both rows, and that column."""
    diffs = [(abs(float(v) - float(b.row.scores[k])), k) for k, v in a.row.scores.items()
             if v is not None and b.row.scores.get(k) is not None]
    return max(diffs, default=(0.0, None))


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _fast_figures(oracle: list, fast: list, fast_s: float, n_oracle: int, oracle_s: float, n: int,
                  peak: float) -> dict[str, Any]:
    """The batched path's figures against the oracle: seconds per edit, speed-up, differences, failures."""
    pairs = [(a, b) for a, b in zip(oracle, fast) if isinstance(a, EditOutcome) and isinstance(b, EditOutcome)]
    worst = max((score_diff(a, b) for a, b in pairs), default=(None, None))
    per_edit = fast_s / n
    return {"fast_seconds": per_edit, "speedup": oracle_s / n_oracle / per_edit if per_edit else float("nan"),
            "max_rel_diff": _max([vector_rel_diff(a, b) for a, b in pairs]), "max_score_diff": worst[0],
            "max_score_diff_column": worst[1], "compared": len(pairs),
            "fast_failed": sum(isinstance(o, Exception) for o in fast), "peak_memory_mib_fast": peak}


def compare_method(model: PreTrainedModel, tok: PreTrainedTokenizerBase, facts: Sequence[Fact], method: str, layer: int,
                   problem: str, *, batch: int | Sequence[int], hparams: HparamsArg = None,
                   settings: SessionSettings = SessionSettings(), oracle_facts: int | None = None,
                   count_flops: bool = True) -> dict[str, Any]:
    """One method's comparison (see the module docstring); each path has its own session and caches.

    ``batch``: facts per batch of the batched path, or several sizes, each timed on all ``facts`` (the
    top-level figures are the first size's, ``by_batch`` has each). ``oracle_facts``: time the oracle on the
    first so many facts only (all by default); differences are taken over those. ``count_flops``: run the
    batched path a third time under a FLOP counter (``fast_gflop_per_edit`` and ``fast_gflops_per_s`` are
    None without it).
    """
    batches = [batch] if isinstance(batch, int) else list(batch)
    oracle_session, fast_session = EditSession(model, tok, settings), EditSession(model, tok, settings)
    hp = oracle_session.hparams(method, problem, hparams)
    oracle_hp = replace(hp, engine="oracle") if "engine" in {f.name for f in fields(hp)} else hp
    oracle_pool = list(facts[:oracle_facts or len(facts)])
    prepared = [oracle_session.prepare(f, problem, hp) for f in facts]
    start = time.perf_counter()
    for p in prepared[:len(oracle_pool)]:
        oracle_session.evaluator.pre(p)
    pre_oracle = time.perf_counter() - start
    start = time.perf_counter()
    fast_session.evaluator.pre_many(prepared)
    pre_fast = time.perf_counter() - start
    _oracle(oracle_session, facts[:1], method, layer, problem, oracle_hp)  # warm-up: statistics, templates, inverses
    dev = model.device
    oracle, oracle_s, oracle_peak = _timed(lambda: _oracle(oracle_session, oracle_pool, method, layer, problem,
                                                           oracle_hp), dev)
    n, n_oracle = len(facts), len(oracle_pool)
    by_batch = {}
    for size in batches:
        fast, fast_s, fast_peak = _timed(lambda: _batched(fast_session, facts, method, layer, problem, hp, size), dev)
        by_batch[size] = _fast_figures(oracle, fast, fast_s, n_oracle, oracle_s, n, fast_peak)
    first = by_batch[batches[0]]
    flops = oracle_flops = None
    if count_flops:
        flops = _flops(lambda: _batched(fast_session, facts, method, layer, problem, hp, batches[0]))
        oracle_flops = _flops(lambda: _oracle(oracle_session, facts[:1], method, layer, problem, oracle_hp))
    return {
        "oracle_seconds": oracle_s / n_oracle, "oracle_facts": n_oracle,
        **{k: v for k, v in first.items() if k != "peak_memory_mib_fast"},
        "oracle_failed": sum(isinstance(o, Exception) for o in oracle),
        "pre_eval_seconds_per_fact": {"oracle": pre_oracle / n_oracle, "fast": pre_fast / n},
        "fast_gflop_per_edit": flops / n / 1e9 if flops is not None else None,
        "oracle_gflop_per_edit": oracle_flops / 1e9 if oracle_flops is not None else None,
        "fast_gflops_per_s": flops / n / first["fast_seconds"] / 1e9 if flops is not None and first["fast_seconds"]
        else None,
        "peak_memory_mib": {"oracle": oracle_peak, "fast": first["peak_memory_mib_fast"]},
        "by_batch": {str(size): figures for size, figures in by_batch.items()},
    }


def sweep_totals(cells: Sequence[dict[str, Any]], n_facts: int) -> dict[str, Any]:
    """Edits per hour of each path over ``cells`` (:func:`compare_method` results of one sweep, each on
    ``n_facts`` facts, the oracle on ``oracle_facts`` of them), and their ratio."""
    oracle_edits = sum(c["oracle_facts"] for c in cells)
    oracle_s = sum(c["oracle_seconds"] * c["oracle_facts"] for c in cells)
    fast_edits = n_facts * len(cells)
    fast_s = sum(c["fast_seconds"] * n_facts for c in cells)
    oracle_rate, fast_rate = 3600 * oracle_edits / oracle_s, 3600 * fast_edits / fast_s
    return {"cells": len(cells), "oracle_edits": oracle_edits, "oracle_seconds": oracle_s,
            "oracle_edits_per_hour": oracle_rate, "fast_edits": fast_edits, "fast_seconds": fast_s,
            "fast_edits_per_hour": fast_rate, "speedup": fast_rate / oracle_rate}


def bench_edit_compare(model: PreTrainedModel, tok: PreTrainedTokenizerBase, facts: Sequence[Fact],
                       methods: Sequence[str], layer: int | Sequence[int], problem: str, *,
                       batch: int | Sequence[int], hparams: dict[str, HparamsArg] | None = None,
                       settings: SessionSettings = SessionSettings(), oracle_facts: int | None = None,
                       on_method: Callable[[str, dict], None] | None = None) -> dict[str, Any]:
    """:func:`compare_method` for each method at each layer, with the machine, the matmul reference rate and the
    settings. ``methods`` holds the first layer's figures, ``by_layer`` every layer's, ``sweep`` the edits per
    hour of each path over all of them (and per method in ``sweep_by_method``). FLOPs are counted at the first
    layer only. ``on_method(label, figures)`` is called as each (method, layer) is measured."""
    batches = [batch] if isinstance(batch, int) else list(batch)
    layers = [layer] if isinstance(layer, int) else list(layer)
    matmul_before = matmul_gflops(model)
    by_layer: dict[int, dict[str, dict[str, Any]]] = {}
    for at in layers:
        by_layer[at] = {}
        for method in methods:
            by_layer[at][method] = compare_method(model, tok, facts, method, at, problem, batch=batches,
                                                  hparams=(hparams or {}).get(method), settings=settings,
                                                  oracle_facts=oracle_facts, count_flops=at == layers[0])
            if on_method:
                on_method(method if len(layers) == 1 else f"{method} at layer {at}", by_layer[at][method])
    matmul_after = matmul_gflops(model)
    cells = [figures for per_method in by_layer.values() for figures in per_method.values()]
    return dict(
        model=str(model.config._name_or_path or model.config.model_type), device=str(model.device),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""), layer=layers[0], layers=layers,
        problem=problem, facts=len(facts), batch=batches[0], batches=batches, torch_threads=torch.get_num_threads(),
        machine=platform.platform(), cpu=platform.processor() or platform.machine(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        matmul_gflops_per_s=(matmul_before + matmul_after) / 2, methods=by_layer[layers[0]],
        by_layer={str(at): per_method for at, per_method in by_layer.items()},
        sweep=sweep_totals(cells, len(facts)),
        sweep_by_method={m: sweep_totals([by_layer[at][m] for at in layers], len(facts)) for m in methods},
    )
