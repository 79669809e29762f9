"""Display names and paper order for methods, problems and outcomes.

Result tables may spell a method "rome", "ROME" or "ft_1"; the analysis groups and orders by the
canonical labels here so tables and figures read like the paper's (FT-1, FT-5, ROME, MEMIT; EI, TR,
FE, FA, FF). Unknown names are kept as they are and sorted after the known ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

METHODS: tuple[str, ...] = ("FT-1", "FT-5", "ROME", "MEMIT")
PROBLEMS: tuple[str, ...] = ("EI", "TR", "FE", "FA", "FF")
PROBLEM_NAMES: dict[str, str] = {
    "EI": "Error Injection", "TR": "Tracing Reversal", "FE": "Fact Erasure",
    "FA": "Fact Amplification", "FF": "Fact Forcing",
}
OUTCOMES: tuple[str, ...] = ("rewrite_score", "paraphrase_score", "neighborhood_score", "overall_score",
                             "essence_score")
OUTCOME_NAMES: dict[str, str] = {
    "rewrite_score": "rewrite score", "paraphrase_score": "paraphrase score",
    "neighborhood_score": "neighborhood score", "overall_score": "overall score (mean of 3)",
    "overall_essence_score": "overall + essence (mean of 4)", "essence_score": "essence score",
}
EFFECT_NAMES: dict[str, str] = {
    "te": "tracing effect (max-token fraction restored)",
    "te_clean": "tracing effect (fraction of p_clean)",
    "te_last": "tracing effect at last subject token (fraction)",
    "abs_effect": "absolute tracing effect (max over tokens)",
    "abs_last": "absolute effect at last subject token",
    "z_subject": "zeroing effect (max over subject tokens)",
    "z_all": "zeroing effect (max over all tokens)",
}

_METHOD_ALIASES = {"ft1": "FT-1", "ft5": "FT-5", "rome": "ROME", "memit": "MEMIT", "memit5": "MEMIT"}
_PROBLEM_ALIASES = {
    "ei": "EI", "errorinjection": "EI", "tr": "TR", "tracingreversal": "TR", "fe": "FE", "facterasure": "FE",
    "fa": "FA", "factamplification": "FA", "ff": "FF", "factforcing": "FF",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def method_label(name: str) -> str:
    """Canonical method label ("ft_1" -> "FT-1"); unknown names unchanged."""
    return _METHOD_ALIASES.get(_key(name), str(name))


def problem_label(name: str) -> str:
    """Canonical problem label ("fact_forcing" -> "FF"); unknown names unchanged."""
    return _PROBLEM_ALIASES.get(_key(name), str(name))


def ordered(values: Iterable[str], order: tuple[str, ...]) -> list[str]:
    """Distinct values in paper order, unknown ones after the known ones, alphabetically."""
    distinct = set(values)
    known = [v for v in order if v in distinct]
    return known + sorted(distinct - set(order))
