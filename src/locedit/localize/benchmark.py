"""``locedit bench trace``: oracle vs fast engine on the same facts — seconds, speedup, max |diff|, FLOP/s.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (every matmul and attention kernel
that actually runs). "Useful" FLOPs are those of the fast engine's own run (base run, per-token
argument recording, cell blocks, target-only unembedding); they are divided by its wall time. The
oracle's FLOPs are one counted cell forward times the number of forwards (all cell forwards have the
same shape). A plain fp32 matmul of the model's MLP shape is timed in the same run for reference.
"""

from __future__ import annotations

import platform
import time
import warnings
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.localize.causal_trace import trace
from locedit.localize.inputs import TargetWarning
from locedit.models.families import family_for


def matmul_gflops(model: PreTrainedModel, seconds: float = 1.0) -> float:
    """GFLOP/s of a plain [2048, d] x [d, 4d] matmul in the model's dtype and device."""
    d = family_for(model).module(model, family_for(model).embed).weight.shape[1]
    dev, dt = model.device, next(model.parameters()).dtype
    a, b = torch.randn(2048, d, device=dev, dtype=dt), torch.randn(d, 4 * d, device=dev, dtype=dt)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n * 2 * 2048 * d * 4 * d / (time.perf_counter() - start) / 1e9


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def _counted(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def _oracle_flops(model: PreTrainedModel, res, n_windows: int) -> int:
    """FLOPs of the oracle's forwards for ``res``: 1 (p_clean) + 1 (p_noise) + cells, each [1+n, T+K]."""
    ids = list(res.settings["target_ids"])
    seq = len(res.tokens) + len(ids)
    batch = torch.zeros((1 + res.settings["samples"], seq), dtype=torch.long, device=model.device)
    per_forward = _counted(lambda: model(input_ids=batch))
    single = _counted(lambda: model(input_ids=batch[:1]))
    cells = (len(res.tokens) - res.s0) * res.n_layers * n_windows
    return single + per_forward * (1 + cells)


def bench_trace(model: PreTrainedModel, tok: PreTrainedTokenizerBase, facts: Sequence[Fact], *,
                kinds: Sequence[str] = ("mlp",), windows: Sequence[int] = (5,), samples: int = 10,
                noise: float | None = None, max_rows: int = 512, on_fact: Callable[[dict], None] | None = None) -> dict:
    """Run the oracle and the fast engine on each fact (alternating, same conditions) and summarise."""
    kw = dict(kinds=kinds, windows=windows, samples=samples, noise=noise, max_rows=max_rows)
    dev = model.device
    matmul_before = matmul_gflops(model)
    per_fact = []
    for fact in facts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TargetWarning)  # the bench times the engines; it does not judge targets
            oracle, t_oracle = _timed(lambda: trace(model, tok, fact, engine="oracle", **kw), dev)
            fast, t_fast = _timed(lambda: trace(model, tok, fact, engine="fast", **kw), dev)
            fast_flops = _counted(lambda: trace(model, tok, fact, engine="fast", **kw))
        diff = max(float(np.abs(oracle.grids[k] - fast.grids[k]).max()) for k in oracle.grids)
        diff = max(diff, abs(oracle.p_clean - fast.p_clean), abs(oracle.p_noise - fast.p_noise))
        row = dict(case_id=fact.case_id, n_tokens=len(fast.tokens), s0=fast.s0, n_target=len(fast.settings["target_ids"]),
                   oracle_s=t_oracle, fast_s=t_fast, max_abs_diff=diff, fast_gflop=fast_flops / 1e9,
                   oracle_gflop=_oracle_flops(model, fast, len(kinds) * len(windows)) / 1e9)
        per_fact.append(row)
        if on_fact:
            on_fact(row)
    matmul_after = matmul_gflops(model)
    oracle_s = sum(r["oracle_s"] for r in per_fact)
    fast_s = sum(r["fast_s"] for r in per_fact)
    fast_gflop = sum(r["fast_gflop"] for r in per_fact)
    oracle_gflop = sum(r["oracle_gflop"] for r in per_fact)
    n = max(1, len(per_fact))
    return dict(
        model=str(model.config._name_or_path or model.config.model_type), device=str(dev),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""), facts=len(per_fact), kinds=list(kinds),
        windows=list(windows), samples=samples, torch_threads=torch.get_num_threads(), machine=platform.platform(),
        cpu=platform.processor() or platform.machine(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        oracle_s_per_fact=oracle_s / n, fast_s_per_fact=fast_s / n, speedup=oracle_s / fast_s if fast_s else float("nan"),
        max_abs_diff=max((r["max_abs_diff"] for r in per_fact), default=float("nan")),
        fast_gflop_per_fact=fast_gflop / n, oracle_gflop_per_fact=oracle_gflop / n,
        flop_reduction=oracle_gflop / fast_gflop if fast_gflop else float("nan"),
        gflops_per_s=fast_gflop / fast_s if fast_s else float("nan"),
        oracle_gflops_per_s=oracle_gflop / oracle_s if oracle_s else float("nan"),
        matmul_gflops_per_s=(matmul_before + matmul_after) / 2, matmul_gflops_per_s_before_after=[matmul_before, matmul_after],
        per_fact=per_fact,
    )
