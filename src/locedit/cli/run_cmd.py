"""``locedit run``, ``locedit demo``, ``locedit export`` and ``locedit import``: sweeps into SQLite, their exports,
and a run carried to another machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from locedit.cli.common import (CliError, JsonOpt, check_input, check_output_dir, check_range, cli_errors, console,
                                 print_json)

if TYPE_CHECKING:
    from locedit.experiment.config import ExperimentConfig
    from locedit.experiment.runner import RunResult
    from locedit.experiment.sweep import Executor

OutOpt = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<name>-<config hash>).")
NoProgressOpt = typer.Option(False, "--no-progress", help="Hide the progress bar.")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice). "
                          "On a busy machine fewer threads than cores is often much faster.")


BackendOpt = typer.Option(None, "--backend", help="Where units run: local (this process) or ray (Ray actors; "
                          "pip install 'locedit\\[ray]'). Default: the config's run.backend, else local.")
AddressOpt = typer.Option(None, "--address", help="Ray only: the cluster to join, auto | HOST:PORT | "
                          "ray://HOST:PORT (default: start a local Ray instance sized to this machine).")
WorkersOpt = typer.Option(None, "--workers", help="Ray only: worker actors, each loads the model once "
                          "(default: as many as the cluster's CPUs / --threads-per-worker allow).")
GpusOpt = typer.Option(None, "--gpus-per-worker", help="Ray only: GPUs reserved per worker (set model.device = "
                       "'cuda' in the config); default 0.")
WorkerThreadsOpt = typer.Option(None, "--threads-per-worker", help="Ray only: torch CPU threads (and CPUs "
                                "reserved) per worker; default 1.")
BatchOpt = typer.Option(None, "--batch-size", help="Edits of one (method, problem, layer) handed out at once "
                        "(default: the config's edit.batch_size); changes results only by float rounding.")


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("export")(export)
    app.command("import")(import_run)


def _report(result, as_json: bool) -> None:
    """Summary on stderr; the report path (or run directory) on stdout, or everything as JSON."""
    if as_json:
        print_json(result.as_dict())
        return
    t, e = result.tracing, result.editing
    console.print(f"[bold]run[/] {result.run_dir} (config {result.config_hash[:10]}): {result.n_facts} facts; "
                  f"tracing {t.done} done, {t.skipped} resumed, {t.failed} failed; "
                  f"editing {e.done} done, {e.skipped} resumed, {e.failed} failed "
                  f"({t.seconds + e.seconds:.0f} s)", highlight=False)
    for unit, error in result.summary.errors[:10]:
        console.print(f"[yellow]failed[/] {unit}: {error}", highlight=False, soft_wrap=True)
    if result.summary.failed:
        console.print(f"[yellow]{result.summary.failed} unit(s) failed[/]; they are listed in the failures table "
                      "and retried when you run the same command again", highlight=False)
    if result.analysis_error:
        console.print(f"[yellow]analysis failed:[/] {result.analysis_error}", highlight=False, soft_wrap=True)
    typer.echo(str(result.report) if result.report else str(result.run_dir))


def _run_and_analyze(cfg: ExperimentConfig, out: Optional[Path], progress: bool,
                     executor: Optional[Executor] = None) -> RunResult:
    """The sweep, then (when the config asks) its analysis and report; the run's result with the report path."""
    from locedit.analysis import analyze_run
    from locedit.experiment.runner import run_experiment

    result = run_experiment(cfg, out, console=console, progress=progress, executor=executor)
    if cfg.analysis.analyze or cfg.analysis.report:
        with console.status("analysis and report ..."):
            result.report, result.analysis_error = analyze_run(result.run_dir, report=cfg.analysis.report)
    return result


