"""Display names and paper order for methods, problems and outcomes, read from the registries.

Result tables may spell a method "rome", "ROME" or "ft_1"; the analysis groups and orders by the
canonical labels of :data:`locedit.edit.methods.METHODS`, :data:`locedit.edit.problems.PROBLEMS` and
:data:`locedit.evaluate.metrics.METRICS`, so tables and figures read like the paper's (FT-1, FT-5, ROME,
MEMIT; EI, TR, FE, FA, FF). Unknown names are kept as they are and sorted after the known ones. The
sequences and mappings here follow the registries, also for entries registered later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from locedit.edit.methods import METHODS as METHOD_REGISTRY
from locedit.edit.problems import PROBLEMS as PROBLEM_REGISTRY
from locedit.evaluate.metrics import METRICS
from locedit.registry import LiveTuple

METHODS: Sequence[str] = METHOD_REGISTRY.column(lambda m: m.label)
METHOD_COLORS = METHOD_REGISTRY.mapping(lambda m: m.label, lambda m: m.color)
PROBLEMS: Sequence[str] = PROBLEM_REGISTRY.column(lambda p: p.label)
PROBLEM_NAMES = PROBLEM_REGISTRY.mapping(lambda p: p.label, lambda p: p.long_name)
# regression outcomes: the probability-based scores first, then those computed on sampled texts
OUTCOMES: Sequence[str] = LiveTuple(lambda: tuple(
    m.name for m in sorted((m for m in METRICS.values() if m.outcome), key=lambda m: m.sampled)))
OUTCOME_NAMES = METRICS.mapping(lambda m: m.name, lambda m: m.label)
EFFECT_NAMES: dict[str, str] = {
    "te": "tracing effect (max-token fraction restored)",
    "te_clean": "tracing effect (fraction of p_clean)",
    "te_last": "tracing effect at last subject token (fraction)",
    "abs_effect": "absolute tracing effect (max over tokens)",
    "abs_last": "absolute effect at last subject token",
    "z_subject": "zeroing effect (max over subject tokens)",
    "z_all": "zeroing effect (max over all tokens)",
}


def method_label(name: str) -> str:
    """Canonical method label ("ft_1" -> "FT-1"); unknown names unchanged."""
    method = METHOD_REGISTRY.find(str(name))
    return str(name) if method is None else method.label


def problem_label(name: str) -> str:
    """Canonical problem label ("fact_forcing" -> "FF"); unknown names unchanged."""
    problem = PROBLEM_REGISTRY.find(str(name))
    return str(name) if problem is None else problem.label


def ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """Distinct values in paper order, unknown ones after the known ones, alphabetically."""
    distinct = set(values)
    known = [v for v in order if v in distinct]
    return known + sorted(distinct - set(order))
