"""Evaluation of edits: target probabilities, normalized scores, essence score (docs/algorithms.md#metrics)."""

from locedit.evaluate.evaluation import Evaluation, edit_scores, evaluate_state, rome_metrics
from locedit.evaluate.evaluator import Evaluator

__all__ = ["Evaluation", "Evaluator", "edit_scores", "evaluate_state", "rome_metrics"]
