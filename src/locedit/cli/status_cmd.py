"""``locedit status RUN_DIR``: how far a run is and how long the rest will take, read while it runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from locedit.cli.common import JsonOpt, check_input, cli_errors, console, print_json

if TYPE_CHECKING:
    from locedit.experiment.progress import RunStatus, UnitCounts


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("status")(status)


def duration(seconds: float | None) -> str:
    """``42 s``, ``12 min``, ``3.4 h``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summary_line(st: RunStatus) -> str:
    """One line: units done / failed / pending (and not yet planned), and the estimate."""
    t = st.total
    unplanned = f" (+ up to {t.unplanned} not yet planned)" if t.unplanned else ""
    if st.complete:
        left = "complete"
    else:
        left = f"about {duration(st.eta_seconds)} left" if st.eta_seconds is not None else "time left unknown"
        if st.eta_seconds is not None and st.unmeasured:
            left += f" ({st.unmeasured} of the units are of a method and problem not timed yet: a guess)"
    return f"{st.run_dir}: {t.done} done, {t.failed} failed, {t.pending} pending{unplanned} units; {left}"


def _table(st: RunStatus):
    from rich.table import Table

    table = Table(title=f"{st.config_name} (config {st.config_hash[:10]}), {st.facts} facts",
                  caption="unplanned: edits of untraced facts, at most (tracing decides their eligibility)")
    for name in ("stage", "method", "problem", "done", "failed", "pending", "unplanned", "mean s/unit"):
        table.add_column(name, justify="left" if name in ("stage", "method", "problem") else "right")

    def row(labels: tuple[str, str, str], c: UnitCounts, **style: str) -> None:
        mean = c.mean_seconds
        table.add_row(*labels, str(c.done), str(c.failed), str(c.pending), str(c.unplanned) if c.unplanned else "",
                      f"{mean:.3g}" if mean is not None else "", **style)

    row(("tracing", "", ""), st.tracing)
    for g in st.editing:
        row(("edit", g.method, g.problem), g.counts)
    row(("total", "", ""), st.total, style="bold")
    return table


def _report(st: RunStatus) -> None:
    console.print(_table(st))
    rate = st.latest
    if rate is not None:
        per_hour = f"{rate.per_hour:.0f} units/h" if rate.per_hour is not None else "rate unknown"
        console.print(f"session {rate.session} of {st.sessions}: {rate.units} units finished, {per_hour} "
                      "(wall clock)", highlight=False)
    bound = " (an upper bound: some facts are not traced yet)" if st.total.unplanned and st.eta_seconds else ""
    console.print(f"CPU-seconds spent: {st.total.seconds:.1f} (sum of units.seconds); remaining time: "
                  f"{duration(st.eta_seconds)}{bound}, over {st.workers} worker(s)", highlight=False)
    if st.total.failed:
        console.print(f"[yellow]{st.total.failed} unit(s) failed[/]; the failures table holds their errors and the "
                      "next `locedit run` of the same config retries them", highlight=False)
    typer.echo(summary_line(st))


@cli_errors
def status(
    run_dir: Path = typer.Argument(..., help="A run directory (the --out of `locedit run`), also while it runs."),
    as_json: bool = JsonOpt,
) -> None:
    """How far a run directory is, and how long the rest will take; safe while `locedit run` writes it.

    Reads RUN_DIR/manifest.json and RUN_DIR/results.sqlite read-only, without the run lock; loads no model.
    Counts trace units and edit units per (method, problem): done, failed (retried by the next run), pending,
    and not yet planned (edits of facts whose tracing, which decides their eligibility, has not run: an upper
    bound). Mean seconds per unit come from the units.seconds column.

    Remaining time: remaining units (failed, pending, not yet planned) x the mean seconds of their own
    (method, problem) (else the mean over all edits; trace units: the mean trace unit), divided by the workers of
    the latest session (as its manifest entry records them, else as observed); "unknown" before any edit
    finished. Also shown: that session's wall-clock throughput (units finished per hour).
    """
    from locedit.experiment.progress import run_status

    check_input("RUN_DIR", run_dir)
    st = run_status(run_dir)
    if as_json:
        print_json(st.as_dict())
        return
    _report(st)
