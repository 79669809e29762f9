"""`locedit models` (families and aliases) and `locedit predict` (next tokens and target probabilities)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from locedit.cli.common import (CliError, DeviceOpt, DtypeOpt, JsonOpt, ModelOpt, check_fits_context, check_range,
                                check_text, cli_errors, load, print_json)


def models(json_out: bool = JsonOpt) -> None:
    """List supported model families (module paths) and model aliases."""
    from locedit.models import ALIASES, FAMILIES

    fams = {name: {"model_types": list(f.model_types), "edited_matrix": f.mlp_down, "mlp": f.mlp, "attn": f.attn,
                   "block": f.block, "embed": f.embed} for name, f in FAMILIES.items()}
    if json_out:
        print_json({"families": fams, "aliases": ALIASES})
        return
    from rich.console import Console

    out = Console()
    table = Table(title="Model families (detected from config.model_type)")
    for col in ("family", "model_type", "blocks", "edited matrix (MLP down-projection)"):
        table.add_column(col)
    for name, f in fams.items():
        table.add_row(name, ", ".join(f["model_types"]), f["block"], f["edited_matrix"])
    out.print(table)
    aliases = Table(title="Aliases for --model")
    aliases.add_column("alias")
    aliases.add_column("resolves to")
    for k, v in ALIASES.items():
        aliases.add_row(k, v)
    out.print(aliases)


def predict(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Prompt text, e.g. 'The Eiffel Tower is in'."),
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="Target(s) to score; repeatable."),
    top_k: int = typer.Option(10, "--top-k", help="How many next tokens to show."),
    model: str = ModelOpt,
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Top-k next tokens after PROMPT and the joint probability of each --target."""
    from locedit.models.scoring import next_token_top_k, target_probs

    check_text("--prompt", prompt)
    check_range("--top-k", top_k, 1, 1000)
    for t in target or []:
        check_text("--target", t, max_chars=1000)
    m, tok = load(model, device, dtype)
    check_fits_context(m, tok, "--prompt", prompt, extra_tokens=1)
    for t in target or []:
        check_fits_context(m, tok, "--prompt with --target", prompt + t, extra_tokens=0)
    if top_k > len(tok):
        raise CliError(f"--top-k {top_k} is larger than the vocabulary ({len(tok)} tokens); use a smaller one")
    top = next_token_top_k(m, tok, prompt, top_k)
    targets = list(target or [])
    probs = target_probs(m, tok, [prompt] * len(targets), targets).tolist() if targets else []
    result = {"prompt": prompt, "top_k": [{"token": t, "prob": p} for t, p in top],
              "targets": [{"target": t, "prob": p} for t, p in zip(targets, probs)]}
    if json_out:
        print_json(result)
        return
    from rich.console import Console

    out = Console()
    table = Table(title=f"Next token after {prompt!r}")
    table.add_column("token")
    table.add_column("p", justify="right")
    for t, p in top:
        table.add_row(repr(t), f"{p:.4f}")
    out.print(table)
    for t, p in zip(targets, probs):
        out.print(f"p({' ' + t.lstrip()!r} | prompt) = {p:.4g}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("models")(cli_errors(models))
    app.command("predict")(cli_errors(predict))
