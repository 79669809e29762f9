"""Throughput of `locedit run` on the local backend (one process, N threads) and on Ray (N workers x 1 thread).

Runs the same sweep (the demo's model, facts and tracing; ROME Error Injection at the given layers; no
analysis) once per backend into fresh run directories, then prints tracing facts per hour and edits per hour
from each run's summary, the ratio, and the largest difference between the two results tables (they must agree
to 1e-6). Key statistics come from the locedit cache, so run `locedit demo` (or this script) once before timing.

    python scripts/bench_backends.py                 # 5 demo facts x 4 layers = 20 edits, 2 threads vs 2 workers
    python scripts/bench_backends.py --facts 8 --threads 2 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from locedit.experiment.config import dump_toml
from locedit.experiment.demo import demo_config
from locedit.experiment.store import UNIQUE_KEYS, read_frames

TIMING_COLUMNS = ("edit_seconds", "eval_seconds")


def sweep_config(facts: int, layers: list[int]):
    cfg = demo_config("demo")
    return cfg.model_copy(update={
        "name": "bench-backends",
        "data": cfg.data.model_copy(update={"limit": facts}),
        "edit": cfg.edit.model_copy(update={"layers": layers, "methods": ["rome"]}),
        "analysis": cfg.analysis.model_copy(update={"analyze": False, "report": False}),
    })


def timed_run(config: Path, out: Path, flags: list[str]) -> dict:
    cmd = [sys.executable, "-m", "locedit.cli.main", "run", str(config), "--out", str(out), "--no-progress", "--json",
           *flags]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    wall = time.perf_counter() - start
    t, e = summary["tracing"], summary["editing"]
    return {"flags": " ".join(flags), "wall_s": round(wall, 1), "facts": t["done"], "edits": e["done"],
            "tracing_s": t["seconds"], "editing_s": e["seconds"],
            "facts_per_hour": round(3600 * t["done"] / t["seconds"], 1) if t["seconds"] else None,
            "edits_per_hour": round(3600 * e["done"] / e["seconds"], 1) if e["seconds"] else None}


def largest_difference(a: Path, b: Path) -> float:
    """Largest absolute difference of any number between two runs' tables (same rows required)."""
    worst = 0.0
    fa, fb = read_frames(a), read_frames(b)
    for table, key in UNIQUE_KEYS.items():
        x = fa[table].drop(columns=[c for c in TIMING_COLUMNS if c in fa[table]]).sort_values(list(key))
        y = fb[table].drop(columns=[c for c in TIMING_COLUMNS if c in fb[table]]).sort_values(list(key))
        if len(x) != len(y):
            raise SystemExit(f"{table}: {len(x)} rows on one backend, {len(y)} on the other")
        for col in x.select_dtypes("number").columns:
            gap = np.abs(x[col].to_numpy(dtype=float) - y[col].to_numpy(dtype=float))
            worst = max(worst, float(np.nanmax(gap, initial=0.0)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=5)
    parser.add_argument("--layers", type=int, nargs="+", default=[12, 18, 24, 29])
    parser.add_argument("--threads", type=int, default=2, help="threads of the local process = Ray workers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(dump_toml(sweep_config(args.facts, args.layers)))
        local = timed_run(config, Path(tmp) / "local", ["--backend", "local", "--threads", str(args.threads)])
        on_ray = timed_run(config, Path(tmp) / "ray", ["--backend", "ray", "--workers", str(args.threads),
                                                       "--threads-per-worker", "1"])
        diff = largest_difference(Path(tmp) / "local", Path(tmp) / "ray")
    report = {"local": local, "ray": on_ray, "largest_difference": diff,
              "edits_ratio_ray_over_local": round(on_ray["edits_per_hour"] / local["edits_per_hour"], 2),
              "facts_ratio_ray_over_local": round(on_ray["facts_per_hour"] / local["facts_per_hour"], 2)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, r in (("local", local), ("ray", on_ray)):
        print(f"{name:5} {r['flags']:45} {r['facts']} facts {r['facts_per_hour']}/h, {r['edits']} edits "
              f"{r['edits_per_hour']}/h, wall {r['wall_s']} s")
    print(f"ray / local: edits {report['edits_ratio_ray_over_local']}x, facts {report['facts_ratio_ray_over_local']}x; "
          f"largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
