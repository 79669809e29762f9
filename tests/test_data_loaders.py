"""Dataset loaders: the real shared files, ROME-format and locedit JSON written here, validation, download."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from locedit.data import (
    DataError,
    Fact,
    load_counterfact_mend,
    load_counterfact_rome,
    load_facts,
    load_facts_with_report,
    load_known_1000,
    load_zsre_mend,
)
from locedit.data import download as dl
from locedit.data.known import SHIPPED_KNOWN_IDS, load_known_ids
from locedit.data.loaders import COUNTERFACT_MEND_FILES, detect_format


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


ROME_RECORDS = [
    {"case_id": 7, "pararel_idx": 1, "requested_rewrite": {
        "prompt": "{}, which is located in", "relation_id": "P17", "subject": "Autonomous University of Madrid",
        "target_new": {"str": "Sweden", "id": "Q34"}, "target_true": {"str": "Spain", "id": "Q29"}},
     "paraphrase_prompts": ["Lyon is a city. Autonomous University of Madrid is located in", "p2"],
     "neighborhood_prompts": ["Biscay, which is located in", "Valencia, which is located in"],
     "attribute_prompts": ["Stockholm is located in"], "generation_prompts": ["g"]},
    {"case_id": 3, "requested_rewrite": {
        "prompt": "The mother tongue of {} is", "relation_id": "P103", "subject": "Danielle Darrieux",
        "target_new": {"str": "English"}, "target_true": {"str": "French"}},
     "paraphrase_prompts": ["Danielle Darrieux spoke"], "neighborhood_prompts": ["Michel Rocard is a native speaker of"]},
]


# ------------------------------------------------------------------------------------------ real files
def test_counterfact_mend_merges_three_files_sorted(shared_data):
    facts = load_counterfact_mend(shared_data)
    assert len(facts) == 21_919
    assert [f.case_id for f in facts] == list(range(21_919))
    first = facts[0]
    assert (first.subject, first.prompt, first.target_true, first.target_new) == (
        "Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "French", "English")
    assert first.template == "The mother tongue of {} is"
    assert first.paraphrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert first.neighborhood_prompts == ("Michel Rocard is a native speaker of",)
    assert first.neighborhood_target == "French"
    assert all(f.template.count("{}") == 1 for f in facts)
    # the same facts from the file list, from the auto-detecting loader, and in any file order
    files = [shared_data / n for n in reversed(COUNTERFACT_MEND_FILES)]
    assert load_counterfact_mend(files)[:50] == facts[:50]
    assert load_facts(shared_data)[-1] == facts[-1]
    assert load_counterfact_mend()[1234] == facts[1234]


def test_zsre_mapping_and_seeded_false_targets(shared_data):
    path = shared_data / "zsre_mend_train_1k.json"
    raw = json.loads(path.read_text())
    facts, report = load_facts_with_report(path)
    assert report.format == "zsre_mend" and report.n_loaded == len(facts) == 1000 and report.n_skipped == 0
    f = facts[0]
    assert f.prompt == "Question: " + raw[0]["src"] + " Answer:"
    assert f.template == "Question: What is the product made by {}? Answer:"
    assert f.target_true == raw[0]["answers"][0]
    assert f.paraphrase_prompts == ("Question: " + raw[0]["rephrase"] + " Answer:",)
    assert f.neighborhood_prompts == ("Question: john goodman's character in the big lebowski? Answer:",)
    assert f.neighborhood_target == raw[0]["loc_ans"]
    firsts = {r["answers"][0] for r in raw}
    assert all(x.target_new in firsts and x.target_new != x.target_true for x in facts)
    again = load_zsre_mend(path)
    assert [x.target_new for x in again] == [x.target_new for x in facts]
    other = load_zsre_mend(path, seed=1)
    assert sum(a.target_new != b.target_new for a, b in zip(other, facts)) > 900


def test_zsre_malformed_records_skipped_and_counted(shared_data, tmp_path):
    raw = json.loads((shared_data / "zsre_mend_train_1k.json").read_text())[:4]
    raw[1] = {**raw[1], "subject": "Nobody In Here"}
    raw[2] = {**raw[2], "src": raw[2]["src"] + " " + raw[2]["subject"]}  # subject twice
    path = write(tmp_path / "z.json", raw)
    facts = load_zsre_mend(path)
    assert [f.case_id for f in facts] == [0, 3]
    _, report = load_facts_with_report(path)
    assert report.skipped == {"subject not exactly once in src": 2}
    with pytest.raises(DataError, match=r"z\.json: record 1: field 'subject'"):
        load_zsre_mend(path, strict=True)


def test_known_1000(shared_data):
    facts = load_known_1000(shared_data / "known_1000.json")
    assert len(facts) == 1209
    assert (facts[0].subject, facts[0].prompt, facts[0].target_true, facts[0].relation_id) == (
        "Vinson Massif", "Vinson Massif is located in the continent of", "Antarctica", "P30")
    assert facts[0].target_new is None


# ------------------------------------------------------------------------------------------ written here
def test_counterfact_rome_format(tmp_path):
    path = write(tmp_path / "counterfact.json", ROME_RECORDS)
    facts = load_counterfact_rome(path)
    assert [f.case_id for f in facts] == [3, 7]
    madrid = facts[1]
    assert madrid.prompt == "Autonomous University of Madrid, which is located in"
    assert madrid.template == "{}, which is located in"
    assert (madrid.target_true, madrid.target_new, madrid.relation_id) == ("Spain", "Sweden", "P17")
    assert madrid.paraphrase_prompts == tuple(ROME_RECORDS[0]["paraphrase_prompts"])
    assert madrid.neighborhood_prompts == tuple(ROME_RECORDS[0]["neighborhood_prompts"])
    assert madrid.neighborhood_target == "Spain" and madrid.attribute_prompts == ("Stockholm is located in",)
    assert facts[0].attribute_prompts == ()
    assert load_facts(tmp_path) == facts  # a folder holding counterfact.json
    assert detect_format(path) == "counterfact_rome"


def test_locedit_json_round_trip(tmp_path):
    facts = load_counterfact_rome(write(tmp_path / "counterfact.json", ROME_RECORDS))
    path = write(tmp_path / "mine.json", [f.to_dict() for f in facts])
    assert load_facts(path) == facts
    assert detect_format(path) == "locedit"


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("prompt"), r"record 1: field 'prompt': missing field"),
    (lambda r: r.update(prompt="Somebody else was born in"), r"record 1: field 'subject': subject not in prompt"),
    (lambda r: r.update(target_true="  "), r"record 1: field 'target_true': empty target"),
    (lambda r: r.update(case_id="4"), r"record 1: field 'case_id': wrong type"),
    (lambda r: r.update(neighborhood_prompts="x"), r"record 1: field 'neighborhood_prompts': wrong type"),
])
def test_strict_names_file_record_and_field(tmp_path, change, message):
    good = Fact(1, "Ada Lovelace", "Ada Lovelace was born in", "London", "Paris").to_dict()
    bad = dict(good, case_id=2)
    change(bad)
    path = write(tmp_path / "facts.json", [good, bad])
    with pytest.raises(DataError, match=r"facts\.json: " + message):
        load_facts(path)
    facts, report = load_facts_with_report(path, strict=False)
    assert [f.case_id for f in facts] == [1]
    assert report.n_records == 2 and report.n_loaded == 1 and report.n_skipped == 1
    assert "record 1" in report.examples[0]


def test_lenient_report_counts_per_reason(tmp_path):
    good = Fact(1, "Ada Lovelace", "Ada Lovelace was born in", "London").to_dict()
    records = [good, dict(good, case_id=2, target_true=""), dict(good, case_id=3, target_true=""),
               dict(good, case_id=4, subject="Bob"), dict(good, case_id=1), 17]
    facts, report = load_facts_with_report(write(tmp_path / "f.json", records), strict=False)
    assert len(facts) == 1
    assert report.skipped == {"empty target": 2, "subject not in prompt": 1, "duplicate case_id": 1,
                              "not an object": 1}
    assert report.n_loaded == 1 and report.to_dict()["n_skipped"] == 5


def test_duplicate_case_ids_across_files_are_an_error(shared_data, tmp_path):
    path = write(tmp_path / "extra.json", json.loads((shared_data / "counterfact_mend_val.json").read_text())[:2])
    with pytest.raises(DataError, match="duplicate case_id"):
        load_counterfact_mend([shared_data / "counterfact_mend_val.json", path])


@pytest.mark.parametrize("content, message", [
    ("{not json", r"bad\.json: not valid JSON"),
    ('{"a": 1}', r"bad\.json: expected a JSON list of records, found a dict"),
    ('[{"question": "q"}]', r"bad\.json: unknown dataset format"),
    ("[]", r"bad\.json: the file holds no records"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(DataError, match=message) as err:
        load_facts(tmp_path / "bad.json")
    assert "\n" not in str(err.value)


def test_missing_paths_and_mixed_formats(tmp_path, shared_data):
    with pytest.raises(DataError, match="no such file"):
        load_facts(tmp_path / "nope.json")
    with pytest.raises(DataError, match="folder holds neither"):
        load_facts(tmp_path)
    rome = write(tmp_path / "counterfact.json", ROME_RECORDS)
    with pytest.raises(DataError, match="cannot be merged"):
        load_facts([rome, shared_data / "known_1000.json"])
    with pytest.raises(DataError, match="expected counterfact_mend records, found counterfact_rome"):
        load_counterfact_mend([rome])


# ------------------------------------------------------------------------------------------ download
def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def test_download_fails_fast_with_local_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(dl.REMOTE, "nowhere", dl.RemoteDataset("nowhere", "https://locedit.invalid/x.json", "x.json"))
    start = time.perf_counter()
    with pytest.raises(dl.DownloadError, match=r"--data PATH or set LOCEDIT_DATA_DIR") as err:
        dl.download("nowhere", timeout=2)
    assert time.perf_counter() - start < 10
    assert "\n" not in str(err.value) and "https://locedit.invalid/x.json" in str(err.value)
    assert list(tmp_path.rglob("*.json")) == [] and list(tmp_path.rglob(".*")) == []  # no temp file left
    with pytest.raises(DataError, match="unknown dataset 'cf'"):
        dl.download("cf")


def test_download_counterfact_offline(tmp_path, monkeypatch):
    if _resolves("rome.baulab.info"):
        pytest.skip("online: this test checks the offline failure")
    monkeypatch.setenv("LOCEDIT_CACHE_DIR", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(dl.DownloadError, match="cannot download counterfact .*LOCEDIT_DATA_DIR"):
        dl.download("counterfact", timeout=3)
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("model", sorted(SHIPPED_KNOWN_IDS))
def test_shipped_known_ids_file(model):
    known = load_known_ids(model_name=model)
    assert known["model"] == model and known["filter"].startswith("correctness-compat")
    ids = known["case_ids"]
    assert known["n_candidates"] == 2000 and ids == sorted(set(ids)) and 0 < len(ids) < 2000 and ids[-1] < 2000
    assert 0 in ids  # "The mother tongue of Danielle Darrieux is" -> French, for both models
    assert set(known["erasure_case_ids"]) <= set(ids)
