"""The sweep engine and the experiment runner on tiny models: resume, failures, seeding, unit planning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from locedit.experiment.config import parse_config
from locedit.experiment.store import Store
from locedit.experiment.sweep import Unit, run_units


def _random_edit_row(case_id: int, layer: int) -> dict:
    """A unit whose numbers depend on the RNG state, as real edits do (sampling, noise)."""
    return {"case_id": case_id, "method": "rome", "problem": "error-injection", "layer": layer,
            "rewrite_score": float(torch.rand(1)), "paraphrase_score": float(np.random.rand())}


def _units(n: int, calls: list[str], fail: set[str] = frozenset()) -> list[Unit]:
    def work(name: str, layer: int):
        calls.append(name)
        if name in fail:
            raise RuntimeError(f"boom in {name}\nsecond line")
        return {"edits": [_random_edit_row(0, layer)]}

    return [Unit(f"u{i}", "edit", 0, lambda i=i: work(f"u{i}", i)) for i in range(n)]


def test_completed_units_are_skipped(tmp_path):
    calls: list[str] = []
    with Store(tmp_path) as store:
        first = run_units(store, _units(3, calls)[:2], seed=0)
        second = run_units(store, _units(3, calls), seed=0)
        assert (first.done, second.done, second.skipped) == (2, 1, 2)
        assert calls == ["u0", "u1", "u2"]
        assert store.count("edits") == 3


def test_failures_are_recorded_counted_and_retried(tmp_path):
    calls: list[str] = []
    with Store(tmp_path) as store:
        s = run_units(store, _units(3, calls, fail={"u1"}), seed=0)
        assert (s.done, s.failed) == (2, 1)
        assert s.errors[0][0] == "u1" and s.errors[0][1].startswith("RuntimeError: boom in u1 [")
        assert store.rows("failures")[0]["unit"] == "u1"
        assert store.count("edits") == 2
        retry = run_units(store, _units(3, calls), seed=0)
        assert (retry.done, retry.skipped, retry.failed) == (1, 2, 0)
        assert store.rows("failures") == []


def test_each_unit_starts_from_the_seed(tmp_path):
    """A resumed sweep gives the same numbers as an uninterrupted one."""
    with Store(tmp_path / "a") as a:
        run_units(a, _units(4, []), seed=7)
        whole = a.rows("edits", "ORDER BY layer")
    with Store(tmp_path / "b") as b:
        run_units(b, _units(4, [])[2:], seed=7)
        run_units(b, _units(4, []), seed=7)
        resumed = b.rows("edits", "ORDER BY layer")
    assert whole == resumed
    assert whole[0]["rewrite_score"] == whole[1]["rewrite_score"]  # same seed at every unit start
    with Store(tmp_path / "c") as c:
        run_units(c, _units(1, []), seed=8)
        assert c.rows("edits")[0]["rewrite_score"] != whole[0]["rewrite_score"]


def test_edit_eligibility_follows_the_filters():
    from locedit.experiment.worker import edit_eligible

    cfg = parse_config({"model": {"name": "tiny:llama"}})
    known = {"case_id": 3, "is_correct": True, "passes_erasure_filter": False}
    assert edit_eligible(cfg, known, "rome", "error-injection")
    assert not edit_eligible(cfg, known, "rome", "fact-erasure")
    assert not edit_eligible(cfg, {**known, "is_correct": False}, "rome", "error-injection")
    assert not edit_eligible(cfg, {**known, "case_id": 1531}, "ft-1", "error-injection")
    assert not edit_eligible(cfg, {**known, "case_id": 1517}, "memit", "error-injection")
    assert not edit_eligible(cfg, {**known, "case_id": 1517}, "rome", "tracing-reversal")
    assert edit_eligible(cfg, {**known, "case_id": 1517}, "rome", "error-injection")
    lenient = parse_config({"data": {"correctness_filter": False, "compat_skips": False}})
    assert edit_eligible(lenient, {**known, "case_id": 1531, "is_correct": False}, "rome", "error-injection")


def test_a_sweep_abort_stops_the_sweep_and_keeps_completed_units(tmp_path):
    from locedit.experiment.sweep import SweepAbort

    def bad():
        raise SweepAbort("weights not restored")

    units = _units(2, []) + [Unit("bad", "edit", 0, bad)] + _units(4, [])[2:]
    with Store(tmp_path) as store:
        with pytest.raises(SweepAbort):
            run_units(store, units, seed=0)
        assert store.completed_units() == {"u0", "u1"}


def test_grouped_edits_give_the_results_of_one_edit_at_a_time(tmp_path, one_thread):
    """Every edit starts from the seed and a group is computed exactly (prefix reuse, batched δ, rank-one
    evaluation), so handing edits out in groups changes nothing beyond float rounding."""
    import json

    from locedit.experiment.runner import run_experiment
    from test_resume_kill import FACTS, assert_tables_equal, exact_tables

    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS]))
    fast = {"rome": {"v_num_grad_steps": 3}, "ft-1": {"num_steps": 3}}
    runs = {}
    for batch_size in (1, 3):
        cfg = parse_config({"name": "grouped", "model": {"name": "tiny:llama"},
                            "data": {"source": str(facts), "correctness_filter": False},
                            "localize": {"enabled": False},
                            "edit": {"methods": list(fast), "problems": ["error-injection", "tracing-reversal"],
                                     "layers": [1, 4], "essence": False, "batch_size": batch_size, "hparams": fast},
                            "stats": {"n_tokens": 2000}, "analysis": {"analyze": False, "report": False}})
        runs[batch_size] = tmp_path / f"batch{batch_size}"
        result = run_experiment(cfg, runs[batch_size], progress=False)
        assert (result.editing.done, result.editing.failed) == (len(FACTS) * 2 * 2 * 2, 0)
    assert_tables_equal(exact_tables(runs[1]), exact_tables(runs[3]), atol=1e-6)


def test_the_backend_and_batch_size_are_not_part_of_the_config_hash():
    plain = parse_config({"model": {"name": "tiny:llama"}})
    on_ray = parse_config({"model": {"name": "tiny:llama"}, "run": {"backend": "ray"}, "edit": {"batch_size": 1}})
    assert (on_ray.run.backend, on_ray.edit.batch_size) == ("ray", 1)
    assert on_ray.hash() == plain.hash()
    assert parse_config({"model": {"name": "tiny:llama"}, "edit": {"layers": [1]}}).hash() != plain.hash()
