"""The public API of ``import locedit``: lazy names, no torch at import, ``locedit.run`` on a config file."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import locedit
from locedit.experiment.config import ConfigError, dump_toml, parse_config


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (this one has torch loaded already); its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_locedit_and_the_cli_load_no_torch():
    heavy = "sorted(m for m in ('torch', 'transformers', 'pandas', 'numpy') if m in sys.modules)"
    assert _fresh_python(f"import sys, locedit; print({heavy})") == "[]"
    assert _fresh_python(f"import sys, locedit.cli.main; print({heavy})") == "[]"  # `locedit --help` stays fast
    assert _fresh_python("import sys, locedit; locedit.Fact; print('torch' in sys.modules)") == "True"  # lazily


def test_every_public_name_resolves():
    assert "__version__" in locedit.__all__ and len(set(locedit.__all__)) == len(locedit.__all__)
    for name in locedit.__all__:
        value = getattr(locedit, name)
        assert value is not None and not isinstance(value, types.ModuleType), name
    assert dir(locedit) == sorted(locedit.__all__)
    from locedit.study.session import edit_and_evaluate
    from locedit.localize.causal_trace import trace

    assert locedit.trace is trace and locedit.edit_and_evaluate is edit_and_evaluate
    assert callable(locedit.run) and "rome" in locedit.METHODS and "fact-forcing" in locedit.PROBLEMS
    with pytest.raises(AttributeError, match="no attribute 'trace_all'"):
        locedit.trace_all


def test_locedit_edit_stays_the_function_after_its_subpackage_is_imported():
    out = _fresh_python("import sys, locedit, locedit.edit.methods\n"
                        "from locedit.edit.methods import resolve_hparams\n"
                        "print(locedit.edit is sys.modules['locedit.study.session'].edit,"
                        " type(sys.modules['locedit.edit']).__name__)")
    assert out == "True module"


def test_run_takes_a_config_file_or_object(tmp_path):
    cfg = parse_config({"name": "api", "model": {"name": "tiny:llama"},
                        "data": {"source": "demo", "limit": 1, "correctness_filter": False},
                        "localize": {"windows": [2], "samples": 2, "noise": 0.5},
                        "edit": {"methods": ["ft-1"], "layers": [3], "essence": False},
                        "analysis": {"analyze": False, "report": False}})
    path = tmp_path / "api.toml"
    path.write_text(dump_toml(cfg))
    first = locedit.run(cfg, tmp_path / "run")
    assert (first.tracing.done, first.editing.done, first.summary.failed) == (1, 1, 0)
    from_file = locedit.run(path, tmp_path / "run")  # the same config: resumes the same run directory
    assert from_file.config_hash == cfg.hash() and from_file.editing.skipped == 1 and from_file.editing.done == 0
    with pytest.raises(ConfigError, match="does not exist"):
        locedit.run(tmp_path / "missing.toml")
