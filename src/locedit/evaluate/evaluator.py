"""An evaluator bound to one model: evaluation settings plus the caches that make sweeps cheap
(docs/algorithms.md#caches).

The pre-edit evaluation depends only on (fact, problem), not on the method or layer, so it is computed
once and kept in memory; essence texts are sampled once per subject (and cached on disk). A sweep keeps
one :class:`Evaluator` per loaded model and reuses it for every edit.
"""

from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.edit.problems import PreparedEdit
from locedit.evaluate.batched import evaluate_states
from locedit.evaluate.essence import ESSENCE_SEED, essence_texts
from locedit.evaluate.evaluation import Evaluation, edit_scores, eval_prompts, evaluate_state
from locedit.evaluate.low_rank import LowRank
from locedit.models.tokens import Spacing


class Evaluator:
    """Pre/post evaluation of edits on one model.

    ``essence``: compute the essence perplexity (5 sampled texts, docs/algorithms.md#essence-score). ``average``:
    average the
    paraphrase/neighborhood scores over all prompts instead of using the first (compat). ``spacing``:
    how targets are prefixed with a space (docs/algorithms.md#tokenization).
    """

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, *, essence: bool = True,
                 average: bool = False, spacing: Spacing = "fixed", essence_seed: int = ESSENCE_SEED,
                 disk_cache: bool = True):
        self.model, self.tok = model, tok
        self.essence, self.average, self.spacing = essence, average, spacing
        self.essence_seed, self.disk_cache = essence_seed, disk_cache
        self._texts: dict[str, list[str]] = {}
        self._pre: dict[tuple, Evaluation] = {}

    def texts(self, subject: str) -> list[str] | None:
        """The subject's essence texts (sampled from the model as it is now: call before editing)."""
        if not self.essence:
            return None
        if subject not in self._texts:
            self._texts[subject] = essence_texts(self.model, self.tok, subject, seed=self.essence_seed,
                                                 use_cache=self.disk_cache)
        return self._texts[subject]

    def _key(self, prepared: PreparedEdit) -> tuple:
        groups = eval_prompts(prepared)
        return (prepared.problem, prepared.fact.case_id, prepared.fact.subject, prepared.target_new,
                prepared.request_baseline, prepared.eval_sigma, tuple(groups.values()))

    def is_cached(self, prepared: PreparedEdit) -> bool:
        return self._key(prepared) in self._pre

    def pre(self, prepared: PreparedEdit) -> Evaluation:
        """The pre-edit evaluation, computed on the first call (the model must be unedited then)."""
        key = self._key(prepared)
        if key not in self._pre:
            self._pre[key] = self.evaluate(prepared)
        return self._pre[key]

    def pre_many(self, prepared: Sequence[PreparedEdit]) -> list[Evaluation]:
        """:meth:`pre` of several edits; those not cached yet are evaluated together (:meth:`evaluate_many`)."""
        todo = {self._key(p): p for p in prepared if not self.is_cached(p)}
        for key, evaluation in zip(todo, self.evaluate_many(list(todo.values()))):
            self._pre[key] = evaluation
        return [self._pre[self._key(p)] for p in prepared]

    def evaluate(self, prepared: PreparedEdit) -> Evaluation:
        """Evaluate the model in its current state (post-edit when called inside an edit)."""
        return evaluate_state(self.model, self.tok, prepared, essence_texts=self.texts(prepared.fact.subject),
                              spacing=self.spacing)

    def evaluate_many(self, prepared: Sequence[PreparedEdit],
                      low_rank: Sequence[LowRank] | None = None) -> list[Evaluation]:
        """:meth:`evaluate` of several edits in shared forwards, edit i under its rank-one factors ``low_rank[i]``
        applied to its own rows only (None: the model in its current state for all)."""
        texts = [self.texts(p.fact.subject) for p in prepared]
        return evaluate_states(self.model, self.tok, prepared, low_rank=low_rank, essence_texts=texts,
                               spacing=self.spacing)

    def scores(self, prepared: PreparedEdit, pre: Evaluation, post: Evaluation) -> dict:
        return edit_scores(prepared, pre, post, average=self.average)

    def clear(self) -> None:
        """Forget cached pre-edit evaluations (e.g. after the model's weights changed for good)."""
        self._pre.clear()
        self._texts.clear()

