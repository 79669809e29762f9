"""The built wheel carries what ``locedit demo`` needs: the demo config is package data, read outside a checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from locedit.experiment.demo import demo_config, demo_config_text

ROOT = Path(__file__).resolve().parents[1]


def test_demo_config_loads_from_an_installed_wheel(tmp_path):
    source = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "whl"), str(source)],
                   check=True, timeout=300)
    wheel, = (tmp_path / "whl").glob("locedit-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    code = ("import locedit; from locedit.experiment.demo import demo_config, demo_config_text; "
            "print(locedit.__file__); print(demo_config().hash()); print(demo_config_text() == open(0).read())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                          input=demo_config_text(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    where, config_hash, same_text = done.stdout.split()
    assert Path(where).is_relative_to(site) and config_hash == demo_config().hash() and same_text == "True"
    assert not (ROOT / "configs" / "demo.toml").exists()  # one demo config, no copy that can drift
