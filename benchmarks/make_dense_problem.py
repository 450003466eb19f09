"""Write a problem of the poisson10d_dense_directions family for a seed.

    python benchmarks/make_dense_problem.py SEED [--dim 10] > problem.yaml

u*(x) = sum_m [sin(pi s_m . x) + 0.1 sin(10 pi k_m . x)] on [0,1]^d with ten smooth and ten
fast plane waves along unit directions s_m, k_m drawn from N(0, I) and kept only if no
component exceeds 0.5 in size (every direction more than 60 degrees from every axis): the
structure of poisson10d, with the waves along dense directions no first-layer prior knows.
The directions are written into the file as vectors of numbers, dot([...], x), and the seed
into its name.
"""

from __future__ import annotations

import argparse

import numpy as np


def directions(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    out = []
    while len(out) < n:
        v = rng.standard_normal(d)
        v /= np.linalg.norm(v)
        if np.abs(v).max() <= 0.5:
            out.append(v)
    return np.array(out)


def problem_yaml(seed: int, d: int = 10, waves: int = 10) -> str:
    rng = np.random.default_rng(seed)
    S, K = directions(rng, waves, d), directions(rng, waves, d)

    def dot(v):
        return f"dot([{', '.join(f'{c:.4f}' for c in v)}], x)"

    terms = [f"sin(pi*{dot(s)})" for s in S] + [f"0.1*sin(10*pi*{dot(k)})" for k in K]
    x = np.random.default_rng(0).random((100_000, d))
    fast_part = 0.1 * np.sin(10 * np.pi * x @ K.T).sum(1)
    share = np.linalg.norm(fast_part) / np.linalg.norm(np.sin(np.pi * x @ S.T).sum(1) + fast_part)
    fast = "\n".join(f"#   k_{m + 1} = [{', '.join(f'{c:.4f}' for c in k)}]" for m, k in enumerate(K))
    return f"""# -Laplace u = f on [0,1]^{d}, u = g on the boundary; f and g follow from the exact solution.
# Written by benchmarks/make_dense_problem.py {seed} --dim {d}. The fast waves' unit directions
# (wave vectors 10 pi k_m):
{fast}
name: poisson{d}d_dense_directions_seed{seed}
description: >-
  u*(x) = sum_m [sin(pi s_m . x) + 0.1 sin(10 pi k_m . x)] on [0,1]^{d}, {waves} smooth and {waves} fast plane
  waves along dense unit directions drawn with seed {seed} (no component above 0.5: every direction more
  than 60 degrees from every axis). The structure of poisson10d without its axis alignment; the fast
  part is {share:.0%} of ||u*||, so fitting only the smooth part leaves rel L2 about {share:.2f}.
dim: {d}
domain: [0, 1]
exact: "{' + '.join(terms)}"
"""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed", type=int)
    parser.add_argument("--dim", type=int, default=10)
    args = parser.parse_args()
    print(problem_yaml(args.seed, args.dim), end="")
