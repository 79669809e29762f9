"""The edit API: rows with the schema's columns, exact restoration and its check, caching, bad input."""

from __future__ import annotations

from dataclasses import replace

import math

import pytest
import torch

from locedit.data.fact import Fact
from locedit.study.session import (EDIT_COLUMNS, EditOutcome, EditSession, SessionSettings, _checksums, _restored,
                                   default_layer, edit, edit_and_evaluate, edit_and_evaluate_many, session_for,
                                   store_row)
from locedit.study.edit_row import EditRow
from locedit.edit.handle import EditHandle, snapshot, weights_equal
from locedit.edit.methods import get_method
from locedit.evaluate.metrics import ESSENCE_CAP
from locedit.experiment.schema import TABLES
from locedit.models import tiny
from locedit.models.families import family_for

FACT = Fact(case_id=11, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is",
            target_true="French", target_new="English", paraphrase_prompts=("Danielle Darrieux grew up speaking",),
            neighborhood_prompts=("The mother tongue of Léon Blum is",))
LOOSE = {"norm_constraint": 0.05}
OTHER = Fact(case_id=14, subject="Vladimir Putin", prompt="The native language of Vladimir Putin is",
             target_true="Russian", target_new="French", paraphrase_prompts=("Vladimir Putin grew up speaking",),
             neighborhood_prompts=("Leo Tolstoy spoke", "The native language of Leo Tolstoy is"))
FAILS_TO_PREPARE = replace(FACT, case_id=15, target_new="French")  # Error Injection needs a different target
FAILS_TO_EDIT = replace(FACT, case_id=16, subject="Marie Curie")  # not in the prompt


def _fast(method: str, corpus_file) -> dict:
    stats = {"mom2_corpus": str(corpus_file), "mom2_n_tokens": 1500}
    return {"rome": {"v_num_grad_steps": 6, **stats}, "memit": {"v_num_grad_steps": 6, "mom2_update_weight": 50.0, **stats},
            "ft-1": {**LOOSE, "num_steps": 5}}[method]


def test_row_has_exactly_the_edits_columns_and_weights_come_back(tiny_llama):
    model, tok = tiny_llama
    snap = snapshot(model)
    row = edit_and_evaluate(model, tok, FACT, "ft-5", 2, "error-injection", hparams=LOOSE, essence=False)
    assert isinstance(row, EditRow) and list(row.as_dict()) == [*TABLES["edits"], "weights_restored"]
    assert row.weights_restored is True and weights_equal(model, snap)
    assert row.layers == (0, 1, 2, 3, 4) and row.layer == 2 and row.case_id == 11
    assert row.target_new == "English" and row.request_baseline == "French"
    assert row.rewrite_post > row.rewrite_pre and row.edit_seconds > 0 and row.eval_seconds > 0
    stored = store_row(row)
    assert list(stored) == list(EDIT_COLUMNS) and stored == row.as_row() and stored["layers"] == [0, 1, 2, 3, 4]
    assert all(stored[c] == row.scores[c] for c in row.scores) and stored["essence_score"] is None
    assert row.essence_score is None and row.rewrite_score == row.scores["rewrite_score"]


def test_edit_handle_applies_and_restores(tiny_gpt2):
    model, tok = tiny_gpt2
    snap = snapshot(model)
    with edit(model, tok, FACT, "ft-1", 3, hparams=LOOSE) as handle:
        assert handle.layers == [3] and not weights_equal(model, snap)
    assert weights_equal(model, snap)
    assert default_layer(model) == family_for(model).n_layers(model) * 2 // 5


def test_restoration_check_detects_a_broken_restore(tiny_gpt2):
    model, _ = tiny_gpt2
    name = f"{family_for(model).down_name(1)}.weight"
    param = dict(model.named_parameters())[name]
    before = _checksums(model, [1])
    delta = torch.full_like(param, 1e-3)
    handle = EditHandle(model, {name: delta}, layers=[1])
    assert not _restored(model, before, handle)  # still applied
    handle.restore()
    assert _restored(model, before, handle)
    with torch.no_grad():
        param.view(-1)[5] += 1e-4  # a restore that missed one element
    assert not _restored(model, before, handle)
    with torch.no_grad():
        param.view(-1)[5] -= 1e-4
    other = EditHandle(model, {f"{family_for(model).down_name(4)}.weight": torch.zeros_like(param)})
    other.restore()
    assert not _restored(model, before, other)  # touched a tensor that was not checked


