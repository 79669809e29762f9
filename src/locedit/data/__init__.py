"""Data: the Fact record, dataset loaders and validation, the knowledge filters, the shipped demo facts."""

from locedit.data.fact import Fact, adhoc_fact
from locedit.data.filters import CorrectnessResult, correctness_filter, erasure_filter
from locedit.data.loaders import (
    FORMATS,
    default_dataset,
    load_counterfact_mend,
    load_counterfact_rome,
    load_demo_facts,
    load_facts,
    load_facts_with_report,
    load_known_1000,
    load_zsre_mend,
)
from locedit.data.validation import DataError, LoadReport

__all__ = [
    "CorrectnessResult", "DataError", "FORMATS", "Fact", "LoadReport", "adhoc_fact", "default_dataset", "load_counterfact_mend",
    "load_counterfact_rome", "load_demo_facts", "load_facts", "load_facts_with_report", "load_known_1000",
    "load_zsre_mend", "correctness_filter", "erasure_filter",
]
