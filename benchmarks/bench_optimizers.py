"""Error against training time for each optimizer (and phases), one `mscale solve` per cell.

For every problem and optimizer setting, a fresh `mscale solve` process with the shipped default
config (`configs/mscale.yaml`) and a training-time budget; the history (errors and training time
at each evaluation) is read back. Prints a table of the final relative L2 errors and the time at
which each run first reached 1e-2, 1e-3, 1e-4, ...; writes JSON and a plot of rel L2 against
training time (one panel per problem).

    python benchmarks/bench_optimizers.py                                  # all, 300 s each
    python benchmarks/bench_optimizers.py --problems poisson5d_smooth --budget 300 --set train.dtype=float64
    python benchmarks/bench_optimizers.py --optimizers adam adam+gauss_newton:0.3

An optimizer setting is `NAME` (`auto`: the shipped choice) or `NAME+NAME:SHARE` (the first phase runs until SHARE of the
budget, default 0.5).
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
PROBLEMS = ["poisson5d_smooth", "poisson10d", "poisson1d_multiscale", "poisson2d_multiscale"]
OPTIMIZERS = ["adam", "adam+lbfgs", "adam+gauss_newton", "auto"]


def phases(setting: str) -> str:
    """'adam+gauss_newton:0.3' -> the YAML list of phases; 'adam' -> 'adam'."""
    if "+" not in setting:
        return setting
    first, _, rest = setting.partition("+")
    second, _, share = rest.partition(":")
    return f"[{{name: {first}, until: {float(share or 0.5)}}}, {{name: {second}}}]"


def run(problem: str, setting: str, budget: float, extra: list[str], out: Path) -> dict:
    sets = ["train.progress=false", f"train.time_limit={budget}", "train.eval_every=25",
            f"train.optimizer={phases(setting)}", *extra]
    cmd = [sys.executable, "-m", "mscalednn.cli", "solve", f"problems/{problem}.yaml", "--model",
           "configs/mscale.yaml", "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"problem": problem, "optimizer": setting, "error": done.stderr.strip().splitlines()[-1:]}
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [r for r in csv.DictReader((out / "history.csv").open()) if r.get("rel_l2")]
    curve = [(float(r["train_time_s"]), float(r["rel_l2"])) for r in rows]
    return {"problem": problem, "optimizer": setting, "rel_l2": metrics["rel_l2"], "rel_h1": metrics["rel_h1"],
            "steps": metrics["steps"], "phases": metrics["optimizer"], "curve": curve,
            "time_to": {f"{level:.0e}": next((t for t, e in curve if e < level), None)
                        for level in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)}}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in results))
    fig, axes = plt.subplots(1, len(problems), figsize=(4.5 * len(problems), 3.8), squeeze=False)
    for ax, problem in zip(axes[0], problems):
        for r in results:
            if r["problem"] == problem and "curve" in r:
                t, e = zip(*r["curve"])
                ax.semilogy(t, e, label=r["optimizer"])
        ax.set(title=problem, xlabel="training time (s)", ylabel="rel L2")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", default=PROBLEMS)
    p.add_argument("--optimizers", nargs="+", default=OPTIMIZERS)
    p.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    p.add_argument("--set", action="append", default=[], dest="extra", help="extra --set for every run")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "optimizers.json"))
    p.add_argument("--plot", default=str(ROOT / "benchmarks" / "out" / "optimizers.png"))
    args = p.parse_args()
    results = []
    print(f"{'problem':>22} | {'optimizer':>24} | rel L2    | rel H1    | steps | time to 1e-2 / 1e-3 / 1e-4 / 1e-5 / 1e-6 (s)")
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems:
            for setting in args.optimizers:
                r = run(problem, setting, args.budget, args.extra, Path(tmp) / f"{problem}-{len(results)}")
                results.append(r)
                if "error" in r:
                    print(f"{problem:>22} | {setting:>24} | failed: {r['error']}", flush=True)
                    continue
                times = " / ".join("-" if t is None else f"{t:.0f}" for t in r["time_to"].values())
                print(f"{problem:>22} | {setting:>24} | {r['rel_l2']:.3e} | {r['rel_h1']:.3e} | {r['steps']:5d} | "
                      f"{times}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"budget_s": args.budget, "extra": args.extra, "results": results},
                                          indent=2))
    plot(results, Path(args.plot))
    print(f"wrote {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