def test_pre_edit_evaluation_is_shared_across_layers_and_methods(tiny_llama):
    model, tok = tiny_llama
    session = session_for(model, tok, essence=False)
    assert session is session_for(model, tok, essence=False)
    assert session is not session_for(model, tok, essence=False, average=True)
    fact = replace(FACT, case_id=12)
    first = session.run(fact, "ft-1", 1, "fact-amplification", LOOSE)
    second = session.run(fact, "ft-5", 4, "fact-amplification", LOOSE)
    assert second.pre is first.pre and first.row.rewrite_pre == second.row.rewrite_pre
    assert first.post is not second.post


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="ft-1", layer=6), "layer 6 is out of range"),
    (dict(method="ft-1", layer=-1), "layer -1 is out of range"),
    (dict(method="bogus", layer=1), "unknown editing method 'bogus'"),
    (dict(method="ft-1", layer=1, problem="flip"), "unknown editing problem 'flip'"),
    (dict(method="ft-1", layer=1, hparams={"nope": 1}), "unknown ft-1 hyperparameter"),
])
def test_bad_input_is_a_one_line_value_error(tiny_llama, kwargs, message):
    model, tok = tiny_llama
    with pytest.raises(ValueError, match=message) as err:
        edit_and_evaluate(model, tok, FACT, essence=False, **kwargs)
    assert "\n" not in str(err.value)


def test_error_injection_needs_a_different_target(tiny_llama):
    model, tok = tiny_llama
    snap = snapshot(model)
    with pytest.raises(ValueError, match="equals the true target"):
        edit_and_evaluate(model, tok, replace(FACT, target_new="French"), "ft-1", 1, essence=False)
    assert weights_equal(model, snap)


def _row(**fields) -> EditRow:
    return EditRow(**{"case_id": 1, "method": "rome", "problem": "error-injection", "layer": 3, "layers": [3],
                      "target_new": "x", "request_baseline": "y", **fields})


def test_store_row_refuses_unrestored_weights():
    with pytest.raises(RuntimeError, match="did not restore"):
        store_row(_row(weights_restored=False))


def test_edit_row_is_frozen_and_checks_its_columns():
    row = _row(scores={"rewrite_score": 0.5})
    assert row.layers == (3,) and row.as_row()["rewrite_score"] == 0.5 and row.as_row()["paraphrase_score"] is None
    assert row.paraphrase_score is None
    with pytest.raises(AttributeError, match="no attribute 'rewrite_scor'"):
        row.rewrite_scor
    with pytest.raises(Exception, match="cannot assign"):
        row.layer = 4
    with pytest.raises(ValueError, match=r"\['bogus_score'\] are not columns"):
        _row(scores={"bogus_score": 1.0})


