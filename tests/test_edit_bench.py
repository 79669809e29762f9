"""`locedit bench edit --compare`: the one-by-one and batched paths agree, and the report has the promised fields."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from locedit.cli.main import app
from locedit.data.loaders import load_demo_facts
from locedit.study.benchmark import compare_method
from locedit.study.session import SessionSettings

FIELDS = {"oracle_seconds", "fast_seconds", "speedup", "max_rel_diff", "max_score_diff", "fast_gflops_per_s",
          "peak_memory_mib"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method, key", [("rome", "v_star"), ("memit", "z")])
def test_compare_method_finds_equal_vectors_and_scores(method, key, tiny_llama, corpus_file):
    model, tok = tiny_llama
    hp = {"v_num_grad_steps": 4, "mom2_corpus": str(corpus_file), "mom2_n_tokens": 1500,
          **({"mom2_update_weight": 50.0} if method == "memit" else {})}
    facts = load_demo_facts()[:3]
    report = compare_method(model, tok, facts, method, 2, "error-injection", batch=2, hparams=hp,
                            settings=SessionSettings(essence=False))
    assert FIELDS <= set(report) and report["compared"] == 3 and report["oracle_failed"] == report["fast_failed"] == 0
    assert 0 <= report["max_rel_diff"] < 1e-4 and 0 <= report["max_score_diff"] < 1e-5
    assert report["oracle_seconds"] > 0 and report["fast_seconds"] > 0 and report["fast_gflops_per_s"] > 0
    assert report["oracle_gflop_per_edit"] > 0 and report["fast_gflop_per_edit"] > 0
    assert report["speedup"] == pytest.approx(report["oracle_seconds"] / report["fast_seconds"])
    assert min(report["peak_memory_mib"].values()) > 0


def test_bench_edit_compare_through_the_cli():
    result = CliRunner().invoke(app, ["bench", "edit", "--model", "tiny:llama", "--compare", "--batch", "2",
                                      "--batch", "1", "--facts", "2", "--method", "ft-1", "--layer", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["model"] == "tiny:llama" and report["batch"] == 2 and report["facts"] == 2
    assert report["batches"] == [2, 1] and report["matmul_gflops_per_s"] > 0 and list(report["methods"]) == ["ft-1"]
    ft = report["methods"]["ft-1"]
    assert FIELDS <= set(ft) and ft["max_rel_diff"] is None and ft["compared"] == 2
    assert list(ft["by_batch"]) == ["2", "1"] and ft["by_batch"]["2"]["fast_seconds"] == ft["fast_seconds"]
    assert all(b["compared"] == 2 and b["fast_failed"] == 0 for b in ft["by_batch"].values())
    # essence on: FT-1's batched path trains the deltas (the oracle W + Δ), so the float32 rounding of a random
    # model's perplexity in the thousands (about 1e-7 of it) shows; test_ft_batched bounds every column to 1e-4
    # in float64
    ppl = ft["max_score_diff_column"] in ("essence_ppl_pre", "essence_ppl_post")
    assert ft["max_score_diff"] < (1e-2 if ppl else 1e-4)


def test_oracle_facts_times_the_oracle_on_the_first_facts_only(tiny_llama, corpus_file):
    model, tok = tiny_llama
    hp = {"v_num_grad_steps": 2, "mom2_corpus": str(corpus_file), "mom2_n_tokens": 1500}
    report = compare_method(model, tok, load_demo_facts()[:3], "rome", 2, "error-injection", batch=[3, 2],
                            hparams=hp, settings=SessionSettings(essence=False), oracle_facts=1)
    assert report["oracle_facts"] == 1 and report["compared"] == 1
    for figures in report["by_batch"].values():  # speed-up per edit: the oracle's 1 fact against the batched 3
        assert figures["speedup"] == pytest.approx(report["oracle_seconds"] / figures["fast_seconds"])
        assert figures["max_rel_diff"] < 1e-4


def test_bench_edit_rejects_a_bad_batch():
    result = CliRunner().invoke(app, ["bench", "edit", "--model", "tiny:llama", "--compare", "--batch", "0"])
    assert result.exit_code == 2 and "--batch must be >= 1" in result.output


def test_bench_edit_compare_over_layers_sums_the_sweep():
    result = CliRunner().invoke(app, ["bench", "edit", "--model", "tiny:llama", "--compare", "--batch", "2",
                                      "--facts", "2", "--method", "ft-1", "--method", "ft-5", "--layer", "2",
                                      "--layer", "0", "--no-essence", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["layers"] == [2, 0] and list(report["by_layer"]) == ["2", "0"]
    assert report["methods"] == report["by_layer"]["2"]
    cells = [c for per_method in report["by_layer"].values() for c in per_method.values()]
    assert all(c["fast_gflops_per_s"] is not None for c in report["by_layer"]["2"].values())
    assert all(c["fast_gflops_per_s"] is None for c in report["by_layer"]["0"].values())  # FLOPs at the first only
    sweep = report["sweep"]
    assert sweep["cells"] == 4 and sweep["oracle_edits"] == sweep["fast_edits"] == 8
    assert sweep["oracle_seconds"] == pytest.approx(sum(c["oracle_seconds"] * 2 for c in cells))
    assert sweep["fast_edits_per_hour"] == pytest.approx(3600 * 8 / sum(c["fast_seconds"] * 2 for c in cells))
    assert sweep["speedup"] == pytest.approx(sweep["fast_edits_per_hour"] / sweep["oracle_edits_per_hour"])
    ft1 = report["sweep_by_method"]["ft-1"]
    assert ft1["cells"] == 2 and ft1["fast_seconds"] == pytest.approx(
        sum(report["by_layer"][at]["ft-1"]["fast_seconds"] * 2 for at in ("2", "0")))


@pytest.mark.parametrize("args, message", [
    (["--layer", "1", "--layer", "2"], "give one layer, or several with --compare"),
    (["--compare", "--layer", "1", "--layer", "1"], "each layer once"),
])
def test_bench_edit_rejects_bad_layer_lists(args, message):
    result = CliRunner().invoke(app, ["bench", "edit", "--model", "tiny:llama", *args])
    assert result.exit_code == 2 and message in result.output
