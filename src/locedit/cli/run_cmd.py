"""``locedit run``, ``locedit demo`` and ``locedit export``: sweeps into SQLite, and their exports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from locedit.cli.common import JsonOpt, check_input, check_output_dir, cli_errors, console, print_json

if TYPE_CHECKING:
    from locedit.experiment.config import ExperimentConfig
    from locedit.experiment.runner import RunResult

OutOpt = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<name>-<config hash>).")
NoProgressOpt = typer.Option(False, "--no-progress", help="Hide the progress bar.")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's choice). "
                          "On a busy machine fewer threads than cores is often much faster.")


def _set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("export")(export)


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


def _run_and_analyze(cfg: ExperimentConfig, out: Optional[Path], progress: bool) -> RunResult:
    """The sweep, then (when the config asks) its analysis and report; the run's result with the report path."""
    from locedit.analysis import analyze_run
    from locedit.experiment.runner import run_experiment

    result = run_experiment(cfg, out, console=console, progress=progress)
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
    as_json: bool = JsonOpt,
) -> None:
    """Trace every selected fact, then run every (fact, method, problem, layer) edit; resumable.

    Results go to RUN_DIR/results.sqlite beside RUN_DIR/manifest.json. Running the same command again
    skips completed units and retries failed ones.
    """
    from locedit.experiment.config import load_config

    check_input("CONFIG", config, folder_ok=False)
    if out is not None:
        check_output_dir("--out", out)
    cfg = load_config(config)
    _set_threads(threads)
    _report(_run_and_analyze(cfg, out, not no_progress), as_json)


@cli_errors
def demo(out: Optional[Path] = OutOpt,
         data: str = typer.Option("demo", "--data", help="The facts: demo (shipped with locedit) or counterfact "
                                  "(the first known CounterFact facts; needs LOCEDIT_DATA_DIR or ../shared/data)."),
         print_config: bool = typer.Option(False, "--print-config", help="Print the demo's config (TOML) and exit; "
                                           "`locedit run` on that file runs the same demo."),
         no_progress: bool = NoProgressOpt, threads: Optional[int] = ThreadsOpt, as_json: bool = JsonOpt) -> None:
    """The embedded model on the demo facts: tracing, ROME Error Injection at 5 layers, analysis, report.

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
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or parquet."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/export)."),
    as_json: bool = JsonOpt,
) -> None:
    """Write every result table of a run as CSV or Parquet files, for analysis elsewhere."""
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
