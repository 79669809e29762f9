"""The slow, obviously-correct patch grid: one full forward pass per (token, centre layer) cell.

Exactly the reference procedure (docs/algorithms.md#causal-tracing): a batch of ``1 + samples`` identical rows, row 0 clean,
rows 1.. corrupted by the embedding noise; at cell (t, c) edits overwrite the site output of rows 1..
at token t in every layer of the window with row 0's value (``clean``) or with 0 (``zero``), and the
measure is the mean over rows 1.. of the joint target probability. Nothing is cached between cells.
This is what the fast engine (:mod:`locedit.localize.engine`) is tested against.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel

from locedit.localize.patching import (PatchGrid, PatchProblem, Restore, add_noise, mean_prob, restore_site, target_log_prob,
                                       validate_problem)
from locedit.models.families import Site, family_for
from locedit.models.interventions import Edit, intervene


def _overwrite(token: int, value: str) -> Edit:
    """Edit: rows 1.. at ``token`` take row 0's output (clean) or 0 (zero)."""

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        h = hidden.clone()
        h[1:, token] = h[0, token] if value == "clean" else 0.0
        return h

    return edit


def _run(model: PreTrainedModel, problem: PatchProblem, rows: int, restored: dict[Site, Edit]) -> torch.Tensor:
    """Summed target log-prob of each row of ``rows`` identical copies of the sequence, under ``restored``."""
    ids = torch.tensor([list(problem.ids)] * rows, device=model.device)
    edits = dict(restored)
    if problem.corruption is not None and rows > 1:
        edits[family_for(model).site("embed_output")] = add_noise(problem.corruption, first_row=1)
    with intervene(model, edits):
        logits = model(input_ids=ids).logits
    k = problem.n_target
    return target_log_prob(logits[:, problem.n_prompt - 1: problem.n_prompt - 1 + k], problem.target)


@torch.no_grad()
def oracle_grid(model: PreTrainedModel, problem: PatchProblem, restores: Sequence[Restore], tokens: Sequence[int]) -> PatchGrid:
    """The grid of every restore over ``tokens`` x all centre layers, one forward per cell."""
    validate_problem(model, problem, restores, tokens)
    fam = family_for(model)
    n_layers = fam.n_layers(model)
    rows = 1 + problem.samples
    p_clean = mean_prob(_run(model, problem, 1, {}))
    p_base = mean_prob(_run(model, problem, rows, {})[1:])
    grids = {}
    for r in restores:
        grid = np.zeros((len(tokens), n_layers))
        for i, t in enumerate(tokens):
            for c in range(n_layers):
                l0, l1 = r.layers(c, n_layers)
                restored = {restore_site(fam, r.kind, layer): _overwrite(t, r.value) for layer in range(l0, l1)}
                grid[i, c] = mean_prob(_run(model, problem, rows, restored)[1:])
        grids[r] = grid
    return PatchGrid(p_clean=p_clean, p_base=p_base, tokens=list(tokens), grids=grids)
