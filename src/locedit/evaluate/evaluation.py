"""One evaluation of a model state for a prepared edit (docs/algorithms.md#target-probability, #normalized-scores,
#metrics), and the scores of a pre/post pair.

:func:`evaluate_state` scores every evaluation prompt (rewrite, paraphrases, neighborhoods, attributes)
against ``target_new`` and ``request_baseline`` in **one** right-padded batch, interleaved
(prompt 0 / target_new, prompt 0 / baseline, prompt 1 / target_new, ...) as the reference does. Under
Fact Forcing each row's own subject span is noised with a stream re-seeded to 1 at every call, so a pre-
and a post-edit evaluation see identical noise. :func:`edit_scores` turns two evaluations into the
"edits" table's metric columns.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.edit.problems import PreparedEdit
from locedit.evaluate import metrics
from locedit.evaluate.essence import essence_perplexity
from locedit.models.noise import SubjectNoise, noised_subject
from locedit.models.scoring import target_log_probs
from locedit.models.tokens import Spacing, subject_spans

GROUPS = ("rewrite", "paraphrase", "neighborhood", "attribute")


def eval_prompts(prepared: PreparedEdit) -> dict[str, tuple[str, ...]]:
    """The evaluation prefixes of a prepared edit, by group."""
    f = prepared.fact
    return {"rewrite": (f.prompt,), "paraphrase": f.paraphrase_prompts, "neighborhood": f.neighborhood_prompts,
            "attribute": f.attribute_prompts}


@dataclass(frozen=True)
class Evaluation:
    """Log-probabilities of target_new and request_baseline for every evaluation prompt of one model state."""

    logp_new: dict[str, tuple[float, ...]]
    logp_base: dict[str, tuple[float, ...]]
    essence_ppl: float | None
    seconds: float

    def probs(self, group: str) -> list[float]:
        """Joint probabilities of target_new for the group's prompts."""
        return [math.exp(v) for v in self.logp_new[group]]


def scored_pairs(prepared: PreparedEdit) -> tuple[list[str], list[str]]:
    """(prefixes, targets) of every scored row, interleaved: prompt 0 / target_new, prompt 0 / baseline, ..."""
    groups = eval_prompts(prepared)
    prefixes = [p for g in GROUPS for p in groups[g] for _ in (0, 1)]
    targets = [t for g in GROUPS for _ in groups[g] for t in (prepared.target_new, prepared.request_baseline)]
    return prefixes, targets


def prompt_noise(tok: PreTrainedTokenizerBase, prepared: PreparedEdit, prefixes: Sequence[str]) -> SubjectNoise | None:
    """Fact Forcing's evaluation noise for the rows of ``prefixes`` (None for the other problems).

    A fresh stream per call (seed 1): paired pre/post noise. Neighborhood prompts name another subject
    and stay clean (docs/algorithms.md#normalized-scores).
    """
    if prepared.eval_sigma is None:
        return None
    noise = SubjectNoise(prepared.eval_sigma, seed=1)
    noise.spans = subject_spans(tok, prefixes, prepared.fact.subject)
    return noise


def split_log_probs(prepared: PreparedEdit, values: Sequence[float]) -> tuple[dict, dict]:
    """(logp_new, logp_base) by group from the interleaved row values of :func:`scored_pairs`."""
    groups = eval_prompts(prepared)
    logp_new: dict[str, tuple[float, ...]] = {}
    logp_base: dict[str, tuple[float, ...]] = {}
    i = 0
    for g in GROUPS:
        n = len(groups[g])
        logp_new[g] = tuple(values[i: i + 2 * n: 2])
        logp_base[g] = tuple(values[i + 1: i + 2 * n: 2])
        i += 2 * n
    return logp_new, logp_base


def evaluate_state(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prepared: PreparedEdit, *,
                   essence_texts: Sequence[str] | None = None, spacing: Spacing = "fixed") -> Evaluation:
    """Score the current model state for ``prepared`` (one forward for all prompts, plus essence texts)."""
    start = time.perf_counter()
    prefixes, targets = scored_pairs(prepared)
    with noised_subject(model, prompt_noise(tok, prepared, prefixes)):
        logps = target_log_probs(model, tok, prefixes, targets, spacing=spacing, batch_size=max(1, len(prefixes)))
    logp_new, logp_base = split_log_probs(prepared, logps.tolist())
    ppl = None
    if essence_texts:
        ppl = essence_perplexity(model, tok, essence_texts, noise_sigma=prepared.eval_sigma,
                                 subject=prepared.fact.subject)
    return Evaluation(logp_new, logp_base, ppl, time.perf_counter() - start)


def _first_or_mean(values: Sequence[float], average: bool) -> float | None:
    if not values:
        return None
    return sum(values) / len(values) if average else values[0]


def _group_score(pre: Sequence[float], post: Sequence[float], fn, average: bool) -> float | None:
    """Score of the first prompt (compat), or the mean of per-prompt scores (``average``)."""
    if not pre:
        return None
    per = [fn(p, q) for p, q in zip(pre, post)]
    return _first_or_mean(per, average)


def rome_metrics(ev: Evaluation) -> dict[str, float | None]:
    """Original ROME success / magnitude for rewrite, paraphrase and neighborhood prompts
    (docs/algorithms.md#original-rome-metrics)."""
    out: dict[str, float | None] = {}
    for g in ("rewrite", "paraphrase", "neighborhood"):
        s, m = metrics.rome_success_magnitude(ev.logp_new[g], ev.logp_base[g], neighborhood=(g == "neighborhood"))
        out[f"rome_{g}_success"], out[f"rome_{g}_magnitude"] = s, m
    return out


def edit_scores(prepared: PreparedEdit, pre: Evaluation, post: Evaluation, *, average: bool = False) -> dict:
    """The metric columns of an "edits" row from a pre- and a post-edit evaluation.

    ``average`` False (compat) scores only the first paraphrase and neighborhood prompt
    (docs/algorithms.md#reference-deviations);
    True averages per-prompt scores, and the reported probabilities, over all of them.
    """
    main = metrics.erasure_score if prepared.erasure else metrics.rewrite_score
    row: dict = {}
    for g, fn in (("rewrite", main), ("paraphrase", main), ("neighborhood", metrics.neighborhood_score)):
        p, q = pre.probs(g), post.probs(g)
        row[f"{g}_pre"] = _first_or_mean(p, average)
        row[f"{g}_post"] = _first_or_mean(q, average)
        row[f"{g}_score"] = _group_score(p, q, fn, average)
    row["essence_ppl_pre"], row["essence_ppl_post"] = pre.essence_ppl, post.essence_ppl
    row["essence_score"] = (metrics.essence_score(pre.essence_ppl, post.essence_ppl)
                            if pre.essence_ppl is not None and post.essence_ppl is not None else None)
    three = (row["rewrite_score"], row["paraphrase_score"], row["neighborhood_score"])
    row["overall_score"] = metrics.overall_score(*three)
    row["overall_essence_score"] = metrics.overall_essence_score(*three, row["essence_score"])
    row.update(rome_metrics(post))
    return row