def assert_rows_equal(row: EditRow, ref: EditRow, tol: float = 1e-5) -> None:
    """Every column equal (floats to ``tol``) but the timings. The essence score is a difference of perplexities
    over ESSENCE_CAP: with both perplexities within ``tol`` (relative), it is within 2 ``tol`` ppl / ESSENCE_CAP,
    which a random model's perplexity in the thousands makes larger than ``tol``."""
    assert row.as_row().keys() == ref.as_row().keys() and set(row.scores) == set(ref.scores)
    ppl = max(ref.essence_ppl_pre or 0.0, ref.essence_ppl_post or 0.0)
    for column, value in ref.as_row().items():
        if column in ("edit_seconds", "eval_seconds"):
            continue
        if isinstance(value, float):
            derived = column in ("essence_score", "overall_essence_score")
            bound = max(tol, 2 * tol * ppl / ESSENCE_CAP) if derived else tol
            assert math.isclose(row.as_row()[column], value, rel_tol=tol, abs_tol=bound), column
        else:
            assert row.as_row()[column] == value, column


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["rome", "memit", "ft-1"])
@pytest.mark.parametrize("problem", ["error-injection", "fact-erasure"])
def test_run_many_rows_equal_run_one_by_one(family, method, problem, corpus_file, one_thread):
    model, tok = tiny(family)
    snap = snapshot(model)
    facts = [FACT, FAILS_TO_EDIT, OTHER] + ([FAILS_TO_PREPARE] if problem == "error-injection" else [])
    hp = _fast(method, corpus_file)
    reseeds = []
    many = EditSession(model, tok).run_many(facts, method, 2, problem, hp,
                                            reseed=lambda: reseeds.append(torch.manual_seed(0)))
    one = EditSession(model, tok)
    assert len(many) == len(facts) and isinstance(many[1], ValueError) and "Marie Curie" in str(many[1])
    if problem == "error-injection":
        assert isinstance(many[3], ValueError) and "equals the true target" in str(many[3])
    for fact, outcome in ((facts[0], many[0]), (facts[2], many[2])):
        torch.manual_seed(0)
        ref = one.run(fact, method, 2, problem, hp)
        assert isinstance(outcome, EditOutcome) and outcome.row.weights_restored
        assert_rows_equal(outcome.row, ref.row)
        assert outcome.row.edit_seconds > 0 and outcome.row.eval_seconds > outcome.post.seconds > 0
        assert outcome.row.rewrite_score != outcome.row.rewrite_pre  # the edit changed something
    joint = get_method(method).compute_many is not None
    assert len(reseeds) == len(facts) + (1 if joint else 3)  # each preparation, each edit computed alone
    if method != "ft-1":  # rank-one: post-evaluated together, each fact gets its share of the batch's seconds
        assert many[0].post.seconds == many[2].post.seconds
    assert weights_equal(model, snap)


def test_run_many_with_noised_edits_and_module_level_rows(tiny_llama, corpus_file):
    model, tok = tiny_llama
    snap = snapshot(model)
    hp = _fast("rome", corpus_file)
    rows = edit_and_evaluate_many(model, tok, [FACT, OTHER], "rome", 3, "fact-forcing", hp, essence=False)
    session = EditSession(model, tok, SessionSettings(essence=False))
    for fact, row in zip([FACT, OTHER], rows):
        assert_rows_equal(row, session.edit_and_evaluate(fact, "rome", 3, "fact-forcing", hp))
    assert rows[0].problem == "fact-forcing" and weights_equal(model, snap)
    assert edit_and_evaluate_many(model, tok, [], "ft-1", 1, essence=False) == []


@pytest.mark.embedded
def test_rome_error_injection_on_the_embedded_model(embedded):
    model, tok = embedded
    session = EditSession(model, tok, SessionSettings(essence=False))
    snap = {n: p.detach().clone() for n, p in model.named_parameters() if ".mlp.down_proj" in n}
    row = session.edit_and_evaluate(FACT, "rome", 12, "error-injection")
    assert row.weights_restored
    assert all(torch.equal(p, snap[n]) for n, p in model.named_parameters() if n in snap)
    assert row.rewrite_pre < 0.2 and row.rewrite_score > 0.9 and row.neighborhood_score > 0.8


@pytest.mark.embedded
def test_run_many_equals_run_on_the_embedded_model(embedded):
    """ROME at layer 12, two facts: rank-one post-evaluation (essence included) against applied weights."""
    model, tok = embedded
    hp = {"v_num_grad_steps": 5}
    facts = [FACT, OTHER]
    many = EditSession(model, tok).run_many(facts, "rome", 12, "error-injection", hp)
    one = EditSession(model, tok)
    for fact, outcome in zip(facts, many):
        assert isinstance(outcome, EditOutcome) and outcome.row.weights_restored
        assert_rows_equal(outcome.row, one.run(fact, "rome", 12, "error-injection", hp).row)
