"""Edit-score formulas (docs/algorithms.md#metrics), on plain numbers so each can be checked by hand, and the registry
of the score columns of the "edits" table.

``pre`` / ``post`` are joint target probabilities (docs/algorithms.md#target-probability) before and after the edit. Each score column is a
:class:`Metric` in :data:`METRICS`, with its label, its heading in the mean-score table and whether the
analysis regresses it on layer and tracing effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from locedit.registry import Registry

REWRITE_FLOOR = 2e-8  # the reference floors non-improving rewrites at 2e-8 (docs/algorithms.md#reference-deviations)
ESSENCE_CAP = 5.0  # perplexity increase that gives essence score 0


def rewrite_score(pre: float, post: float) -> float:
    """max(2e-8, (Q - P) / (1 - P)): the share of the possible rise that the edit achieved
    (docs/algorithms.md#normalized-scores).

    P = 1 (nothing left to gain) scores as the floor unless Q also equals 1.
    """
    room = 1.0 - pre
    if room <= 0.0:
        return 1.0 if post >= pre else REWRITE_FLOOR
    return max(REWRITE_FLOOR, (post - pre) / room)


def erasure_score(pre: float, post: float) -> float:
    """max(0, (P - Q) / P): the erased proportion of p(o_true) (Fact Erasure, docs/algorithms.md#normalized-scores); 0
    when P = 0."""
    if pre <= 0.0:
        return 0.0
    return max(0.0, (pre - post) / pre)


def neighborhood_score(pre: float, post: float) -> float:
    """1 - |Q - P| / (0.5 + |P - 0.5|): 1 = unchanged, 0 = moved as far as possible from P
    (docs/algorithms.md#normalized-scores)."""
    return 1.0 - abs(post - pre) / (0.5 + abs(pre - 0.5))


def essence_score(ppl_pre: float, ppl_post: float) -> float:
    """1 - min(max(ppl_post - ppl_pre, 0), 5) / 5 (docs/algorithms.md#essence-score)."""
    return 1.0 - min(max(ppl_post - ppl_pre, 0.0), ESSENCE_CAP) / ESSENCE_CAP


def mean_of(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are present (None and NaN are skipped); None when none are."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None


def overall_score(rewrite: float | None, paraphrase: float | None, neighborhood: float | None) -> float | None:
    """Mean of the three scores (docs/algorithms.md#overall-score); a score that could not be computed (no paraphrase)
    is left out."""
    return mean_of((rewrite, paraphrase, neighborhood))


def overall_essence_score(rewrite: float | None, paraphrase: float | None, neighborhood: float | None,
                          essence: float | None) -> float | None:
    """Mean of the three scores and the essence score (docs/algorithms.md#overall-score, Fig. 9 right)."""
    return mean_of((rewrite, paraphrase, neighborhood, essence))


def rome_success_magnitude(logp_new: Sequence[float], logp_base: Sequence[float], *,
                           neighborhood: bool = False) -> tuple[float | None, float | None]:
    """Original ROME metrics over a prompt list (docs/algorithms.md#original-rome-metrics): mean of [p_new > p_base]
    and of p_new - p_base.

    For neighborhood prompts both are taken the other way round (the baseline should stay ahead).
    Success compares log-probabilities, as the reference compares summed NLLs.
    """
    if len(logp_new) != len(logp_base):
        raise ValueError("logp_new and logp_base must have the same length")
    if not logp_new:
        return None, None
    sign = -1.0 if neighborhood else 1.0
    success = [float(sign * (n - b) > 0) for n, b in zip(logp_new, logp_base)]
    magnitude = [sign * (math.exp(n) - math.exp(b)) for n, b in zip(logp_new, logp_base)]
    return sum(success) / len(success), sum(magnitude) / len(magnitude)


@dataclass(frozen=True)
class Metric:
    """A score column of the "edits" table.

    ``label`` names it in tables and figures; ``heading``, if set, is its column in the mean-score table;
    ``outcome``: the analysis fits the paper's regressions to it (docs/algorithms.md#regressions); ``sampled``: it is computed on
    texts sampled from the model and is missing when a sweep runs without them (essence).
    """

    name: str
    label: str
    heading: str | None = None
    outcome: bool = False
    sampled: bool = False


METRICS: Registry[Metric] = Registry("metric")
for _m in (
        Metric("rewrite_score", "rewrite score", "rewrite", outcome=True),
        Metric("paraphrase_score", "paraphrase score", "paraphrase", outcome=True),
        Metric("neighborhood_score", "neighborhood score", "neighborhood", outcome=True),
        Metric("essence_score", "essence score", "essence", outcome=True, sampled=True),
        Metric("overall_score", "overall score (mean of 3)", "overall", outcome=True),
        Metric("overall_essence_score", "overall + essence (mean of 4)", sampled=True),
        Metric("rome_rewrite_success", "efficacy success (original ROME metric)", "efficacy success"),
        Metric("rome_rewrite_magnitude", "efficacy magnitude (original ROME metric)"),
        Metric("rome_paraphrase_success", "paraphrase success (original ROME metric)"),
        Metric("rome_paraphrase_magnitude", "paraphrase magnitude (original ROME metric)"),
        Metric("rome_neighborhood_success", "neighborhood success (original ROME metric)"),
        Metric("rome_neighborhood_magnitude", "neighborhood magnitude (original ROME metric)")):
    METRICS.register(_m)
