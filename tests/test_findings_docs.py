"""The README's findings tables say what the committed exports under docs/findings/ hold."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECTIONS = {"SmolLM2-135M: all 20 conditions": "smollm2-135m"}


def _p(value: str) -> str:
    return "<1e-4" if float(value) < 1e-4 else f"{float(value):.3f}"


def _expected_rows(folder: str) -> list[str]:
    rows = list(csv.DictReader((ROOT / "docs" / "findings" / folder / "fig06_table.csv").open()))
    f3 = lambda r, k: f"{float(r[k]):.3f}"  # noqa: E731
    return [f"| {r['problem']} | {r['method']} | {r['n']} ({r['facts']}) | {f3(r, 'R2 Layer')} | {f3(r, 'Diff')} "
            f"({f3(r, 'Diff 95% CI low')}, {f3(r, 'Diff 95% CI high')}) | {_p(r['F p'])} | "
            f"{f3(r, 'R2 Layer paper (GPT-J)')} | {f3(r, 'Diff paper (GPT-J)')} | {_p(r['F p paper (GPT-J)'])} |"
            for r in rows]


def _section(title: str) -> str:
    start = README.index(f"### {title}")
    end = README.find("\n#", start + 4)
    return README[start:end if end > 0 else None]


@pytest.mark.parametrize("title, folder", SECTIONS.items())
def test_readme_fig06_table_is_the_exported_one(title, folder):
    text = _section(title)
    shown = [line for line in text.splitlines() if re.match(r"\| (EI|TR|FE|FA|FF) \|", line)]
    assert shown == _expected_rows(folder)
    assert len(shown) == 20


@pytest.mark.parametrize("title, folder", SECTIONS.items())
def test_readme_figures_of_a_finding_exist(title, folder):
    paths = re.findall(r"\]\((docs/findings/[^)]+\.png)\)", _section(title))
    assert paths and all((ROOT / p).is_file() for p in paths)
    assert all(f"/{folder}/" in p for p in paths)
