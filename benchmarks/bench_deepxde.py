"""Training steps per second of mscalednn against DeepXDE on the same network and points.

Both train a tanh MLP (``--depth`` hidden layers of ``--width``, default 4 x 128) with Adam on
poisson10d (-Laplace u = f on [0,1]^10, u* = sum_i sin(pi x_i) + 0.1 sin(10 pi x_i), u = u* on
the boundary; the residual loss plus 1000 x the boundary penalty), with ``--points`` interior and
half as many boundary points, float32, on the CPU, each in a fresh process with the machine's
threads, one after the other:

* DeepXDE (PyPI ``deepxde``, PyTorch backend): ``dde.data.PDE`` with those points (fixed: DeepXDE's
  default), the Laplacian as the sum of ``dde.grad.hessian`` diagonals (nested reverse mode), the
  training loop ``model.train``; timed over ``--steps`` iterations after ``--warmup``. DeepXDE
  evaluates the PDE at every training point, the boundary points included, and its boundary
  points a second time for the condition: with 2,000 + 1,000 points its Laplacian runs on 4,000
  rows, where mscalednn's runs on the 2,000 interior points. So it runs twice: with the same
  points ("deepxde"), and with half of them ("deepxde, same Laplacian rows": 1,000 + 500 points,
  2,000 rows, the same Laplacian work as mscalednn's but fewer residual points);
* mscalednn: ``mscalednn.solve`` with the same network (``configs/vanilla.yaml`` with the width,
  depth and points set, Adam, no averaging), fresh points and f at every step (the default), the
  forward Laplacian; eager and with ``train.compile: true`` (compiled in the warm-up).

Printed: seconds per step, steps/s, the ratios to both DeepXDE rows, the float32 sgemm rate
measured in the same process ([20000, 128] x [128, 128]), and for mscalednn the matrix-product
work of its step (``torch.utils.flop_counter``) with its share of that rate and the "floor": the
ratio to DeepXDE a step made of those products alone at the sgemm rate would reach. DeepXDE is not a dependency of mscalednn: install it
in any environment with torch and point ``--deepxde-python`` at that interpreter (default: this
one); without it the DeepXDE row says so and the ratios are left out.

    python benchmarks/bench_deepxde.py --json benchmarks/out/deepxde.json
    python benchmarks/bench_deepxde.py --deepxde-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import sgemm_rate, step_flops, step_objective, timed_solve  # noqa: E402 (as bench_throughput counts)

BETA = 1000.0


def deepxde_worker(args, points: int) -> dict:
    os.environ["DDE_BACKEND"] = "pytorch"
    import deepxde as dde
    import torch

    d = 10
    torch.manual_seed(0)
    dde.config.set_random_seed(0)
    dde.config.set_default_float("float32")

    def exact(x):
        return (torch.sin(math.pi * x) + 0.1 * torch.sin(10 * math.pi * x)).sum(1, keepdim=True)

    def source(x):  # f = -Laplace u*
        return (math.pi ** 2 * torch.sin(math.pi * x)
                + 0.1 * (10 * math.pi) ** 2 * torch.sin(10 * math.pi * x)).sum(1, keepdim=True)

    def pde(x, u):
        lap = sum(dde.grad.hessian(u, x, i=j, j=j) for j in range(d))
        return -lap - source(x)

    geom = dde.geometry.Hypercube([0.0] * d, [1.0] * d)
    bc = dde.icbc.DirichletBC(geom, lambda x: exact(torch.as_tensor(x)).numpy(), lambda x, on: on)
    data = dde.data.PDE(geom, pde, bc, num_domain=points, num_boundary=points // 2,
                        train_distribution="pseudo")
    net = dde.nn.FNN([d] + [args.width] * args.depth + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=1e-3, loss_weights=[1.0, BETA])
    model.train(iterations=args.warmup, display_every=10 ** 9, verbose=0)
    start = time.perf_counter()
    model.train(iterations=args.steps, display_every=10 ** 9, verbose=0)
    seconds = time.perf_counter() - start
    return {"tool": "deepxde" if points == args.points else "deepxde, same rows", "version": dde.__version__,
            "laplacian_rows": len(data.train_x), "seconds_per_step": seconds / args.steps}


def mscalednn_worker(args, compiled: bool) -> dict:
    from mscalednn import load_problem, load_run_config, seed_everything
    from mscalednn.runtime import tune_allocator

    tune_allocator()
    problem, _ = load_problem(ROOT / "problems" / "poisson10d.yaml")
    run = load_run_config(ROOT / "configs" / "vanilla.yaml", [
        f"model.width={args.width}", f"model.depth={args.depth}", "train.time_limit=null",
        "train.progress=false", "train.n_test=1000", "train.optimizer=adam", "train.ema=null",
        f"train.n_interior={args.points}", f"train.n_boundary={args.points // 2}", f"train.beta={BETA}",
        f"train.steps={args.warmup + args.steps}", f"train.eval_every={10 ** 9}",
        f"train.checkpoint_every={10 ** 9}", f"train.compile={'true' if compiled else 'false'}"])
    seed_everything(0)
    model = run.model.build(problem.dim)
    per_step = timed_solve(problem, model, run.train, args.warmup)[0]
    objective, batch = step_objective(problem, run.train, model, args.points)
    return {"tool": "mscalednn" + (" compiled" if compiled else ""), "laplacian_rows": args.points,
            "seconds_per_step": per_step, "step_gflop": step_flops(objective, batch) / 1e9}


def worker(args) -> None:
    import torch
    if args.worker.startswith("deepxde"):
        row = deepxde_worker(args, args.points if args.worker == "deepxde" else args.points // 2)
    else:
        row = mscalednn_worker(args, args.worker == "compiled")
    row.update({"threads": torch.get_num_threads(), "sgemm_gflop_per_s": sgemm_rate("cpu")})
    print(json.dumps(row), flush=True)


def launch(kind: str, python: str, args) -> dict | str:
    cmd = [python, str(Path(__file__).resolve()), "--worker", kind, "--points", str(args.points),
           "--width", str(args.width), "--depth", str(args.depth), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return f"failed: {last}"
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=2000, help="interior points (half as many on the boundary)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--steps", type=int, default=60, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (at least 2)")
    p.add_argument("--deepxde-python", default=sys.executable, help="an interpreter that imports deepxde and torch")
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", choices=["deepxde", "deepxde_rows", "eager", "compiled"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.warmup < 2 or args.steps < 2:
        p.error("--warmup and --steps must be at least 2")
    rows = {kind: launch(kind, args.deepxde_python, args) for kind in ("deepxde", "deepxde_rows")}
    for kind in ("eager", "compiled"):
        rows[kind] = launch(kind, sys.executable, args)
    base = {k: rows[k]["seconds_per_step"] if isinstance(rows[k], dict) else None for k in ("deepxde", "deepxde_rows")}
    print(f"{'tool':<20}{'rows':>6}{'ms/step':>9}{'steps/s':>9}{'vs DeepXDE':>11}{'vs same rows':>13}{'sgemm GF/s':>11}"
          f"{'GFLOP':>7}{'share':>7}{'floor':>15}")
    for kind, row in rows.items():
        if not isinstance(row, dict):
            print(f"{kind:<20}{row}")
            continue
        row["vs_deepxde"] = {k: b / row["seconds_per_step"] if b else None for k, b in base.items()}
        ratios = [f"{r:.2f}x" if r else "-" for r in row["vs_deepxde"].values()]
        work = ""
        if "step_gflop" in row:
            floor = row["step_gflop"] / row["sgemm_gflop_per_s"]  # seconds of matrix products at the sgemm rate
            row["sgemm_share"] = floor / row["seconds_per_step"]
            row["floor_vs_deepxde"] = {k: b / floor if b else None for k, b in base.items()}
            bounds = "/".join(f"{r:.1f}x" if r else "-" for r in row["floor_vs_deepxde"].values())
            work = f"{row['step_gflop']:>7.2f}{row['sgemm_share']:>7.0%}{bounds:>15}"
        print(f"{row['tool']:<20}{row['laplacian_rows']:>6}{1e3 * row['seconds_per_step']:>9.1f}"
              f"{1 / row['seconds_per_step']:>9.1f}{ratios[0]:>11}{ratios[1]:>13}{row['sgemm_gflop_per_s']:>11.0f}"
              + work)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
