"""The study's analysis items: Figs. 6/12 as tables with bootstrap intervals, Figs. 14, 19-22, the zsRE
analysis (Table 8, p(o_true) filter), and the findings export, on synthetic runs and a tiny-model run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from locedit.analysis import analyze_frames
from locedit.analysis.export import FINDINGS_FIGURES, export_findings
from locedit.analysis.figures import FIGURES
from locedit.cli.main import app
from locedit.experiment.config import parse_config
from locedit.experiment.runner import run_experiment
from synthetic import synthetic_frames, synthetic_manifest

SMALL = dict(seed=2, n_facts=24, n_layers=8, edit_layers=(0, 2, 5, 7))
STUDY_FIGURES = ("fig06_r2_bars", "fig12_r2_bars_window10", "fig14_rome_ei_magnitude_abs_last",
                 "fig21_rome_ei_zeroing_panels", "fig22_rome_ei_overall_zeroing_panels")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    frames = synthetic_frames(methods=("FT-5", "ROME"), problems=("EI", "FF"), windows=(5, 10), **SMALL)
    out = tmp_path_factory.mktemp("study") / "analysis"
    return frames, analyze_frames(frames, out, synthetic_manifest(n_layers=8, windows=(5, 10)), figures=STUDY_FIGURES)


def test_study_figures_are_drawn(study):
    _, result = study
    assert [f.key for f in result.figures] == list(STUDY_FIGURES) and result.skipped == {}
    assert all(f.png.stat().st_size > 5000 for f in result.figures)


def test_fig14_needs_rewrite_magnitudes(tmp_path):
    frames = synthetic_frames(methods=("ROME",), problems=("EI",), **SMALL)
    frames["edits"]["rome_rewrite_magnitude"] = float("nan")  # a run whose evaluation did not store them
    result = analyze_frames(frames, tmp_path / "analysis", synthetic_manifest(n_layers=8),
                            figures=("fig14_rome_ei_magnitude_abs_last",))
    assert result.figures == [] and "magnitudes" in result.skipped["fig14_rome_ei_magnitude_abs_last"]


def test_fig6_and_fig12_tables_carry_the_intervals(study):
    _, result = study
    for key, reg in (("fig06_table", result.regressions),
                     ("fig12_table", pd.read_csv(result.out_dir / "regressions_window10.csv"))):
        table = result.table(key)
        rewrite = reg[reg["outcome"] == "rewrite_score"].reset_index(drop=True)
        assert list(zip(table.frame["problem"], table.frame["method"])) == list(zip(rewrite.problem, rewrite.method))
        assert table.frame["Diff 95% CI low"].tolist() == pytest.approx(rewrite["diff_lo"].tolist())
        assert table.frame["Diff 95% CI high"].tolist() == pytest.approx(rewrite["diff_hi"].tolist())
        assert (result.out_dir / f"{key}.csv").exists()
        assert "1,000 resamples" in (result.out_dir / f"{key}.md").read_text()
    fig6 = result.table("fig06_table").frame.set_index(["problem", "method"])
    assert fig6.loc[("EI", "ROME"), "Diff paper (GPT-J)"] == 0.001 and fig6.loc[("FF", "FT-5"), "Diff 95% CI low"] > 0
    assert "<1e-4" in result.table("fig06_table").markdown()  # the paper's F p, printed as the paper does
    t3 = result.table("table3").frame
    assert t3["Diff 95% CI low"].notna().all() and (t3["Diff 95% CI low"] < t3["Diff 95% CI high"]).all()
    key = result.summary["key_numbers"]
    assert key["bootstrap"]["resamples"] == 1000 and key["conditions_interval_above_0"] >= 1
    assert len(key["diff_intervals_rewrite"]) == key["conditions"] == 4


def _zsre(frames: dict[str, pd.DataFrame]) -> dict:
    manifest = synthetic_manifest(n_layers=8)
    manifest["config"]["data"] = {"source": "zsre", "correctness_filter": False, "erasure_threshold": 0.02}
    return manifest


def test_zsre_run_draws_figs_19_20_and_table_8_on_probable_facts_only(tmp_path):
    frames = synthetic_frames(methods=("ROME",), problems=("EI",), **SMALL)
    facts = frames["facts"]
    result = analyze_frames(frames, tmp_path / "analysis", _zsre(frames))
    drawn = {f.key for f in result.figures}
    assert {"fig19_zsre_rome_te_panels", "fig20_zsre_rome_overall_panels"} <= drawn
    assert not drawn & {"fig15_rome_ei_te_panels", "fig18_rome_ei_overall_panels"}
    assert "zsre" in result.skipped["fig15_rome_ei_te_panels"]
    assert "table8" in [t.key for t in result.tables] and "table7" not in [t.key for t in result.tables]
    probable = set(facts.loc[facts["passes_erasure_filter"] == 1, "case_id"])
    assert 0 < len(probable) < len(facts)  # the filter has something to remove
    edits = frames["edits"]
    assert result.summary["counts"]["edits_analysed"] == int(edits["case_id"].isin(probable).sum())


def test_findings_export_copies_small_outputs_and_replaces_stale_ones(study, tmp_path):
    _, result = study
    run_dir = result.out_dir.parent
    (run_dir / "results.sqlite").write_bytes(b"database")
    (run_dir / "manifest.json").write_text("{}")
    dest = tmp_path / "findings" / "model"
    (dest / "figures").mkdir(parents=True)
    (dest / "README.md").write_text("kept")
    (dest / "old_table.csv").write_text("stale")
    (dest / "figures" / "fig99.png").write_bytes(b"stale")
    written = export_findings(run_dir, dest)
    names = {p.relative_to(dest).as_posix() for p in written}
    assert {"table1.csv", "table1.md", "fig06_table.csv", "fig06_table.md", "fig12_table.csv", "regressions.csv",
            "summary.json", "manifest.json", "figures/fig06_r2_bars.png",
            "figures/fig14_rome_ei_magnitude_abs_last.png"} <= names
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == names | {"README.md"} and (dest / "README.md").read_text() == "kept"
    assert not any(n.endswith((".sqlite", ".svg", ".html")) for n in on_disk)
    with pytest.raises(FileNotFoundError, match="locedit analyze"):
        export_findings(tmp_path / "not-analysed", dest)


def test_findings_figures_are_registered():
    assert set(FINDINGS_FIGURES) <= set(FIGURES)


def test_cli_analyze_exports_a_tiny_model_run(tmp_path):
    cfg = parse_config({
        "name": "study-tiny", "model": {"name": "tiny:llama"},
        "data": {"source": "demo", "limit": 4, "correctness_filter": False},
        "localize": {"windows": [3], "samples": 2, "zeroing": True, "zeroing_window": 3},
        "edit": {"methods": ["rome"], "problems": ["error-injection"], "layers": [0, 3], "essence": False},
        "stats": {"n_tokens": 2000}, "analysis": {"analyze": False, "report": False},
    })
    run_dir = tmp_path / "run"
    run_experiment(cfg, run_dir, progress=False)
    dest = tmp_path / "docs" / "findings" / "tiny"
    res = CliRunner().invoke(app, ["analyze", str(run_dir), "--export", str(dest), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["exported"] and all((dest / p).exists() for p in ("table1.csv", "fig06_table.md", "manifest.json"))
    assert json.loads((dest / "manifest.json").read_text())["config"]["name"] == "study-tiny"
    drawn = {p.stem for p in (dest / "figures").glob("*.png")}
    assert {"fig06_r2_bars", "fig14_rome_ei_magnitude_abs_last", "fig21_rome_ei_zeroing_panels",
            "fig22_rome_ei_overall_zeroing_panels"} <= drawn
    assert not (dest / "results.sqlite").exists()
