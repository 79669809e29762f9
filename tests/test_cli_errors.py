"""Every command answers bad input with exit code 2 and one line on stderr, before any model is loaded.

The cases run through the real entry point, ``locedit.cli.main.main()``, in this process (a subprocess per
case would pay the import of torch each time); :func:`locedit_in_process` isolates each call like a fresh
process. A few cases also run as ``python -m locedit.cli.main`` subprocesses, so the process boundary
(exit status, real stderr, ``LOCEDIT_DEBUG``) is exercised too. Checks that need no weights use WEIGHTLESS, a
model folder with a config and no weights: had the command tried to load it, the error would be a load
failure, so the expected message also proves that the refusal came before the model was loaded. Cases that
need the model's tokenizer or context use the tiny random Llama.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from transformers import LlamaConfig

WEIGHTLESS = "{weightless}"
LONG_PROMPT = "word " * 600  # 600 tokens; the tiny models' context is 512
P, S = "The mother tongue of Danielle Darrieux is", "Danielle Darrieux"
TRACE = ["trace", "-m", WEIGHTLESS, "-p", P, "-s", S]
EDIT = ["edit", "-m", WEIGHTLESS, "-p", P, "-s", S, "--target-new", " English"]

# (command line, what the error names, how it says to fix it)
CASES = [
    (["predict", "-m", WEIGHTLESS, "-p", P, "--device", "cuda"], "CUDA is not available", "use --device cpu"),
    (["predict", "-m", WEIGHTLESS, "-p", P, "--device", "tpu9"], "unknown --device", "use cpu, cuda"),
    (["predict", "-m", WEIGHTLESS, "-p", P, "--device", "cuda:7"], "--device cuda:7", "--device cpu"),
    (["predict", "-m", WEIGHTLESS, "-p", P, "--dtype", "int8"], "unknown --dtype", "use one of"),
    (["predict", "-m", WEIGHTLESS, "-p", "  "], "--prompt is empty", "give the text"),
    (["predict", "-m", WEIGHTLESS, "-p", "x" * 120_000], "120000 characters", "shorten it"),
    (["predict", "-m", WEIGHTLESS, "-p", P, "--top-k", "0"], "--top-k must be", ">= 1"),
    (["predict", "-m", "tiny:llama", "-p", LONG_PROMPT], "context is 512 tokens", "shorten it"),
    (["predict", "-m", "no-such-model", "-p", P], "unknown model", "alias"),
    (["predict"], "Missing option '--prompt'", "locedit predict --help"),
    (["predikt"], "No such command", "locedit --help"),
    (["trace", "-m", WEIGHTLESS, "-p", P, "-s", "Zoë Müller"], "not found in prompt", "fix --subject"),
    (["trace", "-m", WEIGHTLESS, "-p", "", "-s", S], "give --prompt and --subject", "--dataset"),
    ([*TRACE, "-t", " "], "--target is empty", "leave it out"),
    ([*TRACE, "--kind", "mlps"], "unknown --kind mlps", "use any of mlp"),
    ([*TRACE, "--window", "0"], "--window 0 does not fit", "between 1 and 6"),
    ([*TRACE, "--window", "99"], "--window 99 does not fit", "between 1 and 6"),
    ([*TRACE, "--samples", "0"], "--samples must be", ">= 1"),
    ([*TRACE, "--engine", "turbo"], "unknown --engine", "fast or oracle"),
    ([*TRACE, "--noise", "-1"], "--noise must be > 0", "> 0"),
    ([*TRACE, "--chunk", "0"], "--chunk must be", ">= 1"),
    ([*TRACE, "-o", "{file}"], "is a file, not a folder", "choose a folder"),
    ([*TRACE, "-o", "{file}/sub"], "is a file, not a folder", "choose another path"),
    (["trace", "-m", WEIGHTLESS, "--dataset", "{missing}"], "does not exist", "check the path"),
    ([*TRACE, "--limit", "0"], "--limit must be", ">= 1"),
    ([*EDIT, "--layer", "99"], "--layer 99 is out of range", "(0..5)"),
    ([*EDIT, "--method", "rom"], "rom", "rome"),
    ([*EDIT, "--problem", "error-injektion"], "error-injektion", "error-injection"),
    ([*EDIT, "--o-noise-mode", "loud"], "unknown --o-noise-mode", "use one of compat"),
    ([*EDIT, "--generate", "-1"], "--generate must be", ">= 0"),
    ([*EDIT, "--generate", "100000"], "--generate must be", "<= 1000"),
    ([*EDIT, "--noise", "0"], "--noise must be > 0", "> 0"),
    ([*EDIT, "--device", "cuda"], "CUDA is not available", "use --device cpu"),
    (["edit", "-m", WEIGHTLESS, "-p", P, "-s", "Zoë"], "does not occur in the prompt", "fix --subject"),
    (["edit", "-m", WEIGHTLESS, "-p", P, "-s", S, "--target-new", ""], "--target-new is empty", "give the text"),
    (["edit", "-m", WEIGHTLESS, "--fact-id", "987654"], "no fact with case_id 987654", "ids run"),
    (["edit", "-m", "tiny:llama", "-p", LONG_PROMPT + S, "-s", S], "context is 512 tokens", "shorten it"),
    (["bench", "edit", "-m", WEIGHTLESS, "--facts", "0"], "--facts must be", ">= 1"),
    (["bench", "edit", "-m", WEIGHTLESS, "--layer", "6"], "--layer 6 is out of range", "(0..5)"),
    (["bench", "trace", "-m", WEIGHTLESS, "--facts", "0"], "--facts must be", ">= 1"),
    (["stats", "-m", WEIGHTLESS, "--layers", "2,9"], "--layers [9] out of range", "(0..5)"),
    (["stats", "-m", WEIGHTLESS, "--layers", "x"], "bad --layers", "ranges such as"),
    (["stats", "-m", WEIGHTLESS, "--layers", "1", "--tokens", "0"], "--tokens must be", ">= 1"),
    (["data", "inspect", "{missing}"], "no such file", "pass an existing dataset file"),
    (["data", "known", "-m", WEIGHTLESS, "--dataset", "{missing}"], "does not exist", "check the path"),
    (["data", "known", "-m", WEIGHTLESS, "--save-known", "{folder}"], "is a folder", "give a file path"),
    (["run", "{missing}"], "does not exist", "check the path"),
    (["run", "{folder}"], "is a folder", "give a file"),
    (["run", "{file}"], "malformed TOML", "{file}"),
    (["run", "{config}", "--out", "{file}"], "is a file, not a folder", "choose a folder"),
    (["run", "{config}", "--threads", "0"], "Invalid value for '--threads'", "locedit run --help"),
    (["demo", "--out", "{file}"], "is a file, not a folder", "choose a folder"),
    (["export", "{folder}"], "not a run directory", "--out of a `locedit run`"),
    (["export", "{folder}", "--format", "xlsx"], "unknown --format", "csv, parquet"),
    (["analyze", "{folder}"], "not a run directory", "--out of a `locedit run`"),
    (["report", "{file}"], "not a run directory", "--out of a `locedit run`"),
    (["data", "download", "wikipedia"], "wikipedia", "counterfact"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli_errors")
    weightless = root / "weightless"
    LlamaConfig(num_hidden_layers=6, hidden_size=32, intermediate_size=96, num_attention_heads=4,
                max_position_embeddings=512).save_pretrained(weightless)
    (root / "file.txt").write_text("not a folder, not a config\n")
    (root / "folder").mkdir()
    facts = root / "facts.json"
    facts.write_text(json.dumps([{"case_id": 0, "subject": S, "prompt": P, "target_true": "French",
                                  "target_new": "English"}]))
    config = root / "c.toml"
    config.write_text(f'name = "c"\n[model]\nname = "tiny:llama"\n[data]\nsource = "{facts}"\n')
    return {"weightless": str(weightless), "file": str(root / "file.txt"), "folder": str(root / "folder"),
            "missing": str(root / "missing.json"), "config": str(config)}


@dataclass(frozen=True)
class Outcome:
    """What one ``locedit`` call left behind: its exit status and what it wrote."""

    code: int
    stdout: str
    stderr: str


def locedit(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """``locedit ARGS`` as a new process, through ``python -m locedit.cli.main``."""
    done = subprocess.run([sys.executable, "-m", "locedit.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return Outcome(done.returncode, done.stdout, done.stderr)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """What Python does with a warning that no filter ignores: write it to (the current) stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _as_in_a_fresh_process(stderr: io.StringIO) -> Iterator[None]:
    """Undo afterwards what ``configure_output`` and the commands change, and show on ``stderr`` what a new
    process would: environment variables, warning filters and display, logger levels; a warning or log record
    reaches stderr as in a process without pytest's handlers; the shared rich console picks its colours for
    the captured stream (it reads ``sys.stderr`` on every write, but detects colours once, when built)."""
    from locedit.cli.common import console

    environ, colours = dict(os.environ), console._color_system
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    levels = [lg.level for lg in loggers]
    last_resort = logging.StreamHandler(stderr)
    last_resort.setLevel(logging.WARNING)
    logging.getLogger().addHandler(last_resort)
    os.environ.pop("LOCEDIT_DEBUG", None)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            console._color_system = console._detect_color_system()
            yield
    finally:
        logging.getLogger().removeHandler(last_resort)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        os.environ.clear()
        os.environ.update(environ)
        console._color_system = colours


