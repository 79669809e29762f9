"""The ``locedit`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from locedit.cli import analysis_cmd, data_cmd, edit_cmd, models_cmd, run_cmd, stats_cmd, trace_cmd

app = typer.Typer(
    name="locedit",
    help="Localize facts in causal language models, edit them, and test whether localization informs editing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks: per-stage speed and memory figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

for _module in (models_cmd, data_cmd, trace_cmd, edit_cmd, run_cmd, analysis_cmd, stats_cmd):
    _module.register(app, bench_app)


if __name__ == "__main__":
    app()
