"""Rank-one edits evaluated as activation edits, B facts per forward (:mod:`locedit.models.low_rank`).

The primitive lives in ``models/`` because MEMIT's batched step B (``edit/``) runs on it too; evaluation
takes it from there under the same names.
"""

from locedit.models.low_rank import Factors, LowRank, factors_by_layer, rank_one_edits

__all__ = ["Factors", "LowRank", "factors_by_layer", "rank_one_edits"]
