"""`locedit trace` (causal tracing / zeroing of one fact or a dataset) and `locedit bench trace`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from locedit.cli.common import (CliError, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, check_device, check_dtype, check_input,
                                check_output_dir, check_range, check_text, cli_errors, console, load, model_layers,
                                print_json)

KindOpt = typer.Option(["mlp"], "--kind", "-k", help="Site to restore: mlp, attn or block (repeatable).")
WindowOpt = typer.Option([5], "--window", "-w", help="Window size in layers, e.g. 1, 3, 5, 10 (repeatable).")
SamplesOpt = typer.Option(10, "--samples", help="Noise samples per fact (shared by every cell).")
NoiseOpt = typer.Option(None, "--noise", help="Noise sigma; default: model table, else 3 x std of known_1000 subject embeddings.")
ChunkOpt = typer.Option(512, "--chunk", help="Max rows per forward pass of the fast engine (bounds memory).")


def _trace_one(m, tok, prompt: str, subject: str, target: Optional[str], kinds, windows, samples, noise, seed, engine,
               chunk, zeroing: bool, out: Path) -> dict:
    from locedit.localize import TargetWarning, plot_trace, trace, zero

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TargetWarning)
        res = trace(m, tok, prompt, subject, target, kinds=kinds, windows=windows, samples=samples, noise=noise,
                    seed=seed, engine=engine, max_rows=chunk)
    notes = [str(w.message) for w in caught if issubclass(w.category, TargetWarning)]
    if res.settings["target_source"] == "greedy":
        notes.append(f"no --target given: tracing the model's greedy next token {res.settings['target']!r}")
    files = [str(res.save(out / "trace.npz"))]
    summary = []
    for kind in res.settings["kinds"]:
        for w in res.settings["windows"]:
            files += [str(p) for p in plot_trace(res, kind, w, out / f"trace_{kind}_w{w}")]
            summary.append(dict(kind=kind, window=w, p_high=res.p_high(kind, w), peak_layers=res.peak_layers(kind, w),
                                top_layers=[dict(layer=layer, te=te) for layer, te in res.top_layers(kind, w, k=3)]))
    result = dict(prompt=prompt, subject=subject, target=res.settings["target"], target_source=res.settings["target_source"],
                  target_is_greedy=res.settings["target_is_greedy"], tokens=res.tokens, s0=res.s0, s1=res.s1,
                  p_clean=res.p_clean, p_noise=res.p_noise, sigma=res.settings["sigma"], traces=summary, notes=notes)
    if zeroing:
        z = zero(m, tok, prompt, subject, target, windows=windows, engine=engine, max_rows=chunk)
        files.append(str(z.save(out / "zeroing.npz")))
        for w in z.settings["windows"]:
            files += [str(p) for p in plot_trace(z, "mlp", w, out / f"zeroing_mlp_w{w}")]
        result["zeroing"] = [dict(window=w, z_subject=z.layer_effect(w, "subject").tolist(),
                                  z_all=z.layer_effect(w, "all").tolist()) for w in z.settings["windows"]]
    result["files"] = files
    return result


def _print_one(r: dict) -> None:
    for note in r["notes"]:
        console.print(f"[yellow]warning:[/] {note}", highlight=False)
    print(f"target {r['target']!r} ({r['target_source']}); subject tokens {r['s0']}..{r['s1'] - 1}; sigma {r['sigma']:.4g}")
    print(f"p_clean = {r['p_clean']:.4f}   p_noise = {r['p_noise']:.4f}")
    for t in r["traces"]:
        tops = ", ".join(f"layer {x['layer']} (TE {x['te']:.2f})" for x in t["top_layers"])
        print(f"{t['kind']} window {t['window']}: top layers {tops}; peak layer(s) {t['peak_layers']}")
    for z in r.get("zeroing", []):
        zs = z["z_subject"]
        best = max(range(len(zs)), key=zs.__getitem__)
        print(f"zeroing window {z['window']}: largest subject-token deletion at layer {best} (Z {zs[best]:.2f})")
    print("wrote " + ", ".join(r["files"]))


def _trace_dataset(m, tok, dataset: Path, limit: Optional[int], kinds, windows, samples, noise, seed, engine, chunk,
                   out: Path, json_out: bool) -> None:
    import pandas as pd
    from rich.progress import Progress

    from locedit.data.loaders import load_facts
    from locedit.localize import SUMMARY_COLUMNS, trace_facts

    facts = load_facts(dataset, strict=False)[: limit if limit is not None else None]
    if not facts:
        raise ValueError(f"no facts in {dataset}; check the file or --limit")
    with Progress(console=console, disable=json_out) as bar:
        task = bar.add_task("tracing", total=len(facts))
        rows = trace_facts(m, tok, facts, out, kinds=kinds, windows=windows, samples=samples, noise=noise, seed=seed,
                           engine=engine, max_rows=chunk, on_done=lambda row: bar.advance(task))
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "summary.csv", index=False)
    ok = sorted(set(table.loc[table.status == "ok", "case_id"]))
    skipped = table[table.status == "skipped"]
    result = dict(facts=len(facts), traced=len(ok), skipped=len(skipped),
                  skipped_reasons=dict(zip(skipped.case_id.astype(int).tolist(), skipped.reason)), out=str(out),
                  summary=str(out / "summary.csv"), rows=rows)
    if json_out:
        print_json(result)
        return
    print(f"traced {len(ok)} of {len(facts)} facts into {out} (summary.csv); skipped {len(skipped)}")
    for cid, reason in result["skipped_reasons"].items():
        console.print(f"[yellow]skipped[/] case {cid}: {reason}", highlight=False)


def check_trace_options(model: str, device: str, dtype: str, kinds: list[str], windows: list[int], samples: int,
                        noise: Optional[float], chunk: int, engine: str = "fast") -> None:
    """Everything about a tracing request that can be checked without loading the model."""
    from locedit.localize.patching import KINDS

    check_device(device)
    check_dtype(dtype)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise CliError(f"unknown --kind {', '.join(bad)}; use any of {', '.join(KINDS)}")
    if engine not in ("fast", "oracle"):
        raise CliError(f"unknown --engine {engine!r}; use fast or oracle")
    check_range("--samples", samples, 1, 100_000)
    check_range("--chunk", chunk, 1)
    if noise is not None and not noise > 0:
        raise CliError(f"--noise must be > 0, got {noise}")
    n_layers = model_layers(model)
    for w in windows:
        if not 1 <= w <= n_layers:
            raise CliError(f"--window {w} does not fit the model's {n_layers} layers; use a window between 1 and "
                           f"{n_layers}")


def trace_command(
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Prompt with the subject in it."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s", help="Subject to corrupt (must occur in the prompt)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target to score (default: the greedy next token)."),
    kind: list[str] = KindOpt,
    window: list[int] = WindowOpt,
    samples: int = SamplesOpt,
    noise: Optional[float] = NoiseOpt,
    seed: int = typer.Option(1, "--seed", help="Seed of the noise draws."),
    engine: str = typer.Option("fast", "--engine", help="fast (default) or oracle (one forward per cell)."),
    chunk: int = ChunkOpt,
    zeroing: bool = typer.Option(False, "--zero", help="Also run representation zeroing "
                                 "(docs/algorithms.md#representation-zeroing)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Trace the facts of this file instead of --prompt."),
    limit: Optional[int] = typer.Option(None, "--limit", help="With --dataset: only the first N facts."),
    out: Path = typer.Option(Path("traces"), "--out", "-o", help="Output folder for results and heatmaps."),
    model: str = ModelOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Causal tracing: corrupt the subject, restore one site at a time, and show which layers bring the fact back."""
    if dataset is None and (not prompt or not subject):
        raise ValueError("give --prompt and --subject (or --dataset PATH to trace many facts)")
    check_range("--limit", limit, 1)
    if dataset is None:
        check_text("--prompt", prompt)
        check_text("--subject", subject)
        if subject not in prompt:
            raise CliError(f"subject {subject!r} not found in prompt {prompt!r}; fix --subject")
        if target is not None and not target.strip():
            raise CliError("--target is empty; give the target text or leave it out to trace the greedy token")
    check_input("--dataset", dataset)
    check_output_dir("--out", out)
    check_trace_options(model, device, dtype, kind, window, samples, noise, chunk, engine)
    m, tok = load(model, device, dtype)
    if dataset is not None:
        _trace_dataset(m, tok, dataset, limit, kind, window, samples, noise, seed, engine, chunk, out, json_out)
        return
    with console.status("tracing ..."):
        r = _trace_one(m, tok, prompt, subject, target, kind, window, samples, noise, seed, engine, chunk, zeroing, out)
    if json_out:
        print_json(r)
    else:
        _print_one(r)