@cli_errors
def run(
    config: Path = typer.Argument(..., help="Experiment config (TOML), e.g. configs/smollm2_finding.toml."),
    out: Optional[Path] = OutOpt,
    no_progress: bool = NoProgressOpt,
    threads: Optional[int] = ThreadsOpt,
    backend: Optional[str] = BackendOpt,
    address: Optional[str] = AddressOpt,
    workers: Optional[int] = WorkersOpt,
    gpus_per_worker: Optional[float] = GpusOpt,
    threads_per_worker: Optional[int] = WorkerThreadsOpt,
    batch_size: Optional[int] = BatchOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Trace every selected fact, then run every (fact, method, problem, layer) edit; resumable.

    Results go to RUN_DIR/results.sqlite beside RUN_DIR/manifest.json. Running the same command again
    skips completed units and retries failed ones, on any backend.
    """
    from locedit.experiment.config import BACKENDS, load_config
    from locedit.experiment.executors import executor_for

    check_input("CONFIG", config, folder_ok=False)
    if out is not None:
        check_output_dir("--out", out)
    if backend is not None and backend not in BACKENDS:
        raise CliError(f"unknown --backend {backend!r}; use one of {', '.join(BACKENDS)}")
    check_range("--batch-size", batch_size, low=1)
    cfg = load_config(config)
    backend = backend or cfg.run.backend
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"backend": backend}),
                                 "edit": cfg.edit.model_copy(update={"batch_size": batch_size or cfg.edit.batch_size})})
    executor = executor_for(backend, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                            threads_per_worker=threads_per_worker)
    _set_threads(threads)
    _report(_run_and_analyze(cfg, out, not no_progress, executor), as_json)


@cli_errors
def demo(out: Optional[Path] = OutOpt,
         data: str = typer.Option("demo", "--data", help="The facts: demo (shipped with locedit) or counterfact "
                                  "(the first known CounterFact facts; needs LOCEDIT_DATA_DIR or ../shared/data)."),
         print_config: bool = typer.Option(False, "--print-config", help="Print the demo's config (TOML) and exit; "
                                           "`locedit run` on that file runs the same demo."),
         no_progress: bool = NoProgressOpt, threads: Optional[int] = ThreadsOpt, as_json: bool = JsonOpt) -> None:
    """The embedded model on the demo facts: tracing, the four methods under Error Injection at 5 layers, analysis, report.

    Prints the data it uses first ("data: ..."), and at the end the path of the HTML report.
    """
    from locedit.experiment.config import dump_toml
    from locedit.experiment.demo import DEMO_DATA, demo_config, demo_config_text

    if out is not None:
        check_output_dir("--out", out)
    cfg = demo_config(data)
    if print_config:
        typer.echo(demo_config_text() if data == "demo" else dump_toml(cfg), nl=False)
        return
    console.print(f"data: {data} ({DEMO_DATA[data]})", highlight=False, soft_wrap=True)
    _set_threads(threads)
    _report(_run_and_analyze(cfg, out, not no_progress), as_json)


@cli_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `locedit run`."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or parquet (the result tables), or sql (the whole "
                            "run as text, for `locedit import` on another machine)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/export)."),
    as_json: bool = JsonOpt,
) -> None:
    """Write every result table of a run as CSV or Parquet files, for analysis elsewhere.

    With --format sql, write the whole run as SQL text (schema.sql, one TABLE.sql per table) with its manifest.json,
    unfinished or not: `locedit import` rebuilds the run directory from it, and `locedit run` continues it there.
    """
    from locedit.experiment.store import EXPORT_FORMATS, db_path
    from locedit.experiment.store import export as export_tables

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    if not db_path(run_dir).is_file():
        raise ValueError(f"{run_dir} is not a run directory (no {db_path(run_dir).name}); give the --out of a "
                         "`locedit run`")
    check_output_dir("--out", out if out is not None else run_dir / "export")
    paths = export_tables(run_dir, fmt, out)
    if as_json:
        print_json({"files": [str(p) for p in paths]})
    else:
        for p in paths:
            typer.echo(str(p))


@cli_errors
def import_run(
    folder: Path = typer.Argument(..., help="A folder written by `locedit export RUN_DIR --format sql`."),
    out: Path = typer.Option(..., "--out", "-o", help="The new run directory (must not hold a run yet)."),
) -> None:
    """Rebuild a run directory from its SQL export, e.g. on a fresh machine; `locedit run CONFIG --out` continues it."""
    from locedit.experiment.store import import_dump

    check_input("FOLDER", folder, folder_ok=True)
    check_output_dir("--out", out)
    run_dir = import_dump(folder, out)
    typer.echo(f"Imported {folder} into {run_dir}; continue the run with `locedit run CONFIG --out {run_dir}`")
