"""`locedit edit` (edit one fact, show before/after) and `locedit bench edit` (seconds per edit and per statistic, or
with ``--compare`` the one-by-one path against the batched one)."""

from __future__ import annotations

import math
import platform
import re
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any, Optional

import typer

from locedit.cli.common import (CliError, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, check_device, check_dtype,
                                check_fits_context, check_input, check_layer, check_range, check_text, cli_errors,
                                console, live_help, load, print_json)
from locedit.registry import LiveText, Registry


def _methods() -> Registry:
    from locedit.edit.methods import METHODS  # deferred: the registry imports torch; importing the CLI must not

    return METHODS


def _problems() -> Registry:
    from locedit.edit.problems import PROBLEMS  # deferred like _methods

    return PROBLEMS

GENERATE_TOKENS = 12
METHOD_HELP = LiveText(lambda: f"Editing method: {', '.join(_methods())}.")
PROBLEM_HELP = LiveText(lambda: f"Editing problem: {', '.join(_problems())} (or its label: "
                                f"{', '.join(p.label for p in _problems().values())}).")
NOISE_HELP = LiveText(lambda: "Subject noise sigma for "
                              f"{' / '.join(p.name for p in _problems().values() if p.needs_noise)} (default: the model's).")
BENCH_METHOD_HELP = LiveText(lambda: f"Method to time (default: all of {', '.join(_methods())}); repeatable.")


# -- fact from the command line -----------------------------------------------------------------------

def first_word(text: str) -> str:
    """The first word of a continuation (the fallback true target)."""
    match = re.search(r"\w[\w'\-]*", text)
    if match is None:
        raise CliError(f"cannot find a word in the model's continuation {text!r}; pass --target-true")
    return match.group(0)


def _greedy_text(model, tok, prompt: str, n: int = GENERATE_TOKENS) -> str:
    from locedit.models.generation import greedy_generate

    return tok.decode(greedy_generate(model, tok, [prompt], max_new_tokens=n)[0], skip_special_tokens=True)


def _dataset_fact(fact_id: int, dataset: Optional[str]):
    from locedit.data.loaders import load_demo_facts, load_facts

    facts = load_facts(dataset) if dataset else load_demo_facts()
    for f in facts:
        if f.case_id == fact_id:
            return f
    raise CliError(f"no fact with case_id {fact_id} in {dataset or 'the demo facts'}; "
                   f"ids run {min(f.case_id for f in facts)}..{max(f.case_id for f in facts)}")


def _cli_fact(model, tok, prompt, subject, target_new, target_true, paraphrases, neighbors, neighbor_target):
    from dataclasses import replace

    from locedit.data.fact import adhoc_fact

    if not prompt or not prompt.strip() or not subject or not subject.strip():
        raise CliError("give --prompt and --subject (or --fact-id with --dataset)")
    if subject not in prompt:
        raise CliError(f"subject {subject!r} does not occur in the prompt {prompt!r}; fix --subject")
    true = target_true.strip() if target_true else first_word(_greedy_text(model, tok, prompt))
    fact = adhoc_fact(prompt, subject, true, target_new.strip() if target_new else None,
                      tuple(paraphrases or ()), tuple(neighbors or ()))
    return replace(fact, neighborhood_target=neighbor_target.strip() if neighbor_target else None)


def _check_cli_fact(prompt, subject, target_new, target_true, paraphrases, neighbors, neighbor_target) -> None:
    """The command-line fact's texts: non-empty where given, the subject inside the prompt."""
    check_text("--prompt", prompt)
    check_text("--subject", subject)
    if subject not in prompt:
        raise CliError(f"subject {subject!r} does not occur in the prompt {prompt!r}; fix --subject")
    for flag, text in (("--target-new", target_new), ("--target-true", target_true),
                       ("--neighbor-target", neighbor_target)):
        check_text(flag, text, max_chars=1000)
    for flag, texts in (("--paraphrase", paraphrases), ("--neighbor", neighbors)):
        for text in texts or ():
            check_text(flag, text)


# -- locedit edit --------------------------------------------------------------------------------------

