"""Accuracy reached per wall-clock minute on poisson10d (and its rotated variant).

Runs `mscale solve` once per (problem, model, budget), each in a fresh process, sequentially,
with the training-time budget `train.time_limit` (the learning-rate schedule spans the budget),
then prints a table and writes JSON.

    python benchmarks/bench_poisson10d.py                      # full: 5 and 10 minutes
    python benchmarks/bench_poisson10d.py --budgets 60 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(problem: str, model: str, budget: float, out: Path, seed: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "mscalednn.cli", "solve", f"problems/{problem}.yaml",
           "--model", f"configs/{model}.yaml", "--seed", str(seed), "--out", str(out),
           "--set", f"train.time_limit={budget}", "--set", "train.steps=10000000",
           "--set", "train.progress=false", "--set", "train.eval_every=2000", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"problem": problem, "model": model, "overrides": extra, "budget_s": budget, "seed": seed,
            "rel_l2": m["rel_l2"], "rel_max": m["rel_max"], "rel_h1": m["rel_h1"],
            "steps": m["steps"], "steps_per_s": m["steps_per_s"], "params": m["params"],
            "train_time_s": m["train_time_s"], "process_time_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=float, nargs="+", default=[300, 600], help="seconds of training")
    ap.add_argument("--problems", nargs="+", default=["poisson10d", "poisson10d_rotated"])
    ap.add_argument("--models", nargs="+", default=["mscale", "vanilla"],
                    help="config names in configs/, optionally NAME:KEY=VALUE[,KEY=VALUE] overrides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/out/poisson10d.json")
    ap.add_argument("--runs", default="benchmarks/out/runs", help="where the run directories go")
    args = ap.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    records = []
    print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, cores: {os.cpu_count()}")
    print(f"{'problem':20s} {'model':8s} {'budget':>7s} {'rel L2':>9s} {'rel max':>9s} {'rel H1':>9s} "
          f"{'steps':>7s} {'steps/s':>8s} {'params':>7s}", flush=True)
    for problem in args.problems:
        for budget in args.budgets:
            for spec in args.models:
                model, _, over = spec.partition(":")
                extra = [a for kv in over.split(",") if kv for a in ("--set", kv)]
                out = ROOT / args.runs / f"{stamp}-{problem}-{model}-{int(budget)}s-{len(records)}"
                r = run(problem, model, budget, out, args.seed, extra)
                r["label"] = spec
                records.append(r)
                print(f"{problem:20s} {spec:8s} {budget:6.0f}s {r['rel_l2']:9.2e} {r['rel_max']:9.2e} "
                      f"{r['rel_h1']:9.2e} {r['steps']:7d} {r['steps_per_s']:8.1f} {r['params']:7d}", flush=True)
    from mscalednn.outputs import write_json
    path = ROOT / args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, records)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
