"""The fast patch-grid engine: the oracle's numbers from far fewer FLOPs, with exact reuse only.

How it stays exact (each point is an identity of causal decoders, not an approximation):

1. **One base run.** A batch of ``1 + samples`` rows (row 0 clean, rows 1.. noised) is run once with
   the KV cache on. It gives p_clean, p_noise, the clean site outputs to restore, and for every layer
   the corrupted block inputs and keys/values of every position and sample.
2. **Start at the first restored layer.** A cell whose window starts at layer l0 equals the corrupted
   run below l0, so its rows enter the batch at block l0 with the cached corrupted block input.
3. **Start at the restored token.** Restoring at token t leaves positions < t unchanged at every layer,
   so only positions t.. are run; the cached corrupted keys/values of positions < t are the prefix of
   each attention call (a per-row :class:`~locedit.models.prefix.PrefixCache` in place of the HF cache).
4. **Score only the target.** The last target token is never fed (it predicts nothing scored) and the
   final norm and unembedding run only at the K positions that predict the target.
5. **Many cells per forward.** All cells of one token (every restore x centre layer x sample) share a
   batch, sorted by l0 so that each block runs on the rows already active; identical cells (the same
   kind, value and clipped layer range) are computed once. ``max_rows`` bounds the rows per forward.

Blocks are the model's own modules, called with the exact arguments the model itself passes them
(recorded once per token by :func:`~locedit.models.interventions.recording_calls` on a one-row run with a
real KV-cache prefix, and replayed by :meth:`~locedit.models.interventions.ModuleCall.replay`), so
rotary/learned positions, masks and per-layer attention types come from the model, for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel

from locedit.localize.patching import (PatchGrid, PatchProblem, Restore, add_noise, mean_prob, restore_site, target_log_prob,
                                       validate_problem)
from locedit.models.families import Site, family_for
from locedit.models.interventions import Edit, ModuleCall, intervene, module_at, recording_calls
from locedit.models.prefix import PrefixCache, cache_kwargs, cache_swap, full_cache, layer_kv

DEFAULT_MAX_ROWS = 512


@dataclass(frozen=True)
class _Cell:
    """A distinct restoration at one token: site kind, value and clipped layer range [l0, l1)."""

    kind: str
    value: str
    l0: int
    l1: int


@dataclass
class _BaseRun:
    """Everything the cells reuse from the one base run (corrupted rows only, unless noted)."""

    block_inputs: list[torch.Tensor]  # per layer [samples, N, d]
    keys: list[torch.Tensor]  # per layer [samples, heads, N, head_dim] (whatever layout the model caches)
    values: list[torch.Tensor]
    clean_sites: dict[str, list[torch.Tensor]]  # per kind, per layer [N, d] (row 0, clean)
    p_clean: float
    p_base: float


class FastEngine:
    """Computes patch grids for one model; see the module docstring for the exact-reuse rules."""

    def __init__(self, model: PreTrainedModel, max_rows: int = DEFAULT_MAX_ROWS):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.model = model
        self.fam = family_for(model)
        self.n_layers = self.fam.n_layers(model)
        self.max_rows = max_rows
        self.block_inputs = [self.fam.site("block_input", layer) for layer in range(self.n_layers)]
        self.blocks = [module_at(model, site) for site in self.block_inputs]
        self.final_norm = self.fam.module(model, self.fam.final_norm)
        self.unembed = self.fam.unembed_module(model)

    # ------------------------------------------------------------------------------------------ base run
    def _base_run(self, problem: PatchProblem, ids: torch.Tensor, kinds: set[str]) -> _BaseRun:
        corrupt = problem.corruption is not None
        rows = 1 + problem.samples if corrupt else 1
        predicting = torch.arange(problem.n_prompt - 1, problem.n_prompt - 1 + problem.n_target, device=ids.device)
        batch = ids.expand(rows, -1)
        clean: dict[str, list] = {k: [None] * self.n_layers for k in kinds}

        def keep_clean(kind: str, layer: int) -> Edit:
            def edit(hidden: torch.Tensor) -> None:
                clean[kind][layer] = hidden[0].clone()

            return edit

        edits = {restore_site(self.fam, k, layer): keep_clean(k, layer) for k in kinds for layer in range(self.n_layers)}
        if corrupt:
            edits[self.fam.site("embed_output")] = add_noise(problem.corruption, first_row=1)
        with recording_calls(self.model, self.block_inputs) as calls, intervene(self.model, edits):
            out = self.model(input_ids=batch, use_cache=True, logits_to_keep=predicting, **cache_kwargs(self.model, full_cache()))
        lp = target_log_prob(out.logits, problem.target)
        sel = slice(1, None) if corrupt else slice(0, 1)
        kv = [layer_kv(out.past_key_values, layer) for layer in range(self.n_layers)]
        return _BaseRun(
            block_inputs=[c.hidden[sel] for c in calls],
            keys=[kk[sel] for kk, _ in kv],
            values=[vv[sel] for _, vv in kv],
            clean_sites=clean,
            p_clean=mean_prob(lp[:1]),
            p_base=mean_prob(lp[sel]),
        )

    def _token_calls(self, ids: torch.Tensor, t: int) -> list[ModuleCall]:
        """The block arguments of a run over positions t.. with a KV prefix of t positions."""
        past = self.model(input_ids=ids[:, :t], use_cache=True, **cache_kwargs(self.model, full_cache())).past_key_values if t > 0 else None
        with recording_calls(self.model, self.block_inputs) as calls:
            self.model(input_ids=ids[:, t:], use_cache=t > 0, **cache_kwargs(self.model, past))
        return calls  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------ cells
    def _patch_edits(self, base: _BaseRun, cells: Sequence[_Cell], samples: int, layer: int, n_active: int,
                     t: int) -> dict[Site, Edit]:
        """Edits overwriting, at relative position 0 (token t), the rows whose window covers ``layer``."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, c in enumerate(cells[: n_active // samples]):
            if c.l0 <= layer < c.l1:
                groups.setdefault((c.kind, c.value), []).append(i)
        by_site: dict[Site, list] = {}
        for (kind, value), idx in groups.items():
            rows = (torch.tensor(idx)[:, None] * samples + torch.arange(samples)).flatten().to(self.model.device)
            fill = base.clean_sites[kind][layer][t] if value == "clean" else None
            by_site.setdefault(restore_site(self.fam, kind, layer), []).append((rows, fill))

        def make(entries) -> Edit:
            def edit(hidden: torch.Tensor) -> torch.Tensor:
                h = hidden.clone()
                for rows, fill in entries:
                    h[rows, 0] = fill if fill is not None else 0.0
                return h

            return edit

        return {site: make(entries) for site, entries in by_site.items()}

    def _run_cells(self, problem: PatchProblem, base: _BaseRun, calls: list[ModuleCall], t: int,
                   cells: Sequence[_Cell]) -> np.ndarray:
        """Mean target probability of each cell (cells sorted by l0), restoring at token t."""
        s = problem.samples
        device = self.model.device
        sample_of_row = torch.arange(s, device=device).repeat(len(cells))
        hidden: torch.Tensor | None = None
        n_active = 0
        for layer in range(cells[0].l0, self.n_layers):
            entering = sum(1 for c in cells if c.l0 == layer) * s
            if entering:
                new = base.block_inputs[layer][sample_of_row[n_active: n_active + entering], t:]
                hidden = new if hidden is None else torch.cat([hidden, new])
                n_active += entering
            active = sample_of_row[:n_active]
            prefix = (PrefixCache(base.keys[layer][active, :, :t], base.values[layer][active, :, :t]) if t > 0
                      else PrefixCache(None, None))
            with intervene(self.model, self._patch_edits(base, cells, s, layer, n_active, t)):
                hidden = calls[layer].replay(self.blocks[layer], hidden, cache_swap(prefix))
        first = problem.n_prompt - 1 - t
        logits = self.unembed(self.final_norm(hidden[:, first: first + problem.n_target]))
        probs = target_log_prob(logits, problem.target).double().exp().view(len(cells), s)
        return probs.mean(1).cpu().numpy()

    # ------------------------------------------------------------------------------------------ grid
    @torch.no_grad()
    def grid(self, problem: PatchProblem, restores: Sequence[Restore], tokens: Sequence[int]) -> PatchGrid:
        """Every restore over ``tokens`` x all centre layers (same contract as the oracle)."""
        validate_problem(self.model, problem, restores, tokens)
        ids = torch.tensor([list(problem.ids[:-1])], device=self.model.device)  # the last target token predicts nothing
        kinds = {r.kind for r in restores if r.value == "clean"}
        base = self._base_run(problem, ids, kinds)
        cell_of = {(r, c): _Cell(r.kind, r.value, *r.layers(c, self.n_layers)) for r in restores for c in range(self.n_layers)}
        cells = sorted(set(cell_of.values()), key=lambda c: (c.l0, c.l1, c.kind, c.value))
        per_chunk = max(1, self.max_rows // problem.samples)
        grids = {r: np.zeros((len(tokens), self.n_layers)) for r in restores}
        for i, t in enumerate(tokens):
            calls = self._token_calls(ids, t)
            result: dict[_Cell, float] = {}
            for j in range(0, len(cells), per_chunk):
                chunk = cells[j: j + per_chunk]
                result.update(zip(chunk, self._run_cells(problem, base, calls, t, chunk)))
            for (r, c), cell in cell_of.items():
                grids[r][i, c] = result[cell]
        return PatchGrid(p_clean=base.p_clean, p_base=base.p_base, tokens=list(tokens), grids=grids)


def fast_grid(model: PreTrainedModel, problem: PatchProblem, restores: Sequence[Restore], tokens: Sequence[int],
              *, max_rows: int = DEFAULT_MAX_ROWS) -> PatchGrid:
    """The fast engine's grid (see :class:`FastEngine`); equal to :func:`oracle_grid` up to float rounding."""
    return FastEngine(model, max_rows).grid(problem, restores, tokens)
