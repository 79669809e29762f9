"""The paper's Fig. 2 heatmap: prompt tokens x layers, colour = p(target) with the site restored.

Noised (subject) tokens are marked with ``*``; tokens before the subject are not restored and show
p_noise. The title gives the restored site, window, p_clean and p_noise. Written as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from locedit.localize.result import TraceResult, ZeroingResult  # noqa: E402

_CMAP = {"mlp": "Greens", "attn": "Reds", "block": "Purples"}
_SITE = {"mlp": "MLP output", "attn": "attention output", "block": "hidden state (block output)"}


def plot_trace(result: TraceResult | ZeroingResult, kind: str = "mlp", window: int = 5, path: str | Path = "trace",
               formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Draw the grid of ``kind``/``window`` and write ``path`` with each suffix in ``formats``."""
    zeroing = isinstance(result, ZeroingResult)
    grid = result.grid(kind, window) if zeroing else result.full_grid(kind, window)
    labels = [repr(t)[1:-1] + (" *" if result.s0 <= i < result.s1 else "") for i, t in enumerate(result.tokens)]
    target = result.settings.get("target", "")
    fig, ax = plt.subplots(figsize=(max(5.0, 0.22 * grid.shape[1] + 2.5), 0.32 * len(labels) + 1.6), dpi=150)
    im = ax.pcolormesh(grid, cmap="Blues_r" if zeroing else _CMAP.get(kind, "Greens"),
                       vmin=min(grid.min(), 0.0 if zeroing else result.p_noise), vmax=max(grid.max(), result.p_clean))
    ax.invert_yaxis()
    ax.set_yticks([i + 0.5 for i in range(len(labels))], labels, fontsize=8)
    step = max(1, grid.shape[1] // 10)
    ax.set_xticks([i + 0.5 for i in range(0, grid.shape[1], step)], [str(i) for i in range(0, grid.shape[1], step)])
    ax.set_xlabel(f"centre layer (window {window})")
    if zeroing:
        title = f"Zeroing {_SITE[kind]} at one token\np_clean = {result.p_clean:.3f}"
    else:
        title = f"Restoring {_SITE[kind]} after corrupting the subject (*)\np_clean = {result.p_clean:.3f}, p_noise = {result.p_noise:.3f}"
    ax.set_title(title, fontsize=9)
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label(f"p({target!r})", fontsize=8)
    fig.tight_layout()
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = stem.with_suffix(f".{fmt}")
        fig.savefig(out)
        written.append(out)
    plt.close(fig)
    return written
