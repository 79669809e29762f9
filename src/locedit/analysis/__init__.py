"""Analysis: regressions of edit success on edit layer and tracing effect, the paper's tables and
figures, and the self-contained HTML report (docs/algorithms.md#analysis)."""

from locedit.analysis.pipeline import AnalysisResult, analyze, analyze_frames
from locedit.analysis.regressions import fit_condition, layer_correlations, per_edit_frame, regression_table
from locedit.analysis.report import analyze_run, render_report, write_report, write_report_frames

__all__ = [
    "AnalysisResult", "analyze", "analyze_frames", "analyze_run", "fit_condition", "layer_correlations", "per_edit_frame",
    "regression_table", "render_report", "write_report", "write_report_frames",
]
