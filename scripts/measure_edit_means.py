"""Mean Error Injection scores per method at one layer on the demo facts (the table in the editing report).

    python scripts/measure_edit_means.py --facts 10 --layer 12 [--methods rome memit ft-1 ft-5] [--out rows.jsonl]

Rows are appended to ``--out`` as they finish (JSON lines) and re-read on restart, so an interrupted run
resumes; the table of means is printed at the end (and whenever the script is rerun).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SCORES = ("rewrite_score", "paraphrase_score", "neighborhood_score", "essence_score", "overall_score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--facts", type=int, default=10)
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--problem", default="error-injection")
    ap.add_argument("--methods", nargs="+", default=["ft-1", "ft-5", "rome", "memit"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="edit_means.jsonl")
    args = ap.parse_args()

    out = Path(args.out)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    seen = {(r["method"], r["case_id"]) for r in done}
    todo = [(m, i) for m in args.methods for i in range(args.facts)]
    if any(key not in seen for key in todo):
        from locedit.data.loaders import load_demo_facts
        from locedit.edit.api import edit_and_evaluate
        from locedit.models import load_model

        model, tok = load_model(args.model, device=args.device)
        facts = load_demo_facts()[: args.facts]
        for method in args.methods:
            for fact in facts:
                if (method, fact.case_id) in seen:
                    continue
                row = edit_and_evaluate(model, tok, fact, method, args.layer, args.problem)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                done.append(row)
                print(method, fact.case_id, {k: round(row[k], 3) for k in SCORES if row[k] is not None}, flush=True)
    print(f"\n{args.model}, {args.problem}, layer {args.layer}, demo facts 0..{args.facts - 1}")
    print("| method | n | " + " | ".join(s.replace("_score", "") for s in SCORES) + " | s/edit |")
    print("|---" * (len(SCORES) + 3) + "|")
    for method in args.methods:
        rows = [r for r in done if r["method"] == method]
        if not rows:
            continue
        means = [statistics.mean(r[s] for r in rows if r[s] is not None) for s in SCORES]
        secs = statistics.mean(r["edit_seconds"] + r["eval_seconds"] for r in rows)
        print(f"| {method} | {len(rows)} | " + " | ".join(f"{v:.3f}" for v in means) + f" | {secs:.1f} |")


if __name__ == "__main__":
    main()
