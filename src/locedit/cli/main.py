"""The ``locedit`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="locedit",
    help="Localize facts in causal language models, edit them, and test whether localization informs editing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks: per-stage speed and memory figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# Each module defines register(app, bench_app). Missing modules are skipped while they are being built.
_COMMAND_MODULES = ("models_cmd", "data_cmd", "trace_cmd", "edit_cmd", "run_cmd", "analysis_cmd", "stats_cmd")

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"locedit.cli.{_name}")
    except ModuleNotFoundError as _err:
        if _err.name != f"locedit.cli.{_name}":
            raise
        continue
    _mod.register(app, bench_app)


if __name__ == "__main__":
    app()
