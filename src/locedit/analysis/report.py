"""``locedit report``: one self-contained HTML file with a run's tables, figures, manifest and deviations.

Figures are embedded as base64 PNG and styles are inline, so the file opens anywhere (also offline,
mailed, or archived) without the run directory and without any network access.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from locedit.analysis.labels import OUTCOME_NAMES
from locedit.analysis.pipeline import ANALYSIS_DIR, AnalysisResult, analyze, analyze_frames, is_zsre
from locedit.analysis.regressions import format_p
from locedit.analysis.tables import Table
from locedit.experiment.killpoints import checkpoint
from locedit.experiment.manifest import read_manifest
from locedit.experiment.store import read_frames
from locedit.experiment.sweep import error_line

REPORT_NAME = "report.html"
# Section ids, in page order; the browser test checks each is present.
SECTIONS: dict[str, str] = {
    "summary": "Summary", "deviations": "Deviations from the paper", "tables": "Tables",
    "regressions": "All regressions", "correlations": "Per-layer correlations", "figures": "Figures",
    "skipped": "Skipped figures", "failures": "Failures", "manifest": "Manifest",
}

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #4c72b0;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table.result{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.result th,table.result td{padding:.25em .6em;border-bottom:1px solid #e3e3e3;text-align:right}
table.result th{background:#f3f5f9}table.result td:first-child,table.result th:first-child{text-align:left}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em;max-height:40em}
table.result td{white-space:nowrap}.note{font-size:.88em;color:#444}nav ul{columns:3}
table.kv{border-collapse:collapse}table.kv th{text-align:left;vertical-align:top;padding:.2em 1.2em .2em 0;width:18em}
table.kv td{padding:.2em 0;vertical-align:top}.warn{color:#a33}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _frame_html(df: pd.DataFrame, max_rows: int | None = None) -> str:
    shown = df if max_rows is None else df.head(max_rows)
    out = shown.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            is_p = col in ("p", "cluster_p", "F p")
            out[col] = [format_p(v) if is_p else ("–" if pd.isna(v) else f"{v:.3f}") for v in out[col]]
    text = out.to_html(index=False, border=0, classes="result", escape=True)
    if max_rows is not None and len(df) > max_rows:
        text += f'<p class="note">First {max_rows} of {len(df)} rows; all rows are in the CSV.</p>'
    return text


def _kv(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def _section(key: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_esc(SECTIONS[key])}</h2>\n{body}\n</section>\n'


def _get(d: dict[str, Any] | None, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def compat_switches(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Every config setting that chooses between reference (compat) and corrected behaviour.

    Keys ending in ``_mode`` or named ``compat*``, and any value equal to "compat" or "fixed", found
    anywhere in the manifest's config (dotted paths).
    """
    found: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif prefix.rsplit(".", 1)[-1].endswith("_mode") or prefix.rsplit(".", 1)[-1].startswith("compat") \
                or node in ("compat", "fixed"):
            found[prefix] = node

    walk(_get(manifest, "config", default={}), "")
    return found


def statistics_corpus(manifest: dict[str, Any] | None) -> tuple[str, int | None]:
    """(corpus description, token count) of the second-moment statistics, as the runner records them.

    The manifest's ``stats.second_moments`` entries (the corpus actually read and its token count) when
    statistics were computed, else its ``stats.corpus`` and ``stats.n_tokens`` (the configured ones).
    """
    stats = _get(manifest, "stats", default={}) or {}
    moments = stats.get("second_moments", [])
    corpus = "; ".join(sorted({str(m["corpus"]) for m in moments})) or stats.get("corpus", "not recorded")
    tokens = max(m["n_tokens"] for m in moments) if moments else stats.get("n_tokens")
    return str(corpus), tokens


