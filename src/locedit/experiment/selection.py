"""Which facts an experiment uses (docs/algorithms.md#selection): source, first N, explicit ids, shipped known ids,
limit.

The model-dependent filters (correctness, Fact Erasure probability) are not applied here: they run once
per fact inside its trace unit and are cached in the ``facts`` table.
"""

from __future__ import annotations

import json
from importlib import resources

from locedit.data import Fact, load_demo_facts, load_facts
from locedit.experiment.config import ConfigError, DataConfig, data_paths

KNOWN_IDS_FILE = "smollm2_known_counterfact.json"


def known_case_ids() -> set[int]:
    """The shipped CounterFact case ids SmolLM2-135M knows (the data engineer's list)."""
    path = resources.files("locedit.data").joinpath(KNOWN_IDS_FILE)
    if not path.is_file():
        raise ConfigError(f"data.known_only needs locedit/data/{KNOWN_IDS_FILE}, which is not installed; "
                          "set known_only = false")
    data = json.loads(path.read_text())
    ids = data.get("case_ids", data) if isinstance(data, dict) else data
    return {int(i) for i in ids}


def select_facts(data: DataConfig) -> list[Fact]:
    """The candidate facts in case_id order; raises when the selection is empty or names missing ids."""
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
        known = known_case_ids()
        facts = [f for f in facts if f.case_id in known]
    if data.limit is not None:
        facts = facts[: data.limit]
    if not facts:
        raise ConfigError("the data selection is empty; widen data.first_n / case_ids or drop known_only")
    return facts
