"""The ``locedit`` command. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import sys

import typer

from locedit.cli import analysis_cmd, data_cmd, edit_cmd, models_cmd, run_cmd, stats_cmd, status_cmd, trace_cmd
from locedit.cli.common import configure_output, console, debug_enabled

app = typer.Typer(
    name="locedit",
    help="Localize facts in causal language models, edit them, and test whether localization informs editing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks: per-stage speed and memory figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                          help="Show library warnings, logs and progress bars.")) -> None:
    configure_output(verbose)


for _module in (models_cmd, data_cmd, trace_cmd, edit_cmd, run_cmd, status_cmd, analysis_cmd, stats_cmd):
    _module.register(app, bench_app)


def verbose_requested(args: list[str]) -> bool:
    """Whether the global ``-v``/``--verbose`` stands before the command name (``locedit -v run ...``)."""
    for arg in args:
        if arg in ("-v", "--verbose"):
            return True
        if not arg.startswith("-"):
            return False
    return False


def main() -> None:
    """The ``locedit`` entry point: a usage error is one line on stderr with exit code 2, like every other error.

    Output is configured before click parses anything: a command's registry-derived help and the command itself
    import torch and with it tqdm, whose progress bars read their settings on import.
    typer vendors click privately, so its usage errors are recognised by their public shape
    (``format_message`` and ``exit_code``) rather than by class.
    """
    configure_output(verbose_requested(sys.argv[1:]))
    try:
        code = app(prog_name="locedit", standalone_mode=False)
    except Exception as err:  # noqa: BLE001 - only click's usage errors are handled here
        if not (hasattr(err, "format_message") and hasattr(err, "exit_code")) or debug_enabled():
            raise
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help(), highlight=False)
            sys.exit(0)
        path = ctx.command_path.split(" ")[1:] if ctx is not None else []  # "locedit data inspect" -> data inspect
        console.print(f"[bold red]error:[/] {err.format_message().rstrip('.')}; see `{' '.join(['locedit', *path, '--help'])}`",
                      highlight=False, soft_wrap=True)
        code = err.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
