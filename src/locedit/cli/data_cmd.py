"""``locedit data``: inspect dataset files, count the facts a model knows, download public datasets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from locedit.cli.common import (DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, check_device, check_dtype, check_input,
                                check_output_file, cli_errors, console, load, print_json)

data_app = typer.Typer(help="Datasets: inspect and validate files, find the facts a model knows, download.",
                       no_args_is_help=True)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("inspect")
@cli_errors
def inspect(
    paths: list[Path] = typer.Argument(..., help="Dataset file(s), or a folder with the CounterFact files."),
    lenient: bool = typer.Option(False, "--lenient", help="Skip bad records and count them instead of failing."),
    json_out: bool = JsonOpt,
) -> None:
    """Format, record count, validation report and an example record of a dataset."""
    from locedit.data import load_facts_with_report

    facts, report = load_facts_with_report(paths, strict=not lenient)
    summary = {**report.to_dict(), "example": facts[0].to_dict() if facts else None}
    if json_out:
        print_json(summary)
        return
    typer.echo(f"format: {report.format}")
    typer.echo(f"files: {', '.join(report.paths)}")
    typer.echo(f"records: {report.n_records}  loaded: {report.n_loaded}  skipped: {report.n_skipped}")
    for reason, n in sorted(report.skipped.items()):
        typer.echo(f"  skipped {n}: {reason}")
    for message in report.examples:
        typer.echo(f"  e.g. {message}")
    if facts:
        typer.echo("example:")
        for key, value in summary["example"].items():
            typer.echo(f"  {key}: {value!r}")


@data_app.command("known")
@cli_errors
def known(
    model: str = ModelOpt,
    dataset: Optional[Path] = typer.Option(None, "--dataset", "--data", "-d",
                                           help="Dataset file or folder (default: the shipped demo facts)."),
    limit: int = typer.Option(2000, "--limit", "-n", min=1, help="Use the first N facts by case_id."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Prompts per generation batch."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="JSON-lines verdict cache; reruns resume from it."),
    save_known: Optional[Path] = typer.Option(None, "--save-known", help="Write the known case_ids (compat) here."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run the correctness filter (compat and fixed) and the Fact Erasure filter over the first N facts."""
    from locedit.data import default_dataset, load_facts
    from locedit.data.known import assess_facts, save_known_ids

    check_input("--dataset", dataset)
    for flag, path in (("--cache", cache), ("--save-known", save_known)):
        if path is not None:
            check_output_file(flag, path)
    check_device(device)
    check_dtype(dtype)
    facts = (load_facts(dataset) if dataset else default_dataset())[:limit]
    net, tok = load(model, device, dtype)
    start = time.perf_counter()
    columns = (TextColumn("filters"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("filters", total=len(facts))
        rows = assess_facts(net, tok, facts, model_name=model, cache=cache, batch_size=batch_size,
                            progress=lambda n: bar.advance(task, n))
    result = {
        "model": model, "dataset": str(dataset) if dataset else "demo", "n_candidates": len(rows),
        "known_compat": sum(r.compat for r in rows), "known_fixed": sum(r.fixed for r in rows),
        "modes_disagree": sum(r.compat != r.fixed for r in rows),
        "known_and_erasure": sum(r.compat and r.passes_erasure for r in rows),
        "passes_erasure": sum(r.passes_erasure for r in rows), "seconds": round(time.perf_counter() - start, 1),
    }
    if save_known:
        save_known_ids(save_known, model, rows)
        result["saved"] = str(save_known)
    if json_out:
        print_json(result)
        return
    n = result["n_candidates"]
    typer.echo(f"{model} on {result['dataset']}: {n} facts in {result['seconds']}s")
    typer.echo(f"  known (correctness, compat): {result['known_compat']} ({result['known_compat'] / n:.1%})")
    typer.echo(f"  known (correctness, fixed):  {result['known_fixed']}  (modes disagree on {result['modes_disagree']})")
    typer.echo(f"  known and p(o_true) > 0.02:  {result['known_and_erasure']}")
    typer.echo(f"  p(o_true) > 0.02 (any):      {result['passes_erasure']}")


@data_app.command("download")
@cli_errors
def download(
    name: str = typer.Argument(..., help="counterfact or zsre"),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    json_out: bool = JsonOpt,
) -> None:
    """Fetch ROME's public CounterFact or zsRE file into the locedit cache (needs internet)."""
    from locedit.data.download import download as fetch

    path = fetch(name, force=force)
    print_json({"name": name, "path": str(path)}) if json_out else typer.echo(str(path))
