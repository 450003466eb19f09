"""Cost of the source term f = -Laplace u* per batch of collocation points, against d.

The training loop evaluates f at fresh points every step. For a problem file's expression it
is one Taylor-mode pass with sparse Jacobians (`Expression.value_grad_laplacian`,
mscalednn/jet.py); the reference is nested autograd (d backward passes, what any torch function
u* gets). The expression is that of problems/poisson50d.yaml at every d. Prints a table (median
of repeats, both methods in the same process, their ratio, and the largest difference between
them) and writes JSON.

    python benchmarks/bench_source.py
    python benchmarks/bench_source.py --dims 10 50 --points 2000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mscalednn import parse_expression  # noqa: E402
from mscalednn.derivatives import value_grad_laplacian  # noqa: E402

EXACT = "3 + sum(sin(pi*x)*cos(pi*roll(x, -1)) + x*roll(x, -2) - 0.25)/sqrt(d)"


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", nargs="+", type=int, default=[2, 10, 50, 100, 1000])
    p.add_argument("--points", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--autograd-max-dim", type=int, default=200, help="skip nested autograd above this d")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "source.json"))
    args = p.parse_args()
    rows = []
    print(f"float32, {args.points} points, {torch.get_num_threads()} threads")
    print(f"{'d':>5} | jet (ms) | autograd (ms) | autograd / jet | max |diff| / max |f|")
    for d in args.dims:
        u = parse_expression(EXACT, d)
        x = torch.rand(args.points, d, generator=torch.Generator().manual_seed(d))
        t_jet = median_time(lambda: u.value_grad_laplacian(x), args.repeats)
        row = {"dim": d, "points": args.points, "jet_s": t_jet}
        if d <= args.autograd_max_dim:
            t_ag = median_time(lambda: value_grad_laplacian(u, x, create_graph=False), args.repeats)
            lap = u.value_grad_laplacian(x)[2]
            ref = value_grad_laplacian(u, x, create_graph=False)[2].detach()
            row.update(autograd_s=t_ag, ratio=t_ag / t_jet,
                       rel_diff=float((lap - ref).abs().max() / ref.abs().max()))
            print(f"{d:>5} | {t_jet * 1e3:8.2f} | {t_ag * 1e3:13.1f} | {t_ag / t_jet:14.1f} | {row['rel_diff']:.1e}")
        else:
            print(f"{d:>5} | {t_jet * 1e3:8.2f} | {'-':>13} | {'-':>14} | -")
        rows.append(row)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"exact": EXACT, "threads": torch.get_num_threads(), "results": rows},
                                          indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
