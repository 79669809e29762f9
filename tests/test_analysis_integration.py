"""The analysis on a real (small) run: the experiment runner on a tiny random Llama, then analyze + report."""

from __future__ import annotations

import pytest

from locedit.analysis import analyze, render_report
from locedit.analysis.report import SECTIONS
from locedit.experiment.config import parse_config
from locedit.experiment.manifest import read_manifest
from locedit.experiment.runner import run_experiment
from locedit.experiment.store import read_frames


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = parse_config({
        "name": "analysis-integration", "model": {"name": "tiny:llama"},
        "data": {"source": "demo", "limit": 4, "correctness_filter": False},
        "localize": {"windows": [3], "samples": 2},
        "edit": {"methods": ["rome"], "problems": ["error-injection"], "layers": [0, 3]},
        "stats": {"n_tokens": 2000}, "analysis": {"analyze": False, "report": False},
    })
    out = tmp_path_factory.mktemp("run") / "run"
    run_experiment(cfg, out, progress=False)
    return out


def test_analyze_real_run(run_dir):
    frames = read_frames(run_dir)
    result = analyze(run_dir, figures=("fig01_peak_layers", "fig04_rome_ei_scatter", "fig07_scores_by_layer"))
    assert result.summary["window"] == 3  # the only traced window
    rome = result.regressions.query("method == 'ROME' and problem == 'EI' and outcome == 'rewrite_score'")
    assert len(rome) == 1 and rome.iloc[0].n == len(frames["edits"]) == 8
    assert 0 <= rome.iloc[0].r2_layer <= rome.iloc[0].r2_both <= 1
    assert [t.key for t in result.tables][:1] == ["table1"] and (run_dir / "analysis" / "table1.md").exists()
    assert {f.key for f in result.figures} == {"fig01_peak_layers", "fig04_rome_ei_scatter", "fig07_scores_by_layer"}
    page = render_report(result, read_manifest(run_dir), frames["failures"])
    assert all(f'id="{key}"' in page for key in SECTIONS) and "tiny:llama" in page
