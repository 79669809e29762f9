"""Localization: causal tracing and representation zeroing (docs/algorithms.md#causal-tracing), exact oracle and fast
engine."""

from locedit.localize.batch import SUMMARY_COLUMNS, trace_facts
from locedit.localize.benchmark import bench_trace
from locedit.localize.causal_trace import trace, zero
from locedit.localize.engine import FastEngine, fast_grid
from locedit.localize.heatmap import plot_trace
from locedit.localize.inputs import TargetWarning, TracedFact, prepare
from locedit.localize.noise import noise_level
from locedit.localize.oracle import oracle_grid
from locedit.localize.patching import Corruption, PatchGrid, PatchProblem, Restore
from locedit.localize.result import TraceResult, ZeroingResult
from locedit.localize.settings import TraceSettings

__all__ = [
    "SUMMARY_COLUMNS", "Corruption", "FastEngine", "PatchGrid", "PatchProblem", "Restore", "TargetWarning", "TraceResult",
    "TraceSettings", "TracedFact", "ZeroingResult", "bench_trace", "fast_grid", "noise_level", "oracle_grid",
    "plot_trace", "prepare", "trace", "trace_facts", "zero",
]
