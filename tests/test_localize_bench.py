"""`bench_trace`: oracle and fast engine on the same facts agree, and the report has the promised fields."""

from __future__ import annotations

from locedit.data.fact import Fact
from locedit.localize import bench_trace


def test_bench_trace_report(tiny_llama):
    model, tok = tiny_llama
    facts = [Fact(case_id=5, subject="Danielle Darrieux", prompt="The mother tongue of Danielle Darrieux is", target_true="")]
    report = bench_trace(model, tok, facts, windows=[3], samples=2, noise=0.4)
    for key in ("oracle_s_per_fact", "fast_s_per_fact", "speedup", "max_abs_diff", "gflops_per_s", "matmul_gflops_per_s"):
        assert report[key] > 0 or key == "max_abs_diff", key
    assert report["max_abs_diff"] < 1e-5
    row, = report["per_fact"]
    assert row["case_id"] == 5 and row["fast_gflop"] < row["oracle_gflop"]  # the fast engine does less work
