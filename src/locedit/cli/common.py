"""Shared CLI plumbing: one-line errors with a non-zero exit code, checks before work, JSON output, model options.

Every command answers bad input with one line on stderr and exit code 2 (``LOCEDIT_DEBUG=1`` shows the
traceback instead). What can be checked without the model (devices, dtypes, paths, ranges) is checked
before the model is loaded.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand

from locedit.registry import LiveText

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DEBUG_ENV = "LOCEDIT_DEBUG"

ModelOpt = typer.Option("smollm2-135m", "--model", "-m",
                        help="HF id, local folder, alias (see `locedit models`), tiny:<family> or "
                        "random:<gptj-6b, gpt2-xl or config.json> (random weights).")
DeviceOpt = typer.Option("cpu", "--device", help="torch device: cpu, cuda, cuda:1, ...")
DtypeOpt = typer.Option("float32", "--dtype", help="float32 (reference fidelity), bfloat16 or float16.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


class CliError(Exception):
    """An error whose message is shown to the user as is."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__).strip("'\"")


def cli_errors(fn: F) -> F:
    """Turn expected errors into one line on stderr and exit code 2; anything else into one line and exit 1.

    With ``LOCEDIT_DEBUG=1`` every error propagates with its full traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            fail("interrupted; completed results are kept", code=130)
        except Exception as err:  # noqa: BLE001 - the one place that turns errors into one line
            if debug_enabled():
                raise
            if isinstance(err, json.JSONDecodeError):
                fail(f"malformed JSON: {err}")
            if isinstance(err, FileNotFoundError):
                fail(f"file not found: {err.filename or err}; check the path")
            if isinstance(err, IsADirectoryError):
                fail(f"{err.filename} is a folder, not a file; give a file path")
            if isinstance(err, PermissionError):
                fail(f"permission denied: {err.filename or err}; fix its permissions or choose another path")
            if isinstance(err, (CliError, ValueError, KeyError, RuntimeError, OSError, sqlite3.Error)):
                fail(_first_line(err))
            fail(f"internal error ({type(err).__name__}: {_first_line(err)}); rerun with {DEBUG_ENV}=1 for the "
                 "traceback and report it", code=1)
        return None

    return wrapper  # type: ignore[return-value]


def live_help(**texts: LiveText) -> type[TyperCommand]:
    """A command class that gives the options named in ``texts`` (by parameter name) their help, read only when
    the help is shown.

    typer turns an option's help into a string when it builds the command, and every ``locedit`` call builds
    every command; a help text that lists a registry imports the registry (and torch), so it is attached to
    the built option instead: ``locedit --help`` and the commands stay fast, ``locedit edit --help`` lists the
    entries registered by then.
    """

    class LiveHelpCommand(TyperCommand):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            params = {param.name: param for param in self.params}
            unknown = sorted(set(texts) - set(params))
            if unknown:
                raise TypeError(f"live_help for {', '.join(unknown)}: command {self.name} has no such parameter")
            for name, text in texts.items():
                params[name].help = text  # type: ignore[assignment] - a str that is computed when read

    return LiveHelpCommand


# -- library chatter -------------------------------------------------------------------------------

_QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
              "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def configure_output(verbose: bool) -> None:
    """Without ``verbose``: no dependency warnings, logging or progress bars on the terminal.

    locedit's own messages are printed by the commands (warnings it reports, e.g. a traced target that is
    not the greedy token, are caught and shown as such). ``verbose`` shows every warning and library log.
    """
    if verbose:
        warnings.simplefilter("default")
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    warnings.simplefilter("ignore")
    for name in ("transformers", "huggingface_hub", "datasets", "gguf", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # its verbosity is read from the environment only on import
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


# -- checks before work ----------------------------------------------------------------------------

def check_device(device: str) -> None:
    """A device string torch understands and this machine has."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); "
                           "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CliError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                           f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise CliError(f"--device {device}: MPS is not available on this machine; use --device cpu")
        return
    raise CliError(f"--device {device}: locedit runs on cpu, cuda or mps; use one of those")


def check_dtype(dtype: str) -> None:
    from locedit.models.loading import DTYPES

    if dtype not in DTYPES:
        raise CliError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")


def check_range(flag: str, value: Optional[int | float], low: float | None = None, high: float | None = None) -> None:
    """``low <= value <= high`` (either bound optional); None passes."""
    if value is None:
        return
    if low is not None and value < low:
        raise CliError(f"{flag} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise CliError(f"{flag} must be <= {high}, got {value}")


def check_input(flag: str, path: Optional[Path], folder_ok: bool = True) -> None:
    """An input path that exists (and is a file unless ``folder_ok``)."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise CliError(f"{flag} {p} does not exist; check the path")
    if not folder_ok and p.is_dir():
        raise CliError(f"{flag} {p} is a folder; give a file")


def check_output_dir(flag: str, path: Path) -> None:
    """An output folder that is a folder (or can be created) and is writable, checked by writing a probe file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CliError(f"{flag} {p} is a file, not a folder; choose a folder")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CliError(f"{flag} {p}: {parent} is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise CliError(f"{flag} {p}: cannot write to {parent} ({err.strerror}); fix its permissions or choose "
                       "another folder") from None


def check_output_file(flag: str, path: Path) -> None:
    """An output file whose folder is writable and that is not a folder."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{flag} {p} is a folder; give a file path")
    check_output_dir(flag, p.parent if str(p.parent) else Path("."))


def check_text(flag: str, text: Optional[str], max_chars: int = 100_000) -> None:
    """Non-empty, not absurdly long text (a prompt longer than any context is refused before tokenizing)."""
    if text is None:
        return
    if not text.strip():
        raise CliError(f"{flag} is empty; give the text")
    if len(text) > max_chars:
        raise CliError(f"{flag} is {len(text)} characters; no model here has a context that long, shorten it")


def check_fits_context(model, tok, flag: str, text: str, extra_tokens: int = 1) -> None:
    """The prompt (plus ``extra_tokens`` to score or generate) fits the model's context."""
    from locedit.localize.inputs import context_length

    limit = context_length(model)
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    if limit is not None and n + extra_tokens > limit:
        raise CliError(f"{flag} is {n} tokens and needs {extra_tokens} more, but the model's context is {limit} "
                       "tokens; shorten it")


def model_layers(model: str) -> int:
    """Number of blocks of ``model``, from its config alone (no weights loaded)."""
    from locedit.experiment.runner import model_n_layers

    return model_n_layers(model)


def check_layer(flag: str, layer: Optional[int], model: str) -> None:
    if layer is None:
        return
    n = model_layers(model)
    if not 0 <= layer < n:
        raise CliError(f"{flag} {layer} is out of range: {model} has {n} layers (0..{n - 1})")


# -- output ----------------------------------------------------------------------------------------

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
    """Check device and dtype, then load a model (or build a ``tiny:`` or ``random:`` one) with a status line on
    stderr."""
    from locedit.models.specs import load_spec

    check_device(device)
    check_dtype(dtype)
    with console.status(f"loading {model} ..."):
        return load_spec(model, device, dtype)
