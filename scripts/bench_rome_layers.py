"""Seconds of one ROME edit (20 v* steps, Error Injection) at several layers of the embedded model.

Compares two checkouts on one machine state, e.g. before and after a change to the edit engine:

    PYTHONPATH=/path/to/other/checkout/src python scripts/bench_rome_layers.py --threads 2
    python scripts/bench_rome_layers.py --threads 2

Prints one JSON line: the locedit package that ran and ``edit_seconds`` per layer (statistics and context
templates are cached beforehand, so only the edit itself is timed).
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, nargs="+", default=[0, 12, 24])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import locedit
    from locedit.edit.hparams import resolve_hparams
    from locedit.edit.methods import apply_edit
    from locedit.edit.request import EditRequest
    from locedit.models import load_model

    model, tok = load_model("smollm2-135m")
    request = EditRequest("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English")
    hp = resolve_hparams("rome", model, "error-injection", {"v_num_grad_steps": 20})
    seconds = {}
    for layer in args.layers:
        handle = apply_edit(model, tok, request, "rome", layer, hp, problem="error-injection")
        seconds[layer] = round(handle.edit_seconds, 2)
        handle.restore()
    print(json.dumps({"locedit": locedit.__file__, "threads": args.threads, "edit_seconds": seconds}))


if __name__ == "__main__":
    main()
