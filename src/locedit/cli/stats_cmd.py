"""``locedit stats``: compute (or show cached) MLP-key second moments for ROME/MEMIT
(docs/algorithms.md#key-statistics)."""

from __future__ import annotations

import time
from typing import Optional

import typer

from locedit.cli.common import (CliError, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, check_device, check_dtype,
                                check_range, cli_errors, console, load, model_layers, print_json)


def parse_layers(text: str) -> list[int]:
    """"0,5,10" or "10-14" (inclusive) or a mix -> sorted unique layer indices."""
    out: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, sep, hi = part.partition("-")
            out.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise ValueError(f"bad --layers {text!r}; use comma-separated indices or ranges such as 0,5,10-14") from None
    if not out:
        raise ValueError("--layers is empty; pass e.g. --layers 0,5,10")
    return sorted(out)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("stats")
    @cli_errors
    def stats(
        model: str = ModelOpt,
        layers: str = typer.Option(..., "--layers", "-l", help="Layers, e.g. 0,5,10 or 10-14."),
        corpus: Optional[str] = typer.Option(None, "--corpus", help="Text file or folder (default: data folder's wikitext/), or an HF dataset name when online."),
        tokens: Optional[int] = typer.Option(None, "--tokens", "-n", help="Token count (default: the model's hyperparameter table, 20000 for the embedded model)."),
        max_doc_tokens: Optional[int] = typer.Option(None, "--max-doc-tokens", help="Truncate documents to this many tokens (default: model context, at most 1024)."),
        inverses: bool = typer.Option(False, "--inverses", help="Also cache the float32 (ROME) and float64 (MEMIT) inverses."),
        device: str = DeviceOpt,
        dtype: str = DtypeOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Second moments E[k kᵀ] of the MLP down-projection input, all layers in one pass, cached on disk."""
        import torch  # deferred like every heavy import of the CLI: `locedit --help` must not load torch

        from locedit.edit.methods import resolve_hparams
        from locedit.edit.stats import SecondMoments

        wanted = parse_layers(layers)
        n_layers = model_layers(model)
        bad = [layer for layer in wanted if not 0 <= layer < n_layers]
        if bad:
            raise CliError(f"--layers {bad} out of range: {model} has {n_layers} layers (0..{n_layers - 1})")
        check_range("--tokens", tokens, 1)
        check_range("--max-doc-tokens", max_doc_tokens, 2)
        check_device(device)
        check_dtype(dtype)
        m, tok = load(model, device, dtype)
        n_tokens = tokens or resolve_hparams("rome", m).mom2_n_tokens
        store = SecondMoments(m, tok, corpus, n_tokens, max_doc_tokens=max_doc_tokens, progress=not json_out)
        cached = set(store.cached_layers(wanted))
        start = time.perf_counter()
        store.prefetch(wanted)
        rows = []
        for layer in wanted:
            c = store.moment(layer)
            if inverses:
                store.inverse(layer, torch.float32)
                store.inverse(layer, torch.float64)
            rows.append({"layer": layer, "cached": layer in cached, "dim": int(c.shape[0]),
                         "trace": float(c.trace()), "path": str(store.path(layer))})
        seconds = time.perf_counter() - start
        if json_out:
            print_json({"info": store.info.to_dict(), "seconds": seconds, "layers": rows})
            return
        console.print(f"{store.info.corpus}, {store.info.n_tokens} tokens, model {store.info.model}: {seconds:.1f} s")
        for r in rows:
            console.print(f"  layer {r['layer']:>3}  dim {r['dim']}  trace {r['trace']:.4g}  "
                          f"{'cached' if r['cached'] else 'computed'}  {r['path']}")