def locedit_in_process(args: list[str]) -> Outcome:
    """``locedit ARGS`` through the real entry point in this process, with stdout and stderr captured."""
    from locedit.cli.main import main

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["locedit", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _as_in_a_fresh_process(err):
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue())


def one_line_refusal(args: list[str], problem: str, fix: str, got: Outcome) -> str | None:
    """None if ``got`` is exit code 2, nothing on stdout and one stderr line "error: ..." naming ``problem`` and
    ``fix`` without a traceback; else what went wrong."""
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    if (got.code == 2 and len(lines) == 1 and lines[0].startswith("error:") and problem in lines[0]
            and fix in lines[0] and "Traceback" not in got.stderr and not got.stdout):
        return None
    return (f"locedit {' '.join(a[:60] for a in args)}\n  -> rc {got.code}, stderr {got.stderr[-600:]!r}, "
            f"stdout {got.stdout[-200:]!r}")


def _filled(case, places: dict[str, str]) -> tuple[list[str], str, str]:
    args, problem, fix = case
    return [a.format(**places) for a in args], problem.format(**places), fix.format(**places)


def test_every_bad_input_is_one_line_and_exit_code_2(places):
    bad = []
    for case in CASES:
        args, problem, fix = _filled(case, places)
        bad.append(one_line_refusal(args, problem, fix, locedit_in_process(args)))
    assert not any(bad), "\n".join(b for b in bad if b)


