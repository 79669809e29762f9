"""Shared CLI plumbing: one-line errors with a non-zero exit code, JSON output, model options."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = typer.Option("smollm2-135m", "--model", "-m", help="HF id, local folder, or alias (see `locedit models`).")
DeviceOpt = typer.Option("cpu", "--device", help="torch device: cpu, cuda, cuda:1, ...")
DtypeOpt = typer.Option("float32", "--dtype", help="float32 (reference fidelity), bfloat16 or float16.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


class CliError(Exception):
    """An error whose message is shown to the user as is."""


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Turn expected errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            fail("interrupted; completed results are kept", code=130)
        except json.JSONDecodeError as err:
            fail(f"malformed JSON: {err}")
        except FileNotFoundError as err:
            fail(f"file not found: {err.filename or err}")
        except (CliError, ValueError, KeyError, RuntimeError, OSError) as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            fail(msg.strip("'\""))
        return None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "__dict__"):
        return vars(o)
    return str(o)


def load(model: str, device: str, dtype: str):
    """Load a model for a command, with a status line on stderr."""
    from locedit.models import load_model

    with console.status(f"loading {model} ..."):
        return load_model(model, device=device, dtype=dtype)
