"""The paper's Tables 1–8 in its layout, from the regression table, as CSV, Markdown and HTML.

Each :class:`Table` keeps raw numbers (written to CSV) and renders them for reading (three decimals,
p-values as the paper prints them, "<1e-4"). Where the paper's GPT-J numbers are known (analysis/reference.py)
for the same layout, they sit in columns labelled "paper (GPT-J)".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from locedit.analysis import reference as ref
from locedit.analysis.labels import METHODS, OUTCOME_NAMES, PROBLEMS, method_label, ordered, problem_label
from locedit.analysis.regressions import format_p, p_phrase
from locedit.evaluate.metrics import METRICS

MODELS = ("Layer", "Tracing Effect", "Both")
_R2_FIELD = {"Layer": "r2_layer", "Tracing Effect": "r2_trace", "Both": "r2_both"}
_ERR_FIELDS = {"Layer": ("r2_layer", "rmse_layer", "mae_layer"),
               "Tracing Effect": ("r2_trace", "rmse_trace", "mae_trace")}


@dataclass(frozen=True)
class Table:
    """One result table: a key (file stem and HTML id), a title, raw numbers and a note."""

    key: str
    title: str
    frame: pd.DataFrame
    note: str = ""

    def display(self) -> pd.DataFrame:
        """Numbers rendered for reading: p-value columns via format_p, other floats to 3 decimals."""
        out = self.frame.copy()
        for col in out.columns:
            if pd.api.types.is_float_dtype(out[col]):
                is_p = "p" in str(col).split()
                out[col] = [format_p(v) if is_p else _num(v) for v in out[col]]
        return out.astype(str)

    def markdown(self) -> str:
        shown = self.display()
        cells = [list(shown.columns)] + shown.values.tolist()
        esc = [[str(c).replace("|", "\\|") for c in row] for row in cells]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in esc[0]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
        text = f"**{self.title}**\n\n" + "\n".join(lines) + "\n"
        return text + (f"\n{self.note}\n" if self.note else "")

    def html(self) -> str:
        return self.display().to_html(index=False, border=0, classes="result", escape=True)

    def write(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        csv, md = out_dir / f"{self.key}.csv", out_dir / f"{self.key}.md"
        self.frame.to_csv(csv, index=False)
        md.write_text(self.markdown())
        return [csv, md]


def _num(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _row(reg: pd.DataFrame, method: str, problem: str, outcome: str) -> pd.Series | None:
    hit = reg[(reg["method"] == method) & (reg["problem"] == problem) & (reg["outcome"] == outcome)]
    return None if hit.empty else hit.iloc[0]


def bootstrap_note(reg: pd.DataFrame) -> str:
    """How the Diff intervals of ``reg`` were computed: resamples, seed, interval type."""
    if reg.empty or "boot_n" not in reg or reg["diff_lo"].isna().all():
        return "No bootstrap intervals (bootstrap off or too few facts)."
    n_boot, seeds = int(reg["boot_n"].iloc[0]), sorted({int(s) for s in reg["boot_seed"]})
    return (f"Diff 95% CI: basic cluster-bootstrap interval, {n_boot:,} resamples of the facts with replacement "
            f"(seed {', '.join(map(str, seeds))}; docs/algorithms.md#bootstrap).")


def _fit_note(row: pd.Series) -> str:
    return (f"n = {int(row['n'])} edits of {int(row['n_facts'])} facts at {int(row['n_layers'])} layers. "
            f"Nested F-test (Both vs Layer): F = {row['f']:.3g}, {p_phrase(row['p'])}; "
            f"cluster-robust (by fact) Wald test of the tracing terms: {p_phrase(row['cluster_p'])}.")


DIFF_ROW = "Diff (Both − Layer)"


def r2_table(reg: pd.DataFrame, key: str, title: str, reference: Mapping[str, float], extra_note: str = "",
             method: str = "ROME", problem: str = "EI") -> Table | None:
    """Tables 1 and 2: R² of Layer / Tracing Effect / Both for one condition's rewrite score, and their Diff
    with its bootstrap interval."""
    row = _row(reg, method, problem, "rewrite_score")
    if row is None:
        return None
    nan = math.nan
    frame = pd.DataFrame({
        "model": [*MODELS, DIFF_ROW], "R2": [*(float(row[_R2_FIELD[m]]) for m in MODELS), float(row["diff"])],
        f"R2 {ref.PAPER}": [*(reference[m] for m in MODELS), round(reference["Both"] - reference["Layer"], 3)],
        "95% CI low": [nan, nan, nan, float(row["diff_lo"])], "95% CI high": [nan, nan, nan, float(row["diff_hi"])],
    })
    note = [_fit_note(row), bootstrap_note(reg[(reg["method"] == method) & (reg["problem"] == problem)]), extra_note]
    return Table(key, title, frame, " ".join(filter(None, note)))


def outcome_table(reg: pd.DataFrame, outcome: str, key: str, title: str,
                  reference: Mapping[tuple[str, str], Sequence[float]] | None = None) -> Table | None:
    """Tables 3–6: one row per (problem, method), Layer / Trace / Both / Diff / p (+ paper columns)."""
    sub = reg[reg["outcome"] == outcome]
    if sub.empty:
        return None
    frame = pd.DataFrame({
        "problem": sub["problem"], "method": sub["method"], "n": sub["n"].astype(int),
        "Layer": sub["r2_layer"], "Trace": sub["r2_trace"], "Both": sub["r2_both"], "Diff": sub["diff"],
        "Diff 95% CI low": sub["diff_lo"], "Diff 95% CI high": sub["diff_hi"], "p": sub["p"],
        "cluster p": sub["cluster_p"],
    }).reset_index(drop=True)
    if reference is not None:
        for i, name in enumerate(("Layer", "Trace", "Both", "Diff", "p")):
            frame[f"{name} {ref.PAPER}"] = [float(reference.get((p, m), (math.nan,) * 5)[i])
                                            for p, m in zip(frame["problem"], frame["method"])]
    note = ("p: nested F-test of Both (layer-specific intercepts and tracing slopes) vs Layer; cluster p: the "
            "same hypothesis with standard errors clustered by fact (each fact appears once per layer); with few "
            "facts (under ~100) the cluster-robust test is anti-conservative. " + bootstrap_note(sub))
    return Table(key, title, frame, note)


def fig6_table(reg: pd.DataFrame, key: str, title: str, paper: bool = True) -> Table | None:
    """Fig. 6 (or 12) as numbers: per condition the rewrite score's R² of Layer alone, the increase Diff from
    adding the tracing effect with its bootstrap interval, the F-test, and (``paper``) the paper's GPT-J values
    (Table 3, window 5)."""
    sub = reg[reg["outcome"] == "rewrite_score"]
    if sub.empty:
        return None
    frame = pd.DataFrame({
        "problem": sub["problem"], "method": sub["method"], "n": sub["n"].astype(int),
        "facts": sub["n_facts"].astype(int), "R2 Layer": sub["r2_layer"], "Diff": sub["diff"],
        "Diff 95% CI low": sub["diff_lo"], "Diff 95% CI high": sub["diff_hi"], "F p": sub["p"],
    }).reset_index(drop=True)
    if paper:
        values = [ref.TABLE3_REWRITE.get((p, m)) for p, m in zip(frame["problem"], frame["method"])]
        for name, i in (("R2 Layer", 0), ("Diff", 3), ("F p", 4)):
            frame[f"{name} {ref.PAPER}"] = [math.nan if v is None else v[i] for v in values]
    note = ("F p: nested F-test of Both (layer-specific intercepts and tracing slopes) vs Layer. "
            + bootstrap_note(sub) + f" The paper's p < 1e-4 is shown as {ref.P_SMALL:g} in the CSV.")
    return Table(key, title, frame, note)


def error_table(reg: pd.DataFrame, key: str, title: str,
                reference: Mapping[tuple[str, str], Sequence[float]]) -> Table | None:
    """Tables 7/8: R², RMSE, MAE of the Layer and Tracing Effect fits, ROME EI rewrite and overall."""
    rows = []
    for outcome in ("rewrite_score", "overall_score"):
        row = _row(reg, "ROME", "EI", outcome)
        if row is None:
            continue
        for model, fields in _ERR_FIELDS.items():
            paper = reference.get((outcome, model), (math.nan,) * 3)
            rows.append({"outcome": OUTCOME_NAMES[outcome], "model": model,
                         **{name: float(row[f]) for name, f in zip(("R2", "RMSE", "MAE"), fields)},
                         **{f"{name} {ref.PAPER}": float(v) for name, v in zip(("R2", "RMSE", "MAE"), paper)}})
    if not rows:
        return None
    return Table(key, title, pd.DataFrame(rows),
                 "RMSE and MAE from in-sample residuals (docs/algorithms.md#regressions).")


# the mean-score table's columns: every metric with a heading, in registration order
SCORE_COLUMNS = METRICS.mapping(lambda m: m.name, lambda m: m.heading, lambda m: m.heading is not None)


def score_table(edits: pd.DataFrame) -> Table | None:
    """Mean scores of every (method, problem, layer) cell of a sweep, in paper order (not a paper table)."""
    if edits.empty:
        return None
    cols = [c for c in SCORE_COLUMNS if c in edits.columns]
    frame = edits.assign(method=edits["method"].map(method_label), problem=edits["problem"].map(problem_label),
                         **{c: pd.to_numeric(edits[c], errors="coerce") for c in cols})  # None (score off) -> NaN
    means = frame.groupby(["method", "problem", "layer"])[cols].mean().reset_index()
    means.insert(3, "n", frame.groupby(["method", "problem", "layer"]).size().to_numpy())
    rank = {m: i for i, m in enumerate(ordered(means["method"], METHODS))}
    prank = {p: i for i, p in enumerate(ordered(means["problem"], PROBLEMS))}
    means = means.sort_values(["problem", "method", "layer"], key=lambda c: c.map(prank) if c.name == "problem"
                              else c.map(rank) if c.name == "method" else c)
    means = means.rename(columns=dict(SCORE_COLUMNS))
    return Table("scores", "Mean edit scores by method, problem and edit layer", means.reset_index(drop=True),
                 "Means over facts; efficacy success is the original ROME metric p(new) > p(true) "
                 "(docs/algorithms.md#original-rome-metrics).")


def build_tables(reg: pd.DataFrame, reg_concentrated: pd.DataFrame | None = None, n_concentrated: int = 0,
                 n_traced: int = 0, zsre: bool = False, window: int = 5,
                 reg_window10: pd.DataFrame | None = None) -> list[Table]:
    """Tables 1–8 that the run's conditions allow (Table 8 instead of 7 for a zsRE run), and Figs. 6 and 12 as
    tables (Fig. 12 from the window-10 regressions ``reg_window10``, when given)."""
    paper_note = "" if not zsre else "The paper's column is GPT-J on CounterFact; this run is zsRE."
    tables = [
        r2_table(reg, "table1", "Table 1. R² of ROME Error Injection rewrite score", ref.TABLE1, paper_note),
    ]
    if reg_concentrated is not None and not reg_concentrated.empty:
        best = reg_concentrated.loc[reg_concentrated["diff"].idxmax()] if reg_concentrated["diff"].notna().any() \
            else None
        extra = (f"Concentrated subset: {n_concentrated} of {n_traced} traced facts (paper: {ref.CONCENTRATED_N} "
                 f"of 652).")
        if best is not None:
            extra += (f" Largest Diff over all conditions and outcomes: {best['diff']:.3f} ({best['method']} "
                      f"{best['problem']}, {OUTCOME_NAMES.get(best['outcome'], best['outcome'])}; paper "
                      f"{ref.TABLE2_MAX_DIFF} for FF with FT).")
        tables.append(r2_table(reg_concentrated, "table2", "Table 2. R² on facts with concentrated tracing effects",
                               ref.TABLE2, extra))
    for key, outcome, reference in (("table3", "rewrite_score", None if zsre else ref.TABLE3_REWRITE),
                                    ("table4", "paraphrase_score", None), ("table5", "neighborhood_score", None),
                                    ("table6", "overall_score", None)):
        title = f"Table {key[-1]}. R² of {OUTCOME_NAMES[outcome]} by editing problem and method"
        tables.append(outcome_table(reg, outcome, key, title, reference))
    if zsre:
        tables.append(error_table(reg, "table8", "Table 8. Layer vs tracing effect, ROME on zsRE",
                                  ref.TABLE8))
    else:
        tables.append(error_table(reg, "table7", "Table 7. Layer vs tracing effect, ROME Error Injection", ref.TABLE7))
    tables.append(fig6_table(reg, "fig06_table", f"Fig. 6 as a table: R² of rewrite score, Layer and the increase "
                             f"from tracing (window {window})", paper=not zsre))
    if reg_window10 is not None and not reg_window10.empty:
        tables.append(fig6_table(reg_window10, "fig12_table", "Fig. 12 as a table: as Fig. 6 with tracing effects "
                                 "from window-10 traces", paper=not zsre))
    return [t for t in tables if t is not None]


def write_tables(tables: Sequence[Table], out_dir: Path) -> list[Path]:
    """CSV and Markdown per table, plus tables.md with all of them."""
    paths = [p for t in tables for p in t.write(out_dir)]
    combined = out_dir / "tables.md"
    combined.write_text("\n\n".join(t.markdown() for t in tables))
    return paths + [combined]