def bench_trace_command(
    facts: int = typer.Option(2, "--facts", "-n", help="How many facts (the first N of the dataset)."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Facts file; default: CounterFact in the data folder."),
    case: Optional[list[int]] = typer.Option(None, "--case", help="Bench these case_ids instead of the first N (repeatable)."),
    kind: list[str] = KindOpt,
    window: list[int] = WindowOpt,
    samples: int = SamplesOpt,
    noise: Optional[float] = NoiseOpt,
    chunk: int = ChunkOpt,
    model: str = ModelOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Oracle vs fast tracing engine on the same facts: seconds per fact, speedup, max |diff|, GFLOP/s."""
    from locedit.data.loaders import load_counterfact_mend, load_facts
    from locedit.localize import bench_trace

    check_range("--facts", facts, 1)
    check_input("--dataset", dataset)
    check_trace_options(model, device, dtype, kind, window, samples, noise, chunk)
    items = load_facts(dataset, strict=False) if dataset else load_counterfact_mend()
    if case:
        missing = set(case) - {f.case_id for f in items}
        if missing:
            raise ValueError(f"case_id(s) {sorted(missing)} not in the dataset; check --case")
        items = [f for f in items if f.case_id in set(case)]
    items = items[:facts]
    m, tok = load(model, device, dtype)
    report = bench_trace(m, tok, items, kinds=kind, windows=window, samples=samples, noise=noise, max_rows=chunk,
                         on_fact=lambda r: console.print(f"case {r['case_id']}: oracle {r['oracle_s']:.1f}s, fast "
                                                         f"{r['fast_s']:.1f}s, max|diff| {r['max_abs_diff']:.1e}",
                                                         highlight=False))
    if json_out:
        print_json(report)
        return
    for key in ("oracle_s_per_fact", "fast_s_per_fact", "speedup", "max_abs_diff", "flop_reduction", "gflops_per_s",
                "matmul_gflops_per_s"):
        print(f"{key:>22}: {report[key]:.4g}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("trace")(cli_errors(trace_command))
    bench_app.command("trace")(cli_errors(bench_trace_command))
