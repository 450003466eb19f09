"""The coupled-groups wave finder (`wavefinder.coupled_waves`) on sources nobody here tuned on.

Each case is a problem whose coupled part is known wave by wave, written as a problem-file
expression and handed over as its source f = -Laplace u*, as `mscale solve` does at the first
adaptation. Random families, a seed each (frequencies, phases, coordinates and shifts drawn):

* ``product``: sum_i sin(pi x_i) + 0.2 prod_j sin(a_j x_{c_j} + phi_j) over q coordinates c_j
  drawn from d, a_j uniform in [2 pi, 12 pi]: 2^(q-1) waves with q nonzero components;
* ``two products``: two such products on disjoint coordinate groups, one of them with a
  smooth factor pi in every coordinate as well (two frequencies per coordinate);
* ``pairs``: (1 / sqrt d) sum_i sin(a x_i + phi) cos(b x_{i+s}), cyclic, a and b uniform in
  [pi, 4 pi], shift s drawn: 2d waves (a, +-b) in d coordinate planes, more than d, low.

Reported per case: the true coupled waves, how many of them a found wave meets within 1% of
|k| (recall), found waves near no true one (spurious), the misfit of f's coupled part left by
the found waves (rms share, fresh points, after a least-squares fit with a constant), seconds.
Prints a table and writes JSON.

    python benchmarks/bench_coupled.py
    python benchmarks/bench_coupled.py --seeds 0 1 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mscalednn import parse_expression  # noqa: E402
from mscalednn.wavefinder import box_points, coupled_waves, distance, least_squares, wave_basis  # noqa: E402


def sign_patterns(magnitudes: list[float], coords: list[int], d: int) -> np.ndarray:
    """The 2^(q-1) waves (a_1, +-a_2, ..., +-a_q) on the coordinates ``coords``."""
    rows = []
    for signs in itertools.product((1.0, -1.0), repeat=len(coords) - 1):
        k = np.zeros(d)
        k[coords] = np.array(magnitudes) * np.array((1.0, *signs))
        rows.append(k)
    return np.array(rows)


def case(family: str, d: int, seed: int) -> tuple[str, str, np.ndarray]:
    """(the full expression of u*, the coupled part's expression, its true waves [M, d])."""
    rng = np.random.default_rng([seed, d, len(family)])
    smooth = "sum(sin(pi*x))"
    if family == "pairs":
        a, b = rng.uniform(math.pi, 4 * math.pi, 2)
        phi = rng.uniform(0, 2 * math.pi)
        s = int(rng.integers(1, d))
        coupled = f"sum(sin({float(a)!r}*x + {float(phi)!r})*cos({float(b)!r}*roll(x, -{s})))/sqrt(d)"
        waves = np.concatenate([sign_patterns([a, b], [i, (i + s) % d], d) for i in range(d)])
        return coupled, coupled, waves
    groups = []
    coords = rng.permutation(d)
    q = int(rng.integers(3, min(6, d) + 1)) if family == "product" else min(3, d // 2)
    groups.append([int(c) for c in coords[:q]])
    if family == "two products":
        groups.append([int(c) for c in coords[q:2 * q]])
    terms, waves = [], []
    for n, group in enumerate(groups):
        a = rng.uniform(2 * math.pi, 12 * math.pi, len(group))
        phi = rng.uniform(0, 2 * math.pi, len(group))
        terms.append("0.2*" + "*".join(f"sin({float(aj)!r}*x[{c}] + {float(pj)!r})" for aj, c, pj in zip(a, group, phi)))
        waves.append(sign_patterns(list(a), group, d))
        if n == 1:  # a smooth factor in the same coordinates: two frequencies per coordinate
            terms.append("*".join(f"sin(pi*x[{c}])" for c in group))
            waves.append(sign_patterns([math.pi] * len(group), group, d))
    coupled = " + ".join(terms)
    return f"{smooth} + {coupled}", coupled, np.concatenate(waves)


def measure(family: str, d: int, seed: int) -> dict:
    full, coupled, true = case(family, d, seed)
    u, part = parse_expression(full, d), parse_expression(coupled, d)

    def source(expr):
        return lambda x: -expr.value_grad_laplacian(x.double())[2].double()

    lo, hi = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    start = time.perf_counter()
    found = coupled_waves(source(u), lo, hi, torch.Generator().manual_seed(seed), 256)
    seconds = time.perf_counter() - start
    K = found.k
    T = torch.tensor(true, dtype=torch.float64)
    scale = T.norm(dim=1)
    recall = int((distance(T, K).min(dim=1).values < 0.01 * scale).sum()) if len(found) else 0
    spurious = int((distance(K, T).min(dim=1).values >= 0.01 * scale.min()).sum()) if len(found) else 0
    x = box_points(lo, hi, 20000, torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        r = source(part)(x)
    A = torch.cat([torch.ones(x.shape[0], 1, dtype=torch.float64), wave_basis(x, K)], dim=1)
    misfit = float((r - A @ least_squares(A, r, 1e-8)).norm() / (r - r.mean()).norm())
    return {"family": family, "dim": d, "seed": seed, "true_waves": len(true), "found": len(found),
            "recall": recall, "spurious": spurious, "misfit": misfit, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "coupled.json"))
    args = p.parse_args()
    cases = [("product", 5), ("product", 8), ("product", 12), ("two products", 10), ("pairs", 20), ("pairs", 50)]
    rows = []
    print(f"{'family':>13} | {'d':>3} | seed | true | found | recall | spurious | misfit | s")
    for (family, d), seed in itertools.product(cases, args.seeds):
        row = measure(family, d, seed)
        rows.append(row)
        print(f"{family:>13} | {d:>3} | {seed:>4} | {row['true_waves']:>4} | {row['found']:>5} | {row['recall']:>6} | "
              f"{row['spurious']:>8} | {row['misfit']:.1e} | {row['seconds']:.1f}", flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads()}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
