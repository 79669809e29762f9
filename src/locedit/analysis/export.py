"""Copy a run's small outputs into a folder that is committed (docs/findings/<model>/, docs/findings/README.md).

What is copied: every table of RUN_DIR/analysis as CSV and Markdown (the paper's tables, Figs. 6 and 12 as
tables, the regressions and correlations), its summary.json, the run's manifest.json and the PNGs of the
figures the findings show (:data:`FINDINGS_FIGURES`, those the run drew). Never the results database or
the HTML report. A re-export first removes what an earlier export put there, so no stale table or figure
survives; a README.md in the folder is kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from locedit.analysis.pipeline import ANALYSIS_DIR
from locedit.experiment.manifest import MANIFEST_NAME

SUMMARY_NAME = "summary.json"
FIGURES_DIR = "figures"
KEPT = "README.md"
# the figures a findings page shows: the R² bars, the paper's key scatter plots, scores by layer, zeroing, zsRE
FINDINGS_FIGURES: tuple[str, ...] = (
    "fig01_peak_layers", "fig04_rome_ei_scatter", "fig06_r2_bars", "fig07_scores_by_layer", "fig12_r2_bars_window10",
    "fig14_rome_ei_magnitude_abs_last", "fig19_zsre_rome_te_panels", "fig20_zsre_rome_overall_panels",
    "fig21_rome_ei_zeroing_panels", "fig22_rome_ei_overall_zeroing_panels",
)


def _clear_previous(dest: Path) -> None:
    """Remove the files an earlier export wrote (tables, summary, manifest, figure PNGs); keep README.md."""
    for path in [*dest.glob("*.csv"), *dest.glob("*.md"), dest / SUMMARY_NAME, dest / MANIFEST_NAME,
                 *(dest / FIGURES_DIR).glob("*.png")]:
        if path.is_file() and path.name != KEPT:
            path.unlink()


def export_findings(run_dir: str | Path, dest: str | Path, analysis_dir: str = ANALYSIS_DIR,
                    figures: tuple[str, ...] = FINDINGS_FIGURES) -> list[Path]:
    """Copy the small outputs of an analysed run into ``dest``; returns the files written.

    Raises FileNotFoundError when the run has not been analysed (no RUN_DIR/analysis/summary.json).
    """
    run_dir, dest = Path(run_dir), Path(dest)
    source = run_dir / analysis_dir
    if not (source / SUMMARY_NAME).is_file():
        raise FileNotFoundError(f"{source} holds no analysis; run `locedit analyze {run_dir}` first")
    dest.mkdir(parents=True, exist_ok=True)
    _clear_previous(dest)
    files = sorted([*source.glob("*.csv"), *source.glob("*.md"), source / SUMMARY_NAME])
    if (run_dir / MANIFEST_NAME).is_file():
        files.append(run_dir / MANIFEST_NAME)
    written = [Path(shutil.copy2(path, dest / path.name)) for path in files]
    drawn = [source / FIGURES_DIR / f"{key}.png" for key in figures]
    if any(path.is_file() for path in drawn):
        (dest / FIGURES_DIR).mkdir(exist_ok=True)
    written += [Path(shutil.copy2(path, dest / FIGURES_DIR / path.name)) for path in drawn if path.is_file()]
    return written