def deviations(manifest: dict[str, Any] | None, result: AnalysisResult) -> dict[str, str]:
    """What differs from the paper's setup, read from the manifest (with "not recorded" when absent)."""
    cfg = _get(manifest, "config", default={}) or {}
    model = _get(cfg, "model", "name", default="not recorded")
    dtype = _get(cfg, "model", "dtype", default="not recorded")
    source = _get(cfg, "data", "source", default="not recorded")
    corpus, tokens = statistics_corpus(manifest)
    layers = _get(cfg, "edit", "layers", default=None)
    switches = compat_switches(manifest)
    if is_zsre(manifest):
        threshold = _get(cfg, "data", "erasure_threshold", default=0.02)
        data = (f"{source}: zsRE in MEND format, the local 1,000-record train slice (the paper used "
                f"zsre_mend_eval); no correctness filter, only facts with p(o_true) > {threshold} are analysed"
                + ("." if threshold == 0.02 else " (the paper: 0.02)."))
    elif source == "demo":
        data = ("demo: the 64 facts shipped with locedit (written for this project, each with one paraphrase and "
                "one neighborhood prompt); not CounterFact, so the scores are not comparable with the paper's.")
    else:
        data = (f"{source}: CounterFact in MEND/EasyEdit format with 1 paraphrase and 1 neighborhood prompt per "
                "record (the paper's ROME-format file has 2 and 10; the reference code scores only the first of "
                "each, but they are not the same prompts); no attribute or generation prompts, no relation ids.")
    return {
        "Model": f"{model} ({dtype}); the paper used GPT-J-6B (28 layers) and GPT2-XL (48 layers) in float32.",
        "Data": data,
        "Second-moment statistics corpus": (
            f"{corpus}" + (f", {tokens:,} tokens" if isinstance(tokens, int) else ", token count not recorded")
            + "; the paper used 100,000 Wikipedia (20200501.en) documents."),
        "Edit layers": (f"{layers}" if layers else "see manifest") + "; the paper's GPT-J layers were "
                       "0, 4, 5, 8, 12, 16, 20, 24, 27 (ROME default 5).",
        "ROME layer for Figs. 1 and 4": (f"{result.summary.get('rome_layer', 'not determined')}: the edited layer "
                                         "closest to the paper's ROME depth (GPT-J layer 5 of 28)."),
        "Essence score": ("computed, as in the paper." if _get(cfg, "edit", "essence", default=True) else
                          "not computed (edit.essence = false, for time): Fig. 8 and the essence column of Fig. 9 "
                          "are absent, and so is the overall score with essence."),
        "Compat switches": ", ".join(f"{k} = {v}" for k, v in switches.items()) or "none recorded in the config",
        "Analysis": ("RMSE/MAE are in-sample (docs/algorithms.md#regressions); a cluster-robust (by fact) Wald test "
                     "is reported beside the paper's nested F-test because each fact appears once per layer; beyond the "
                     "paper, each Diff has a 95% cluster-bootstrap interval (facts resampled, docs/algorithms.md#bootstrap)."),
    }


def _num(x: Any) -> str:
    """Three decimals, or "n/a" for a fit that could not be made (too few rows, constant outcome)."""
    return "n/a" if x is None or x != x else f"{x:.3f}"


def _p(x: Any) -> str:
    return "n/a" if x is None or x != x else format_p(x)


def _summary_html(result: AnalysisResult, manifest: dict[str, Any] | None) -> str:
    s = result.summary
    counts = s.get("counts", {})
    items = {
        "run": _get(manifest, "config", "name", default="?"),
        "config hash": str(_get(manifest, "config_hash", default="?"))[:12],
        "model": _get(manifest, "config", "model", "name", default="?"),
        "facts (selected / correct / traced)": (f"{counts.get('facts', 0)} / {counts.get('facts_correct', 0)} / "
                                                f"{counts.get('facts_traced', 0)}"),
        "edits (stored / analysed)": f"{counts.get('edits', 0)} / {counts.get('edits_analysed', 0)}",
        "failed units": counts.get("failures", 0),
        "methods": ", ".join(s.get("methods", [])) or "–", "problems": ", ".join(s.get("problems", [])) or "–",
        "tracing": f"{s.get('kind', '?')}, window {s.get('window', '?')}",
        "concentrated facts": f"{s.get('concentrated', {}).get('n', 0)} of {s.get('concentrated', {}).get('of', 0)}",
    }
    key = s.get("key_numbers", {})
    t1 = key.get("rome_ei_rewrite")
    if t1:
        items["ROME EI rewrite R² (Layer / Trace / Both)"] = (
            f"{_num(t1['r2_layer'])} / {_num(t1['r2_trace'])} / {_num(t1['r2_both'])}; "
            f"F-test p {_p(t1['p'])}, cluster-robust p {_p(t1['cluster_p'])}")
        items["ROME EI rewrite Diff (95% bootstrap interval)"] = (
            f"{_num(t1['diff'])} [{_num(t1.get('diff_lo'))}, {_num(t1.get('diff_hi'))}]")
    if "mean_r2_layer_rewrite" in key:
        items["mean R² over conditions (Layer / Trace), rewrite"] = (
            f"{_num(key['mean_r2_layer_rewrite'])} / {_num(key['mean_r2_trace_rewrite'])} (paper: 0.585 Layer)")
    if "bootstrap" in key:
        boot = key["bootstrap"]
        items["conditions whose Diff interval lies above 0, rewrite"] = (
            f"{key['conditions_interval_above_0']} of {key['conditions']} ({boot['interval']}; "
            f"{boot['resamples']:,} resamples, seed {boot['seed']})")
    if "max_diff_rewrite" in key:
        m = key["max_diff_rewrite"]
        items["largest Diff, rewrite"] = f"{_num(m['diff'])} ({m['method']} {m['problem']}; paper 0.032)"
    body = _kv(items)
    if s.get("regressions_skipped"):
        body += f'<p class="warn">Regressions skipped: {_esc(s["regressions_skipped"])}</p>'
    note = _get(manifest, "note")
    if note:
        body += f'<p class="warn">{_esc(note)}</p>'
    return body


