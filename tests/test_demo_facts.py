"""The shipped demo facts: well-formed, varied, and known to the embedded model."""

from __future__ import annotations

import pytest

from locedit.data import default_dataset, load_demo_facts
from locedit.data.filters import correctness_filter
from locedit.data.loaders import demo_facts_path, detect_format
from locedit.models.tokens import encode, subject_span, target_ids


def test_demo_facts_are_well_formed_and_varied(tiny_llama):
    _, tok = tiny_llama  # same tokenizer as the embedded model
    facts = load_demo_facts()
    assert detect_format(demo_facts_path()) == "locedit"
    assert default_dataset() == facts
    assert len(facts) >= 40
    assert len({f.case_id for f in facts}) == len(facts)
    assert len({(f.subject, f.prompt) for f in facts}) == len(facts)
    assert len({f.relation_id for f in facts}) >= 10
    for f in facts:
        assert f.target_new and f.target_new.strip().lower() != f.target_true.strip().lower()
        assert f.paraphrase_prompts and all(f.subject in p for p in f.paraphrase_prompts)
        assert f.neighborhood_prompts and all(f.subject not in p for p in f.neighborhood_prompts)
        assert f.neighborhood_target == f.target_true
        assert f.template.count("{}") == 1
        subject_span(tok, f.prompt, f.subject)
    subject_lengths = {len(encode(tok, " " + f.subject)) for f in facts}
    assert min(subject_lengths) == 1 and max(subject_lengths) >= 4
    assert sum(len(target_ids(tok, f.target_true)) > 1 for f in facts) >= 5


@pytest.mark.embedded
def test_every_demo_fact_is_known_to_the_embedded_model(embedded):
    model, tok = embedded
    facts = load_demo_facts()
    result = correctness_filter(model, tok, facts)
    unknown = [(v.case_id, v.target, v.text_compat[:60]) for v in result.verdicts if not v.known("compat")]
    assert unknown == []
    assert result.count("fixed") == len(facts)
