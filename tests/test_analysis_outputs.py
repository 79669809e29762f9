"""Tables, figures, the report and the CLI on small synthetic runs (full and partial)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from locedit.analysis import analyze_frames, render_report
from locedit.analysis.figures import FIGURES
from locedit.analysis.labels import method_label, problem_label
from locedit.analysis.report import SECTIONS, compat_switches, deviations
from locedit.analysis.tables import score_table
from synthetic import synthetic_frames, synthetic_manifest, write_run
from locedit.cli.main import app

SMALL = dict(seed=1, n_facts=24, n_layers=8, edit_layers=(0, 2, 5, 7))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """ROME and FT-5 on EI and FF, windows 5 and 10: supports every figure."""
    frames = synthetic_frames(methods=("FT-5", "ROME"), problems=("EI", "FF"), windows=(5, 10), **SMALL)
    out = tmp_path_factory.mktemp("full")
    manifest = synthetic_manifest(n_layers=8, windows=(5, 10))
    manifest["config"]["edit"]["hparams"] = {"rome": {"o_noise_mode": "compat"}}
    return frames, manifest, analyze_frames(frames, out / "analysis", manifest)


def test_tables_written_with_paper_layout(full):
    _, _, result = full
    keys = [t.key for t in result.tables]
    assert keys == ["table1", "table2", "table3", "table4", "table5", "table6", "table7", "fig06_table", "fig12_table",
                    "scores"]
    for key in keys:
        assert (result.out_dir / f"{key}.csv").exists() and (result.out_dir / f"{key}.md").exists()
    t1 = pd.read_csv(result.out_dir / "table1.csv")
    assert list(t1.model) == ["Layer", "Tracing Effect", "Both", "Diff (Both − Layer)"]
    assert t1["R2 paper (GPT-J)"].tolist() == [0.947, 0.016, 0.948, 0.001]
    rome = result.regressions.query("method == 'ROME' and problem == 'EI' and outcome == 'rewrite_score'").iloc[0]
    assert t1.R2.tolist() == pytest.approx([rome.r2_layer, rome.r2_trace, rome.r2_both, rome["diff"]])
    assert t1["95% CI low"].iloc[3] == rome.diff_lo and t1["95% CI high"].iloc[3] == rome.diff_hi
    assert t1["95% CI low"].iloc[:3].isna().all() and "1,000 resamples" in (result.out_dir / "table1.md").read_text()
    t3 = result.table("table3").frame
    assert list(zip(t3.problem, t3.method)) == [("EI", "FT-5"), ("EI", "ROME"), ("FF", "FT-5"), ("FF", "ROME")]
    md = (result.out_dir / "table3.md").read_text()
    assert "<1e-4" in md and "Layer paper (GPT-J)" in md  # FT-5 FF has a built-in tracing slope
    t7 = result.table("table7").frame
    assert set(t7.model) == {"Layer", "Tracing Effect"} and (t7.RMSE > 0).all()


def test_score_table_means_every_cell(full):
    frames, _, result = full
    scores = result.table("scores").frame
    edits = frames["edits"]
    assert len(scores) == edits.groupby(["method", "problem", "layer"]).ngroups
    assert list(zip(scores.problem, scores.method))[0] == ("EI", "FT-5") and scores.n.sum() == len(edits)
    for row in scores.itertuples():
        cell = edits[(edits.method.map(method_label) == row.method) & (edits.problem.map(problem_label) == row.problem)
                     & (edits.layer == row.layer)]
        assert row.n == len(cell) and row.rewrite == pytest.approx(cell.rewrite_score.mean())
        assert row.neighborhood == pytest.approx(cell.neighborhood_score.mean())


def test_score_table_shows_scores_that_were_off_as_a_dash(full):
    frames, _, _ = full
    edits = frames["edits"].astype({"essence_score": object})
    edits["essence_score"] = None  # as stored when a sweep runs with essence = false
    shown = score_table(edits).display()
    assert set(shown["essence"]) == {"–"} and all(v.replace(".", "").isdigit() for v in shown["rewrite"])


def test_deviations_name_the_data_that_was_used(full):
    _, manifest, result = full
    demo = json.loads(json.dumps(manifest))
    demo["config"]["data"]["source"] = "demo"
    assert "MEND/EasyEdit" in deviations(manifest, result)["Data"]
    assert "shipped with locedit" in deviations(demo, result)["Data"]
    assert "MEND/EasyEdit" not in deviations(demo, result)["Data"]


def test_deviations_say_when_the_essence_score_was_off(full):
    _, manifest, result = full
    off = json.loads(json.dumps(manifest))
    off["config"]["edit"]["essence"] = False
    assert deviations(manifest, result)["Essence score"].startswith("computed")
    assert "Fig. 8" in deviations(off, result)["Essence score"]


def test_all_figures_drawn_when_data_present(full):
    _, _, result = full
    zsre_only = [spec.key for spec in FIGURES.values() if spec.data == "zsre"]
    assert zsre_only == ["fig19_zsre_rome_te_panels", "fig20_zsre_rome_overall_panels"]
    assert result.skipped == {key: "drawn for zsre runs only; this run is counterfact" for key in zsre_only}
    assert [f.key for f in result.figures] == [key for key in FIGURES if key not in zsre_only]
    for fig in result.figures:
        assert fig.png.read_bytes()[:4] == b"\x89PNG" and fig.svg.read_text().lstrip().startswith("<?xml")
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["key_numbers"]["max_diff_rewrite"]["method"] == "FT-5"
    assert summary["counts"]["failures"] == 1


def test_partial_run_skips_with_reasons(tmp_path):
    frames = synthetic_frames(methods=("MEMIT",), problems=("TR",), zeroing=False, **SMALL)
    frames["edits"]["essence_score"] = float("nan")
    only = ("fig01_peak_layers", "fig04_rome_ei_scatter", "fig07_scores_by_layer", "fig08_essence_by_layer",
            "fig12_r2_bars_window10", "fig21_rome_ei_zeroing_panels")
    result = analyze_frames(frames, tmp_path / "analysis", synthetic_manifest(n_layers=8), figures=only)
    # no ROME EI: no Tables 1, 2, 7
    assert [t.key for t in result.tables] == ["table3", "table4", "table5", "table6", "fig06_table", "scores"]
    assert set(result.skipped) == {"fig04_rome_ei_scatter", "fig08_essence_by_layer", "fig12_r2_bars_window10",
                                   "fig21_rome_ei_zeroing_panels"}
    assert "ROME Error Injection" in result.skipped["fig04_rome_ei_scatter"]
    assert "window-10" in result.skipped["fig12_r2_bars_window10"]
    assert {f.key for f in result.figures} == {"fig01_peak_layers", "fig07_scores_by_layer"}


def test_run_without_tracing_still_reports(tmp_path):
    frames = synthetic_frames(methods=("ROME",), problems=("EI",), **SMALL)
    for table in ("trace_points", "trace_cells", "trace_layers", "zeroing_layers"):
        frames[table] = frames[table].iloc[0:0]
    result = analyze_frames(frames, tmp_path / "analysis", None, figures=False)
    assert [t.key for t in result.tables] == ["scores"] and "trace_layers" in result.summary["regressions_skipped"]
    page = render_report(result, None, frames["failures"])
    assert all(f'id="{key}"' in page for key in SECTIONS)


def test_report_is_self_contained(full):
    frames, manifest, result = full
    page = render_report(result, manifest, frames["failures"])
    for key in list(SECTIONS) + [t.key for t in result.tables] + [f.key for f in result.figures]:
        assert f'id="{key}"' in page, key
    assert page.count("data:image/png;base64,") == len(result.figures)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert "1 paraphrase and 1 neighborhood prompt" in page and "100,000 tokens" in page
    assert "edit.hparams.rome.o_noise_mode = compat" in page
    assert "SYNTHETIC DATA" in page


def test_compat_switches_found_anywhere():
    manifest = {"config": {"edit": {"hparams": {"rome": {"early_stop_mode": "rome_original"}}},
                           "data": {"compat_skips": True}, "x": {"spacing": "fixed"}, "y": 3}}
    assert compat_switches(manifest) == {"edit.hparams.rome.early_stop_mode": "rome_original",
                                         "data.compat_skips": True, "x.spacing": "fixed"}


def test_cli_analyze_and_report(tmp_path):
    frames = synthetic_frames(methods=("ROME",), problems=("EI",), **SMALL)
    run_dir = write_run(tmp_path / "run", frames, synthetic_manifest(n_layers=8))
    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(run_dir), "--json", "--no-figures"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["window"] == 5 and summary["counts"]["edits"] == len(frames["edits"])
    assert summary["key_numbers"]["rome_ei_rewrite"]["n"] == summary["counts"]["edits_analysed"]
    res = runner.invoke(app, ["analyze", str(run_dir), "--no-figures"])
    assert res.exit_code == 0 and "Table 1" in res.stdout and "| Layer |" in res.stdout
    res = runner.invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0 and res.stdout.strip() == str(run_dir / "report.html")
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert len(list((run_dir / "analysis" / "figures").glob("*.png"))) >= 10
    bad = runner.invoke(app, ["analyze", str(run_dir), "--window", "3"])
    assert bad.exit_code == 2 and "pass --window" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "results.sqlite" in missing.output