def _table_html(table: Table) -> str:
    note = f'<p class="note">{_esc(table.note)}</p>' if table.note else ""
    return f'<div id="{table.key}"><h3>{_esc(table.title)}</h3>{table.html()}{note}</div>'


def _figure_html(result: AnalysisResult) -> str:
    parts = []
    for fig in result.figures:
        data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
        parts.append(f'<figure id="{fig.key}"><img alt="{_esc(fig.title)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_esc(fig.title)} ({_esc(fig.key)}; SVG beside the PNG in "
                     f"{ANALYSIS_DIR}/figures)</figcaption></figure>")
    return "\n".join(parts) or "<p>No figures could be drawn for this run.</p>"


def render_report(result: AnalysisResult, manifest: dict[str, Any] | None,
                  failures: pd.DataFrame | None = None) -> str:
    """The report as one HTML string."""
    title = f"locedit report — {_get(manifest, 'config', 'name', default='run')}"
    toc = "".join(f'<li><a href="#{k}">{_esc(v)}</a></li>' for k, v in SECTIONS.items())
    toc += "".join(f'<li><a href="#{t.key}">{_esc(t.title.split(".")[0])}</a></li>' for t in result.tables)
    corr = result.correlations
    rewrite_reg = result.regressions
    if not rewrite_reg.empty:
        rewrite_reg = rewrite_reg.assign(outcome=rewrite_reg["outcome"].map(lambda o: OUTCOME_NAMES.get(o, o)))
    skipped = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in result.skipped.items())
    fails = failures if failures is not None else pd.DataFrame()
    if fails.empty:
        fail_html = "<p>No failed units.</p>"
    else:
        by_stage = fails.groupby("stage").size().rename("units").reset_index()
        fail_html = _frame_html(by_stage) + _frame_html(fails, max_rows=20)
    manifest_text = json.dumps(manifest or {}, indent=2, sort_keys=True, default=str)
    body = [
        f"<h1>{_esc(title)}</h1>",
        f'<nav id="toc"><h2>Contents</h2><ul>{toc}</ul></nav>',
        _section("summary", _summary_html(result, manifest)),
        _section("deviations", _kv(deviations(manifest, result))),
        _section("tables", "\n".join(_table_html(t) for t in result.tables) or "<p>No tables (no regressions).</p>"),
        _section("regressions", '<p class="note">Every (method, problem, outcome); CSV: analysis/regressions.csv.</p>'
                 + (_frame_html(rewrite_reg) if not rewrite_reg.empty else "<p>None.</p>")),
        _section("correlations", '<p class="note">Pearson r within each central layer of the outcome vs the tracing '
                 "effect (effect) and the last-subject-token effect (te_last).</p>"
                 + (_frame_html(corr, max_rows=200) if not corr.empty else "<p>None.</p>")),
        _section("figures", _figure_html(result)),
        _section("skipped", f"<ul>{skipped}</ul>" if skipped else "<p>No figure was skipped.</p>"),
        _section("failures", fail_html),
        _section("manifest", f"<pre>{_esc(manifest_text)}</pre>"),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report_frames(frames: dict[str, pd.DataFrame], run_dir: Path, manifest: dict[str, Any] | None,
                        window: int | None = None, kind: str = "mlp") -> Path:
    """Analyse the frames into run_dir/analysis and write run_dir/report.html."""
    result = analyze_frames(frames, Path(run_dir) / ANALYSIS_DIR, manifest, window, kind)
    path = Path(run_dir) / REPORT_NAME
    path.write_text(render_report(result, manifest, frames.get("failures")), encoding="utf-8")
    return path


def write_report(run_dir: str | Path, window: int | None = None, kind: str = "mlp") -> Path:
    """Analyse a run directory (tables and figures into RUN_DIR/analysis, as ``analyze`` does) and write
    its self-contained report, RUN_DIR/report.html. Calling ``analyze`` first is not needed."""
    return write_report_frames(read_frames(run_dir), Path(run_dir), read_manifest(run_dir), window, kind)


def analyze_run(run_dir: str | Path, *, report: bool) -> tuple[Path | None, str | None]:
    """After a sweep: the tables and figures, and with ``report`` the HTML report too; returns the report's
    path and, instead of raising, the error line of an analysis that failed (the sweep's results stay)."""
    try:
        checkpoint("analysis:start")
        if report:  # write_report runs the analysis too
            return write_report(run_dir), None
        analyze(run_dir)
        return None, None
    except Exception as err:  # noqa: BLE001 - the sweep's results are kept; the error is reported
        return None, error_line(err)