@pytest.mark.parametrize("args", [["predict", "-m", WEIGHTLESS, "-p", P, "--device", "cuda"], ["predict"], ["predikt"]],
                         ids=["command-error", "usage-error", "unknown-command"])
def test_bad_input_in_a_real_process(places, args):
    """A command's error, a click usage error and an unknown command, through the installed entry point."""
    args, problem, fix = _filled(next(case for case in CASES if case[0] == args), places)
    assert one_line_refusal(args, problem, fix, locedit(args)) is None


def test_in_process_calls_leave_no_trace(places):
    """A refused call changes nothing that the next one (or the next test) reads."""
    from locedit.cli.common import console

    environ, filters, colours = dict(os.environ), list(warnings.filters), console._color_system
    levels = {name: logging.getLogger(name).level for name in ("", "transformers", "huggingface_hub")}
    before = locedit_in_process(["run", places["missing"]])
    assert locedit_in_process(["run", places["missing"]]) == before and before.code == 2
    assert dict(os.environ) == environ and warnings.filters == filters and console._color_system == colours
    assert {name: logging.getLogger(name).level for name in levels} == levels


def test_locedit_debug_shows_the_traceback(places):
    loud = locedit(["predict", "-m", places["weightless"], "-p", P, "--device", "cuda"], env={"LOCEDIT_DEBUG": "1"})
    assert loud.code != 0 and "Traceback (most recent call last)" in loud.stderr
    assert "CUDA is not available" in loud.stderr.splitlines()[-1]
    usage = locedit(["run", "x.toml", "--threads", "0"], env={"LOCEDIT_DEBUG": "1"})
    assert "Traceback (most recent call last)" in usage.stderr


