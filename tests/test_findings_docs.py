"""The README's findings tables say what the committed exports under docs/findings/ hold."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECTIONS = {"SmolLM2-135M: all 20 conditions": "smollm2-135m"}
ZSRE = ("Gemma-3-270M on zsRE: ROME under Error Injection (Table 8, Figs. 19-20)", "gemma3-270m-zsre")


def _p(value: str) -> str:
    return "<1e-4" if float(value) < 1e-4 else f"{float(value):.3f}"


def _f3(row: dict[str, str], key: str) -> str:
    return f"{float(row[key]):.3f}"


def _table(folder: str, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader((ROOT / "docs" / "findings" / folder / f"{name}.csv").open()))


def _expected_rows(folder: str) -> list[str]:
    rows, f3 = _table(folder, "fig06_table"), _f3
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


def test_readme_table8_is_the_exported_one():
    title, folder = ZSRE
    shown = [line for line in _section(title).splitlines() if re.match(r"\| (rewrite|overall) score", line)]
    cols = ("R2", "RMSE", "MAE", "R2 paper (GPT-J)", "RMSE paper (GPT-J)", "MAE paper (GPT-J)")
    assert shown == [f"| {r['outcome']} | {r['model']} | " + " | ".join(_f3(r, c) for c in cols) + " |"
                     for r in _table(folder, "table8")]
    assert len(shown) == 4
    fig6 = _table(folder, "fig06_table")[0]
    assert f"by {_f3(fig6, 'Diff')}, 95% cluster-bootstrap interval\n({_f3(fig6, 'Diff 95% CI low')}, " \
           f"{_f3(fig6, 'Diff 95% CI high')}), F-test p = {_f3(fig6, 'F p')}" in _section(title)


@pytest.mark.parametrize("title, folder", [*SECTIONS.items(), ZSRE])
def test_readme_figures_of_a_finding_exist(title, folder):
    paths = re.findall(r"\]\((docs/findings/[^)]+\.png)\)", _section(title))
    assert paths and all((ROOT / p).is_file() for p in paths)
    assert all(f"/{folder}/" in p for p in paths)
