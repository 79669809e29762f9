"""Which facts an experiment uses (docs/algorithms.md#selection): source, first N, explicit ids, shipped known ids,
limit.

The model-dependent filters (correctness, Fact Erasure probability) are not applied here: they run once
per fact inside its trace unit and are cached in the ``facts`` table.
"""

from __future__ import annotations

from locedit.data import Fact, load_demo_facts, load_facts
from locedit.data.known import load_known_ids
from locedit.data.validation import DataError
from locedit.experiment.config import ConfigError, DataConfig, data_paths


def known_case_ids(model_name: str = "smollm2-135m") -> set[int]:
    """The CounterFact case ids ``model_name`` knows, from the list shipped for it (``locedit data known``)."""
    try:
        return {int(i) for i in load_known_ids(model_name=model_name)["case_ids"]}
    except DataError as e:
        raise ConfigError(f"data.known_only: {e}") from None


def select_facts(data: DataConfig, model_name: str = "smollm2-135m") -> list[Fact]:
    """The candidate facts in case_id order; raises when the selection is empty or names missing ids.

    ``model_name`` picks the shipped known-ids list that ``data.known_only`` reads.
    """
    paths = data_paths(data.source)
    facts = load_demo_facts() if paths is None else load_facts(paths if len(paths) > 1 else paths[0])
    facts = sorted(facts, key=lambda f: f.case_id)
    if data.first_n is not None:
        facts = facts[: data.first_n]
    if data.case_ids is not None:
        by_id = {f.case_id: f for f in facts}
        missing = [i for i in data.case_ids if i not in by_id]
        if missing:
            raise ConfigError(f"data.case_ids: {missing[:5]} not in the selected records; check first_n and the source")
        facts = [by_id[i] for i in sorted(set(data.case_ids))]
    if data.known_only:
        known = known_case_ids(model_name)
        facts = [f for f in facts if f.case_id in known]
    if data.limit is not None:
        facts = facts[: data.limit]
    if not facts:
        raise ConfigError("the data selection is empty; widen data.first_n / case_ids or drop known_only")
    return facts