def test_library_chatter_only_with_verbose(tmp_path):
    """Non-ASCII subject and target on a real trace: locedit's own warning only; -v adds the libraries'."""
    args = ["trace", "-m", "tiny:llama", "-p", "The mother tongue of Zoë Müller is", "-s", "Zoë Müller",
            "-t", " 日本語", "--samples", "2", "-w", "3", "-o", str(tmp_path)]
    quiet, verbose = locedit(args), locedit(["-v", *args])
    assert quiet.code == 0 and verbose.code == 0, quiet.stderr + verbose.stderr
    assert "tracing it anyway" in quiet.stderr
    assert all(line.startswith(("warning:", "tracing it anyway")) for line in quiet.stderr.splitlines()), quiet.stderr
    assert "Warning:" not in quiet.stderr and "[transformers]" not in quiet.stderr
    assert "Warning:" in verbose.stderr or "[transformers]" in verbose.stderr, verbose.stderr
    assert "'Zoë Müller'" not in quiet.stdout and "日本語" in quiet.stdout


@pytest.mark.parametrize("args, verbose", [
    (["-v", "run", "x.toml"], True), (["--verbose", "trace"], True), (["run", "-v"], False),
    (["trace", "-p", "-v"], False), ([], False), (["--help"], False),
])
def test_verbose_is_read_before_the_command(args, verbose):
    """The global -v is known before click parses anything (the commands import torch and tqdm)."""
    from locedit.cli.main import verbose_requested

    assert verbose_requested(args) is verbose


def test_dependency_progress_bars_stay_quiet_once_the_commands_are_built():
    """Running a command imports tqdm; its bars must still be off without -v and on with it."""
    code = ("import sys; sys.argv = ['locedit', {flag}'models', '--json']\n"
            "from locedit.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "from tqdm.auto import tqdm\nprint('BARS', not tqdm(range(1)).disable, file=sys.stderr)")
    for flag, shown in (("", False), ("'-v', ", True)):
        done = subprocess.run([sys.executable, "-c", code.format(flag=flag)], capture_output=True, text=True,
                              timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("TQDM")})
        assert f"BARS {shown}" in done.stderr, done.stderr


@pytest.mark.parametrize("args, shows", [(["--help"], "bench"), (["models", "--help"], "--json")])
def test_help_builds_every_command_without_torch(args, shows):
    """typer builds every command on each call; the registry-derived help must not import torch for that."""
    code = (f"import sys; sys.argv = ['locedit', *{args!r}]\n"
            "from locedit.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as exit_:\n    assert exit_.code in (0, None), exit_.code\n"
            "print('TORCH', 'torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "TORCH False" in done.stderr, done.stderr
    assert shows in done.stdout


def test_live_help_names_only_real_options():
    import typer

    from locedit.cli.common import live_help
    from locedit.registry import LiveText

    app = typer.Typer()
    app.command("probe", cls=live_help(methd=LiveText("Editing method.")))(lambda method: None)
    app.command("other")(lambda: None)
    with pytest.raises(TypeError, match="live_help for methd: command probe has no such parameter"):
        typer.main.get_command(app)
