"""The HTML report in a real headless Chromium: it loads, shows every section, and looks right.

Needs Debian's ``chromium`` package (apt-get install -y chromium). Outside CI the test is skipped when
chromium is missing; in CI (env CI set) a missing browser is a failure. The screenshot is saved under
the test's tmp path and copied to $LOCEDIT_ARTIFACTS (default: <tmp>/locedit-artifacts), printed below.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from locedit.analysis.report import SECTIONS, write_report_frames
from synthetic import synthetic_frames, synthetic_manifest

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    message = "chromium is not installed: apt-get update && apt-get install -y chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _chromium(browser: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_in_headless_chromium(tmp_path, record_property):
    browser = _browser()
    frames = synthetic_frames(seed=2, n_facts=20, n_layers=8, edit_layers=(0, 2, 5, 7), methods=("FT-5", "ROME"),
                              problems=("EI", "FF"), windows=(5, 10))
    report = write_report_frames(frames, tmp_path / "run", synthetic_manifest(n_layers=8, windows=(5, 10)))
    url = report.resolve().as_uri()

    dom = _chromium(browser, "--dump-dom", url, tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for key in SECTIONS:
        assert re.search(rf'<section id="{key}">\s*<h2>', dom.stdout), f"section {key} missing from the DOM"
    assert dom.stdout.count("<img ") >= 10 and 'id="table1"' in dom.stdout
    assert "Traceback" not in dom.stdout and "nan" not in re.sub(r"<[^>]+>", " ", dom.stdout).split()
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
              or "ERR_FILE_NOT_FOUND" in line or "net::ERR" in line]
    assert not errors, errors

    shot = tmp_path / "report_screenshot.png"
    res = _chromium(browser, f"--screenshot={shot}", "--window-size=1280,4000", url, tmp=tmp_path)
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 50_000, res.stderr[-2000:]
    stable = Path(os.environ.get("LOCEDIT_ARTIFACTS") or Path(tempfile.gettempdir()) / "locedit-artifacts")
    stable.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, stable / shot.name)
    record_property("screenshot", str(stable / shot.name))
    print(f"report screenshot: {stable / shot.name}")
