"""The edit API: rows with the schema's columns, exact restoration and its check, caching, bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from locedit.data.fact import Fact
from locedit.study.session import (EDIT_COLUMNS, EditSession, SessionSettings, _checksums, _restored, default_layer, edit,
                              edit_and_evaluate, session_for, store_row)
from locedit.study.edit_row import EditRow
from locedit.edit.handle import EditHandle, snapshot, weights_equal
from locedit.experiment.schema import TABLES
from locedit.models.families import family_for

FACT = Fact(case_id=11, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is",
            target_true="French", target_new="English", paraphrase_prompts=("Danielle Darrieux grew up speaking",),
            neighborhood_prompts=("The mother tongue of Léon Blum is",))
LOOSE = {"norm_constraint": 0.05}


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


@pytest.mark.embedded
def test_rome_error_injection_on_the_embedded_model(embedded):
    model, tok = embedded
    session = EditSession(model, tok, SessionSettings(essence=False))
    snap = {n: p.detach().clone() for n, p in model.named_parameters() if ".mlp.down_proj" in n}
    row = session.edit_and_evaluate(FACT, "rome", 12, "error-injection")
    assert row.weights_restored
    assert all(torch.equal(p, snap[n]) for n, p in model.named_parameters() if n in snap)
    assert row.rewrite_pre < 0.2 and row.rewrite_score > 0.9 and row.neighborhood_score > 0.8
