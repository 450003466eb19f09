"""The adaptive MscaleDNN against the problems it must solve and must not spoil (issue 14).

    python benchmarks/bench_adaptive.py --out DIR [--budget 600] [--cases dense1_a dense1_v ...]

Runs ``mscale solve`` once per case (one after the other, nothing else should run meanwhile:
the budget is training time), skipping cases whose run directory DIR/q_CASE already holds a
metrics.json, then prints a table and writes DIR/adaptive.json:

* the dense-direction family (``benchmarks/make_dense_problem.py``): seed 1 is
  problems/poisson10d_dense_directions.yaml, seeds 4 and 5 are written into DIR; adaptive
  (configs/adaptive.yaml) on each, vanilla (configs/vanilla.yaml) on seed 1;
* poisson10d, poisson10d_rotated, poisson5d_product, poisson2d_multiscale, poisson50d and
  poisson100d with the adaptive config (the last two: smooth, nothing fast to find; the
  estimation must cost little and place nothing spurious).

For every problem whose wave vectors are known in closed form, the wave units' vectors as
placed and after training are compared with the true fast waves: the relative distance
|k - k_true| / |k_true| of each true wave to the nearest unit (up to sign), and whether every
true wave has a unit within 5%. Also: the estimation's share of the training time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from make_dense_problem import directions, problem_yaml  # noqa: E402

from mscalednn.wavefinder import distance  # noqa: E402


def true_fast_waves(case: str) -> np.ndarray | None:
    """The fast wave vectors of the case's problem, [M, d], or None when not plane waves."""
    if case.startswith("dense"):
        seed = int(case[len("dense"):].split("_")[0])
        rng = np.random.default_rng(seed)
        directions(rng, 10, 10)                      # the smooth waves come first
        return directions(rng, 10, 10) * 10 * math.pi
    if case.startswith(("p50", "p100")):  # smooth: no fast waves
        return None
    if case.startswith("p10_"):
        return np.eye(10) * 10 * math.pi
    if case.startswith("rot"):
        E = np.eye(10)
        return np.stack([(E[i] + E[(i + 1) % 10]) / math.sqrt(2) for i in range(10)]) * 10 * math.pi
    if case.startswith("p2d"):  # sin(20 pi x) sin(20 pi y): the waves (20 pi, +-20 pi)
        return np.array([[1.0, 1.0], [1.0, -1.0]]) * 20 * math.pi
    if case.startswith("prod"):  # prod sin(5 pi x_i) = a sum of plane waves along the 16 diagonals
        return np.array([[1, *s] for s in itertools.product((1, -1), repeat=4)], dtype=float) * 5 * math.pi
    return None


def nearest(true: np.ndarray, K: np.ndarray) -> np.ndarray:
    """For each true wave vector, the relative distance to the nearest row of K, up to sign."""
    if len(K) == 0:
        return np.full(len(true), np.inf)
    d = distance(torch.as_tensor(true, dtype=torch.float64), torch.as_tensor(K, dtype=torch.float64)).numpy()
    return d.min(axis=1) / np.linalg.norm(true, axis=1)


def cases(out: Path) -> dict[str, tuple[str, str]]:
    """case -> (problem file, config file)."""
    problems = {1: str(ROOT / "problems/poisson10d_dense_directions.yaml")}
    for seed in (4, 5):
        path = out / f"dense_s{seed}.yaml"
        if not path.exists():
            path.write_text(problem_yaml(seed))
        problems[seed] = str(path)
    adaptive, vanilla = str(ROOT / "configs/adaptive.yaml"), str(ROOT / "configs/vanilla.yaml")
    return {"dense1_a": (problems[1], adaptive), "dense1_v": (problems[1], vanilla),
            "dense4_a": (problems[4], adaptive), "dense5_a": (problems[5], adaptive),
            "p10_a": (str(ROOT / "problems/poisson10d.yaml"), adaptive),
            "rot_a": (str(ROOT / "problems/poisson10d_rotated.yaml"), adaptive),
            "prod_a": (str(ROOT / "problems/poisson5d_product.yaml"), adaptive),
            "p2d_a": (str(ROOT / "problems/poisson2d_multiscale.yaml"), adaptive),
            "p50_a": (str(ROOT / "problems/poisson50d.yaml"), adaptive),
            "p100_a": (str(ROOT / "problems/poisson100d.yaml"), adaptive)}


def row(case: str, run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    out = {"case": case, "rel_l2": m["rel_l2"], "rel_h1": m["rel_h1"], "steps": m["steps"],
           "steps_per_s": m["steps_per_s"], "train_time_s": m["train_time_s"]}
    adaptations = m.get("adaptations") or []
    out["estimation_s"] = sum(a["seconds"] for a in adaptations)
    out["estimation_share"] = out["estimation_s"] / m["train_time_s"]
    out["waves_placed"] = sum(len(a["placed_slots"]) for a in adaptations)
    true = true_fast_waves(case)
    if adaptations and true is not None:
        from mscalednn import load_model
        placed = np.array([k for a in adaptations for k in a["placed"]]).reshape(-1, true.shape[1])
        slots = [s for a in adaptations for s in a["placed_slots"]]
        trained = load_model(run).waves.k.detach().double().numpy()[slots] if slots else placed
        for name, K in (("placed", placed), ("trained", trained)):
            err = nearest(true, K)
            out[f"true_found_{name}"] = int((err < 0.05).sum())
            out[f"max_error_{name}"] = float(err.max())
        out["true_waves"] = len(true)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training per run")
    parser.add_argument("--cases", nargs="*", default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = cases(args.out)
    chosen = args.cases or list(table)
    rows = []
    for case in chosen:
        run = args.out / f"q_{case}"
        if not (run / "metrics.json").exists():
            problem, config = table[case]
            subprocess.run([sys.executable, "-m", "mscalednn.cli", "solve", problem, "--model", config, "--out",
                            str(run), "--set", f"train.time_limit={args.budget}", "--set", "train.progress=false"],
                           check=True, cwd=ROOT)
        rows.append(row(case, run))
    print("| case | rel L2 | rel H1 | steps | steps/s | estimation s (share) | waves placed | true waves within 5% "
          "(placed / trained) | max rel error (placed / trained) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        found = (f"{r['true_found_placed']} / {r['true_found_trained']} of {r['true_waves']}"
                 if "true_waves" in r else "-")
        error = (f"{r['max_error_placed']:.1e} / {r['max_error_trained']:.1e}" if "true_waves" in r else "-")
        print(f"| {r['case']} | {r['rel_l2']:.3e} | {r['rel_h1']:.2e} | {r['steps']} | {r['steps_per_s']:.1f} | "
              f"{r['estimation_s']:.1f} ({100 * r['estimation_share']:.1f}%) | {r['waves_placed']} | {found} | {error} |")
    (args.out / "adaptive.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
