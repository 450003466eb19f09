"""Relative L2 error after a fixed training time against the dimension, for one family of solutions.

The family of problems/poisson50d.yaml and problems/poisson100d.yaml at every d:

    u*(x) = 3 + (1/sqrt(d)) sum_i [sin(pi x_i) cos(pi x_{i+1}) + x_i x_{i+2} - 1/4]  on [0,1]^d

(indices cyclic; mean 3 and standard deviation 0.29 at every d, so a constant output has rel L2
0.095 at every d). For each d, a fresh `mscale solve` with the shipped default config
(`configs/mscale.yaml`, or `--model`) and the training-time budget; prints a table (final rel L2,
rel H1, steps, steps/s, the error after 60 s), writes JSON and a plot of rel L2 against time.

    python benchmarks/bench_dimension.py                         # d = 2 ... 100, 600 s each (about an hour)
    python benchmarks/bench_dimension.py --dims 5 50 --budget 60
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXACT = "3 + sum(sin(pi*x)*cos(pi*roll(x, -1)) + x*roll(x, -2) - 0.25)/sqrt(d)"


def problem_file(d: int, folder: Path) -> Path:
    path = folder / f"family{d}d.yaml"
    path.write_text(f"name: family{d}d\ndim: {d}\ndomain: [0, 1]\nexact: \"{EXACT}\"\n")
    return path


def run(d: int, budget: float, model: str, extra: list[str], folder: Path) -> dict:
    out = folder / f"run{d}d"
    sets = ["train.progress=false", f"train.time_limit={budget}", "train.eval_every=50", *extra]
    cmd = [sys.executable, "-m", "mscalednn.cli", "solve", str(problem_file(d, folder)), "--model", model,
           "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"dim": d, "error": done.stderr.strip().splitlines()[-1:]}
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [r for r in csv.DictReader((out / "history.csv").open()) if r.get("rel_l2")]
    curve = [(float(r["train_time_s"]), float(r["rel_l2"])) for r in rows]
    at_60 = [e for t, e in curve if t <= 60.0]
    return {"dim": d, "rel_l2": metrics["rel_l2"], "rel_h1": metrics["rel_h1"], "steps": metrics["steps"],
            "steps_per_s": metrics["steps_per_s"], "params": metrics["params"],
            "rel_l2_at_60s": at_60[-1] if at_60 else None, "curve": curve}


def plot(results: list[dict], path: Path) -> None:
    """rel L2 against training time, one curve per d."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for r in results:
        if "curve" in r:
            t, e = zip(*r["curve"])
            ax.semilogy(t, e, label=f"d = {r['dim']}")
    ax.axhline(0.095, color="gray", lw=0.8, ls="--", label="constant output")
    ax.set(xlabel="training time (s)", ylabel="rel L2", title="u* = 3 + sum sin cos + x x (poisson50d family)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", nargs="+", type=int, default=[2, 5, 10, 20, 50, 100])
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per run")
    p.add_argument("--model", default="configs/mscale.yaml")
    p.add_argument("--set", action="append", default=[], dest="extra", help="extra --set for every run")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "dimension.json"))
    p.add_argument("--plot", default=str(ROOT / "benchmarks" / "out" / "dimension.png"))
    args = p.parse_args()
    results = []
    print(f"{'d':>4} | rel L2    | rel H1    | steps | steps/s | rel L2 at 60 s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.dims:
            r = run(d, args.budget, args.model, args.extra, Path(tmp))
            results.append(r)
            if "error" in r:
                print(f"{d:>4} | failed: {r['error']}", flush=True)
                continue
            at_60 = "-" if r["rel_l2_at_60s"] is None else f"{r['rel_l2_at_60s']:.3e}"
            print(f"{d:>4} | {r['rel_l2']:.3e} | {r['rel_h1']:.3e} | {r['steps']:5d} | {r['steps_per_s']:7.2f} | "
                  f"{at_60}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"budget_s": args.budget, "model": args.model, "extra": args.extra,
                                           "exact": EXACT, "results": results}, indent=2))
    plot(results, Path(args.plot))
    print(f"wrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
