"""`locedit analyze RUN_DIR` (regressions, Tables 1–8, figures) and `locedit report RUN_DIR` (HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from locedit.cli.common import CliError, JsonOpt, check_output_dir, check_range, cli_errors, console, print_json

RunDirArg = typer.Argument(..., help="Run directory holding results.sqlite and manifest.json.")
WindowOpt = typer.Option(None, "--window", "-w", help="Tracing window of the effects (default: 5 if traced).")
KindOpt = typer.Option("mlp", "--kind", help="Traced site kind: mlp, attn or block.")


def _check_run_dir(run_dir: Path, window: Optional[int], kind: str) -> None:
    """A run directory with a database, writable for the outputs; a known kind and a positive window."""
    from locedit.localize.patching import KINDS

    if not (run_dir / "results.sqlite").is_file():
        raise CliError(f"{run_dir} is not a run directory (no results.sqlite); give the --out of a `locedit run`")
    if kind not in KINDS:
        raise CliError(f"unknown --kind {kind!r}; use one of {', '.join(KINDS)}")
    check_range("--window", window, 1)
    check_output_dir("RUN_DIR", run_dir)


def analyze(run_dir: Path = RunDirArg, window: Optional[int] = WindowOpt, kind: str = KindOpt,
            figures: bool = typer.Option(True, "--figures/--no-figures", help="Also draw the figures (slower)."),
            export: Optional[Path] = typer.Option(
                None, "--export", help="Then copy the tables, summary, manifest and key figures (not the database) "
                "to this folder, e.g. docs/findings/<model> (see docs/findings/README.md)."),
            json_out: bool = JsonOpt) -> None:
    """Fit the paper's regressions, write Tables 1–8 (CSV, Markdown) and figures (PNG, SVG) to RUN_DIR/analysis."""
    from locedit.analysis import analyze as run_analysis
    from locedit.analysis.export import export_findings

    _check_run_dir(run_dir, window, kind)
    if export is not None:
        check_output_dir("--export", export)
    with console.status("analysing ..."):
        result = run_analysis(run_dir, window=window, kind=kind, figures=figures)
    exported = export_findings(run_dir, export) if export is not None else []
    if json_out:
        print_json({**result.summary, **({"exported": [str(p) for p in exported]} if export is not None else {})})
        return
    table1 = result.table("table1")
    typer.echo(table1.markdown() if table1 else "Table 1 needs ROME Error Injection edits with tracing effects.")
    fig6 = result.table("fig06_table")
    if fig6 is not None:
        typer.echo(fig6.markdown())
    key = result.summary.get("key_numbers", {})
    if key.get("mean_r2_layer_rewrite") is not None and key.get("mean_r2_trace_rewrite") is not None:
        typer.echo(f"Mean R² over {key['conditions']} conditions (rewrite): Layer {key['mean_r2_layer_rewrite']:.3f}, "
                   f"Tracing {key['mean_r2_trace_rewrite']:.3f}; F-test p < 1e-4 in {key['conditions_p_below_1e-4']}; "
                   f"Diff 95% bootstrap interval above 0 in {key['conditions_interval_above_0']}.")
    if key.get("max_diff_rewrite") and key["max_diff_rewrite"].get("diff") is not None:
        m = key["max_diff_rewrite"]
        typer.echo(f"Largest Diff (rewrite): {m['diff']:.3f} for {m['method']} {m['problem']}.")
    conc = result.summary["concentrated"]
    typer.echo(f"Concentrated facts: {conc['n']} of {conc['of']}.")
    if result.summary.get("regressions_skipped"):
        console.print(f"[yellow]regressions skipped:[/] {result.summary['regressions_skipped']}", highlight=False)
    for name, why in result.skipped.items():
        console.print(f"[dim]skipped {name}: {why}[/]", highlight=False)
    typer.echo(f"Wrote {len(result.tables)} tables and {len(result.figures)} figures to {result.out_dir}")
    if export is not None:
        typer.echo(f"Exported {len(exported)} files to {export}")


def report(run_dir: Path = RunDirArg, window: Optional[int] = WindowOpt, kind: str = KindOpt,
           open_: bool = typer.Option(False, "--open", help="Open the report in the default browser."),
           json_out: bool = JsonOpt) -> None:
    """Write RUN_DIR/report.html: one self-contained page with tables, figures, manifest and deviations."""
    from locedit.analysis import write_report

    _check_run_dir(run_dir, window, kind)
    with console.status("analysing and writing the report ..."):
        path = write_report(run_dir, window=window, kind=kind)
    if json_out:
        print_json({"report": str(path)})
    else:
        typer.echo(str(path))
    if open_:
        typer.launch(str(path))


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("analyze")(cli_errors(analyze))
    app.command("report")(cli_errors(report))