def _prompt_rows(prepared, pre, post, neighbor_true: Optional[tuple[list[float], list[float]]]) -> list[dict]:
    from locedit.evaluate.evaluation import eval_prompts

    rows = []
    for group, prompts in eval_prompts(prepared).items():
        if group == "attribute":
            continue
        for i, p in enumerate(prompts):
            row = {"kind": group, "prompt": p,
                   "p_target_new_pre": math.exp(pre.logp_new[group][i]),
                   "p_target_new_post": math.exp(post.logp_new[group][i]),
                   "p_baseline_pre": math.exp(pre.logp_base[group][i]),
                   "p_baseline_post": math.exp(post.logp_base[group][i])}
            if group == "neighborhood" and neighbor_true is not None:
                row["p_neighbor_target_pre"], row["p_neighbor_target_post"] = neighbor_true[0][i], neighbor_true[1][i]
            rows.append(row)
    return rows


def edit(
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Prompt with the subject filled in."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s", help="Subject string inside the prompt."),
    target_new: Optional[str] = typer.Option(None, "--target-new", help="New object (Error Injection), e.g. ' English'."),
    target_true: Optional[str] = typer.Option(None, "--target-true", help="True object; default: first word of the model's greedy continuation."),
    paraphrase: Optional[list[str]] = typer.Option(None, "--paraphrase", help="Paraphrase prompt; repeatable."),
    neighbor: Optional[list[str]] = typer.Option(None, "--neighbor", help="Neighborhood prompt (other subject); repeatable."),
    neighbor_target: Optional[str] = typer.Option(None, "--neighbor-target", help="True object of the neighborhood prompts (shown before/after)."),
    fact_id: Optional[int] = typer.Option(None, "--fact-id", help="Edit the dataset fact with this case_id instead."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset file for --fact-id (default: the demo facts)."),
    method: str = typer.Option("rome", "--method"),
    layer: Optional[int] = typer.Option(None, "--layer", "-l", help="Central edit layer (default: 2/5 of the depth)."),
    problem: str = typer.Option("error-injection", "--problem"),
    noise: Optional[float] = typer.Option(None, "--noise"),
    o_noise_mode: str = typer.Option("compat", "--o-noise-mode", help="Tracing Reversal target: compat, continuation or argmax."),
    essence: bool = typer.Option(True, "--essence/--no-essence", help="Compute the essence score (5 sampled texts)."),
    generate: int = typer.Option(GENERATE_TOKENS, "--generate", help="Greedy tokens generated before and after the edit."),
    model: str = ModelOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Edit one fact, then show target probabilities, generations and scores before and after."""
    from locedit.study.session import default_layer, session_for

    from locedit.edit.problems import O_NOISE_MODES

    _problems().get(problem)  # fail on bad input before loading the model
    _methods().get(method)
    check_range("--generate", generate, 0, 1000)
    if o_noise_mode not in O_NOISE_MODES:
        raise CliError(f"unknown --o-noise-mode {o_noise_mode!r}; use one of {', '.join(O_NOISE_MODES)}")
    if noise is not None and not noise > 0:
        raise CliError(f"--noise must be > 0, got {noise}")
    if fact_id is None and (not prompt or not subject):
        raise CliError("give --prompt and --subject, or --fact-id (with --dataset)")
    if fact_id is None:
        _check_cli_fact(prompt, subject, target_new, target_true, paraphrase, neighbor, neighbor_target)
    check_input("--dataset", Path(dataset) if dataset else None, folder_ok=True)
    check_device(device)
    check_dtype(dtype)
    check_layer("--layer", layer, model)
    fact = _dataset_fact(fact_id, dataset) if fact_id is not None else None
    if fact is not None and target_new:
        from dataclasses import replace

        fact = replace(fact, target_new=target_new.strip())
    m, tok = load(model, device, dtype)
    for text in ([prompt] if fact is None else [fact.prompt]) + list(paraphrase or []) + list(neighbor or []):
        check_fits_context(m, tok, "the prompt", text, extra_tokens=max(generate, 16))
    if fact is None:
        fact = _cli_fact(m, tok, prompt, subject, target_new, target_true, paraphrase, neighbor, neighbor_target)
    layer = default_layer(m) if layer is None else layer
    session = session_for(m, tok, noise_sigma=noise, o_noise_mode=o_noise_mode, essence=essence)
    captured: dict[str, Any] = {}

    def neighbor_true_probs() -> Optional[list[float]]:
        from locedit.models.scoring import target_probs

        if not fact.neighborhood_target or not fact.neighborhood_prompts:
            return None
        n = len(fact.neighborhood_prompts)
        return target_probs(m, tok, list(fact.neighborhood_prompts), [fact.neighborhood_target] * n).tolist()

    gen_before = _greedy_text(m, tok, fact.prompt, generate) if generate else ""
    nb_before = neighbor_true_probs()

    def during(handle) -> None:
        captured["generation_after"] = _greedy_text(m, tok, fact.prompt, generate) if generate else ""
        captured["neighbor_after"] = neighbor_true_probs()

    with console.status(f"editing with {method} at layer {layer} ..."):
        outcome = session.run(fact, method, layer, problem, during=during)
    row = outcome.row
    nb = (nb_before, captured["neighbor_after"]) if nb_before is not None else None
    result = {**row.as_dict(), "prompt": fact.prompt, "subject": fact.subject, "target_true": fact.target_true,
              "model": model, "prompts": _prompt_rows(outcome.prepared, outcome.pre, outcome.post, nb),
              "generation_before": fact.prompt + gen_before,
              "generation_after": fact.prompt + captured["generation_after"]}
    if json_out:
        print_json(result)
        return
    _print_edit(result)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_edit(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    out.print(f"[bold]{r['method']}[/] edit at layer {r['layers']} for [bold]{r['problem']}[/]: "
              f"{r['prompt']!r} -> {r['target_new']!r} (true {r['target_true']!r}, baseline {r['request_baseline']!r})",
              highlight=False)
    table = Table(title="Target probabilities before -> after")
    for col in ("kind", "prompt", "p(target_new)", "p(baseline)"):
        table.add_column(col)
    for p in r["prompts"]:
        extra = (f"\np(neighbor target) {_fmt(p['p_neighbor_target_pre'])} -> {_fmt(p['p_neighbor_target_post'])}"
                 if "p_neighbor_target_pre" in p else "")
        table.add_row(p["kind"], p["prompt"], f"{_fmt(p['p_target_new_pre'])} -> {_fmt(p['p_target_new_post'])}",
                      f"{_fmt(p['p_baseline_pre'])} -> {_fmt(p['p_baseline_post'])}{extra}")
    out.print(table)
    out.print(f"[bold]before:[/] {r['generation_before']!r}", highlight=False)
    out.print(f"[bold]after: [/] {r['generation_after']!r}", highlight=False)
    scores = Table(title="Scores")
    for col in ("rewrite", "paraphrase", "neighborhood", "essence", "overall", "overall+essence", "restored"):
        scores.add_column(col, justify="right")
    scores.add_row(*(_fmt(r[k]) for k in ("rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score",
                                          "overall_score", "overall_essence_score")), str(r["weights_restored"]))
    out.print(scores)
    out.print(f"edit {r['edit_seconds']:.2f} s, evaluation {r['eval_seconds']:.2f} s")


# -- locedit bench edit --------------------------------------------------------------------------------

def _stats_seconds(m, tok, layer: int, n_tokens: Optional[int]) -> dict[str, Any]:
    """Seconds to accumulate one layer's key statistics (uncached) and to invert them."""
    import torch

    from locedit.edit.methods import resolve_hparams
    from locedit.edit.stats import accumulate_second_moments, moments_for

    hp = resolve_hparams("rome", m)
    store = moments_for(m, tok, hp.mom2_corpus, n_tokens or hp.mom2_n_tokens)
    start = time.perf_counter()
    c = accumulate_second_moments(m, tok, [layer], store.corpus, store.info.n_tokens,
                                  max_doc_tokens=store.info.max_doc_tokens)[layer]
    accumulate = time.perf_counter() - start
    start = time.perf_counter()
    torch.linalg.inv(c.double())
    invert = time.perf_counter() - start
    return {"n_tokens": store.info.n_tokens, "corpus": store.info.corpus, "accumulate_seconds": accumulate,
            "invert_float64_seconds": invert}


def bench_edit(
    model: str = ModelOpt,
    layers: Optional[list[int]] = typer.Option(None, "--layer", "-l", help="Central edit layer (default: 2/5 of the "
                                               "depth); with --compare repeat it for a sweep over layers."),
    facts: int = typer.Option(3, "--facts", "-n", help="How many demo facts to edit per method."),
    methods: Optional[list[str]] = typer.Option(None, "--method"),
    problem: str = typer.Option("error-injection", "--problem"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Facts file (default: the demo facts)."),
    compare: bool = typer.Option(False, "--compare", help="Time the one-by-one path (the oracle) against the batched "
                                 "one on the same facts: speed-up, largest v*/z and score differences, FLOP rate, memory."),
    batches: Optional[list[int]] = typer.Option(None, "--batch", "-b", help="Facts per batch of the batched path "
                                               "(with --compare; default 8); repeat it to time several sizes."),
    oracle_facts: Optional[int] = typer.Option(None, "--oracle-facts", help="Time the oracle on the first N facts "
                                               "only (with --compare; default: all of --facts)."),
    essence: bool = typer.Option(True, "--essence/--no-essence", help="Score essence (sampled texts before and "
                                 "after each edit; the slowest part of an evaluation on a large model)."),
    mom2_tokens: Optional[int] = typer.Option(None, "--mom2-tokens", help="Tokens of the key statistics of ROME "
                                              "and MEMIT (default: the model's table). Fewer only shortens the "
                                              "untimed statistics pass; the timed edits do the same work."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Seconds per edit (edit + evaluation) for each method at a middle layer, and seconds for statistics per layer."""
    from locedit.data.loaders import load_demo_facts, load_facts
    from locedit.study.session import default_layer, session_for

    chosen = list(methods or _methods())
    for name in chosen:
        _methods().get(name)
    _problems().get(problem)
    check_range("--facts", facts, 1)
    batches = batches or [8]
    for size in batches:
        check_range("--batch", size, 1)
    if oracle_facts is not None:
        check_range("--oracle-facts", oracle_facts, 1)
    if mom2_tokens is not None:
        check_range("--mom2-tokens", mom2_tokens, 1)
    check_input("--dataset", Path(dataset) if dataset else None)
    check_device(device)
    check_dtype(dtype)
    layers = list(layers or [])
    if len(layers) > 1 and not compare:
        raise CliError("--layer: give one layer, or several with --compare (a sweep)")
    if len(set(layers)) != len(layers):
        raise CliError(f"--layer: each layer once, got {layers}")
    for at in layers:
        check_layer("--layer", at, model)
    m, tok = load(model, device, dtype)
    layers = layers or [default_layer(m)]
    layer = layers[0]
    pool = (load_facts(dataset) if dataset else load_demo_facts())[:facts]
    hparams = {name: {"mom2_n_tokens": mom2_tokens} for name in chosen
               if mom2_tokens is not None and _methods().get(name).uses_stats}
    if compare:
        _bench_compare(m, tok, model, pool, chosen, layers, problem, batches, oracle_facts, hparams, essence, json_out)
        return
    session = session_for(m, tok, essence=essence)
    stats = _stats_seconds(m, tok, layer, mom2_tokens)
    per_method: dict[str, dict[str, Any]] = {}
    pre_seconds = []
    for f in pool:  # the pre-edit evaluation (essence sampling included) is paid once per fact
        start = time.perf_counter()
        session.evaluator.pre(session.prepare(f, problem, session.hparams(chosen[0], problem)))
        pre_seconds.append(time.perf_counter() - start)
    for name in chosen:
        if _methods().get(name).uses_stats:  # one-time costs (templates, statistics, inverse) outside the timings
            session.edit_and_evaluate(pool[0], name, layer, problem, hparams.get(name))
        walls, edits, evals, scores = [], [], [], []
        for f in pool:
            start = time.perf_counter()
            row = session.edit_and_evaluate(f, name, layer, problem, hparams.get(name))
            walls.append(time.perf_counter() - start)
            edits.append(row.edit_seconds)
            evals.append(row.eval_seconds)
            scores.append(row.rewrite_score)
        per_method[name] = {"seconds_per_edit": statistics.mean(walls), "edit_seconds": statistics.mean(edits),
                            "post_eval_seconds": statistics.mean(evals), "mean_rewrite_score": statistics.mean(scores)}
    result = {"model": model, "device": device, "dtype": dtype, "layer": layer, "problem": problem, "facts": len(pool),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "date": date.today().isoformat(),
              "pre_eval_seconds_per_fact": statistics.mean(pre_seconds), "statistics_per_layer": stats,
              "methods": per_method}
    if json_out:
        print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model}, layer {layer}, {problem}, {len(pool)} facts ({device}, {dtype})")
    for col in ("method", "s / edit (edit + post-eval)", "edit s", "post-eval s", "mean rewrite"):
        table.add_column(col, justify="right")
    for name, r in per_method.items():
        table.add_row(name, f"{r['seconds_per_edit']:.2f}", f"{r['edit_seconds']:.2f}", f"{r['post_eval_seconds']:.2f}",
                      f"{r['mean_rewrite_score']:.3f}")
    out = Console()
    out.print(table)
    out.print(f"pre-edit evaluation (once per fact, cached): {result['pre_eval_seconds_per_fact']:.2f} s; "
              f"statistics: {stats['accumulate_seconds']:.2f} s per layer for {stats['n_tokens']} tokens "
              f"+ {stats['invert_float64_seconds']:.2f} s inverse")


def _bench_compare(m, tok, model: str, pool, methods: list[str], layers: list[int], problem: str, batches: list[int],
                   oracle_facts: Optional[int], hparams: dict[str, dict], essence: bool, json_out: bool) -> None:
    from locedit.study.benchmark import bench_edit_compare
    from locedit.study.session import SessionSettings

    def done(method: str, r: dict) -> None:  # each method's figures as soon as they are measured
        batched = "; ".join(f"{b['fast_seconds']:.3f} s ({b['speedup']:.2f}x) at {size}"
                            for size, b in r["by_batch"].items())
        console.print(f"{method}: oracle {r['oracle_seconds']:.3f} s / edit; batched {batched}")

    sizes = ", ".join(map(str, batches))
    with console.status(f"comparing {', '.join(methods)} one by one and {sizes} at a time ..."):
        result = bench_edit_compare(m, tok, pool, methods, layers, problem, batch=batches, hparams=hparams,
                                    settings=SessionSettings(essence=essence), oracle_facts=oracle_facts,
                                    on_method=done)
    result["model"] = model
    if json_out:
        print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    layers = ", ".join(map(str, result["layers"]))
    table = Table(title=f"{model}, layer {layers}, {problem}, {result['facts']} facts "
                        f"({result['device']}, {result['dtype']})")
    for col in ("layer", "method", "batch", "oracle s / edit", "batched s / edit", "speed-up", "max rel. diff v*/z",
                "max score diff", "batched GFLOP/s", "peak MiB oracle / batched", "failed oracle / batched"):
        table.add_column(col, justify="right")
    for at, per_method in result["by_layer"].items():
        for name, r in per_method.items():
            for size, b in r["by_batch"].items():
                rate = r["fast_gflops_per_s"] if size == str(result["batch"]) else None
                table.add_row(at, name, size, f"{r['oracle_seconds']:.3f}", f"{b['fast_seconds']:.3f}",
                              f"{b['speedup']:.2f}x", _fmt(b["max_rel_diff"]), _fmt(b["max_score_diff"]),
                              f"{rate:.2f}" if rate is not None else "",
                              f"{r['peak_memory_mib']['oracle']:.0f} / {b['peak_memory_mib_fast']:.0f}",
                              f"{r['oracle_failed']} / {b['fast_failed']}")
    out = Console()
    out.print(table)
    sweep = result["sweep"]
    out.print(f"all {sweep['cells']} (method, layer) groups: oracle {sweep['oracle_edits_per_hour']:.0f} edits/h, "
              f"batched {sweep['fast_edits_per_hour']:.0f} edits/h ({sweep['speedup']:.2f}x)")
    out.print(f"plain matmul: {result['matmul_gflops_per_s']:.2f} GFLOP/s; pre-edit evaluations cached before timing")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("edit", cls=live_help(method=METHOD_HELP, problem=PROBLEM_HELP, noise=NOISE_HELP))(cli_errors(edit))
    bench_app.command("edit", cls=live_help(methods=BENCH_METHOD_HELP, problem=PROBLEM_HELP))(cli_errors(bench_edit))
