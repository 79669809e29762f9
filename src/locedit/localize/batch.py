"""Trace many facts: one result file per fact plus a summary table; a failing fact is skipped with its reason."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.data.fact import Fact
from locedit.localize.causal_trace import trace
from locedit.localize.inputs import TargetWarning

SUMMARY_COLUMNS = ("case_id", "status", "reason", "subject", "target", "target_is_greedy", "p_clean", "p_noise",
                   "kind", "window", "p_high", "peak_layers", "top_layer", "top_te", "file")


def trace_facts(model: PreTrainedModel, tok: PreTrainedTokenizerBase, facts: Iterable[Fact], out_dir: str | Path, *,
                kinds: Sequence[str] = ("mlp",), windows: Sequence[int] = (5,), on_done: Callable[[dict], None] | None = None,
                **trace_kw: Any) -> list[dict[str, Any]]:
    """Trace each fact into ``out_dir/trace_<case_id>.npz``; return one summary row per (fact, kind, window).

    Errors of one fact (subject not found, empty target, too long, ...) become a ``skipped`` row with the
    reason, and the batch goes on. ``on_done`` is called with each fact's first row (progress display).
    """
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for fact in facts:
        base = dict.fromkeys(SUMMARY_COLUMNS) | {"case_id": fact.case_id, "subject": fact.subject}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TargetWarning)  # recorded as target_is_greedy instead
                res = trace(model, tok, fact, kinds=kinds, windows=windows, **trace_kw)
        except (ValueError, RuntimeError) as err:
            rows.append(base | {"status": "skipped", "reason": str(err).splitlines()[0]})
            if on_done:
                on_done(rows[-1])
            continue
        path = res.save(out / f"trace_{fact.case_id}.npz")
        first = len(rows)
        for kind in res.settings["kinds"]:
            for w in res.settings["windows"]:
                (layer, te), = res.top_layers(kind, w, k=1)
                rows.append(base | dict(status="ok", reason="", target=res.settings["target"],
                                        target_is_greedy=res.settings["target_is_greedy"], p_clean=res.p_clean,
                                        p_noise=res.p_noise, kind=kind, window=w, p_high=res.p_high(kind, w),
                                        peak_layers=" ".join(map(str, res.peak_layers(kind, w))), top_layer=layer,
                                        top_te=te, file=path.name))
        if on_done:
            on_done(rows[first])
    return rows
