"""Collocation points per second of `mscale solve`'s training step, in 1 and more processes.

For each problem and number of processes P, the same training as `mscale solve` (the function
``mscalednn.solve``, default fixed-scale MscaleDNN ``configs/mscale.yaml``, residual loss, Adam)
runs for ``--steps`` timed steps after ``--warmup`` untimed ones, in a fresh launch:
``torchrun --standalone --nproc-per-node P`` (gloo on the CPU, nccl on GPUs) for P > 1, plain
``python`` for P = 1. Each process gets cores / P threads. Two scalings:

* weak:   every process has ``--points`` interior points (the effective batch grows with P),
* strong: the ``--points`` are split over the P processes (the same effective batch).

Printed per row: steps/s, interior points per second (all processes), the speed-up over P = 1
of the same scaling, the matrix-product work of one process's step (the flops of its matmuls,
counted by ``torch.utils.flop_counter`` on rank 0's step; elementwise work is not counted), the
rate that makes per process, and the float32 sgemm rate measured in the same process with its
threads ([20000, 128] x [128, 128]), with the step's share of it; with 1 process, what the
per-step check for NaN/Inf (the training loop's one host synchronisation) adds to a step. JSON
(``--json``) holds every row.

    python benchmarks/bench_throughput.py                                  # poisson10d, P = 1, 2
    python benchmarks/bench_throughput.py --problems poisson10d poisson1000d --steps 20
    python benchmarks/bench_throughput.py --device cuda --processes 1       # on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sgemm_rate(device: str, reps: int = 20) -> float:
    """float32 GFLOP/s of [20000, 128] x [128, 128] on ``device`` (best of ``reps``)."""
    import torch
    a = torch.randn(20000, 128, device=device)
    b = torch.randn(128, 128, device=device)
    best = float("inf")
    for _ in range(reps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * 20000 * 128 * 128 / best / 1e9


def timed_solve(problem, model, train, warmup: int, device: str = "cpu"):
    """``mscalednn.solve(problem, model, train)`` with its steps timed by a hook: (seconds per
    step, the result). ``train.steps`` is ``warmup`` untimed steps plus the timed ones (at least
    2); the first and the last step also evaluate the errors, so the window runs from after step
    ``warmup`` to after the last step but one."""
    import torch
    from mscalednn import solve
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: list[float] = []

    def stamp(state):
        sync()
        times.append(time.perf_counter())

    result = solve(problem, model, train, hooks=[stamp])
    return (times[-2] - times[warmup - 1]) / (train.steps - warmup - 1), result  # times[i]: after step i + 1


def step_objective(problem, train, model, points: int):
    """The objective (uncompiled) and a batch (``points`` interior, half as many boundary points,
    on the model's device) of one training step, as ``mscalednn.solve`` builds them from
    ``train``: the loss ``auto`` resolved first, so that the derivative method is the run's."""
    from mscalednn.sampling import Sampler
    from mscalednn.train import chosen_loss, training_objective
    p = next(model.parameters())
    sampler = Sampler(problem, "uniform", 1, device=p.device, dtype=p.dtype)
    x_in, x_bd = sampler.interior(points), sampler.boundary(max(1, points // 2))
    objective = training_objective(problem, model, dataclasses.replace(train, loss=chosen_loss(train, problem)[0]))
    return objective, (x_in, x_bd, problem.interior_data(x_in), problem.boundary_data(x_bd))


def step_flops(objective, batch) -> float:
    """Floating-point operations of one training step's backward (Laplacian, loss, gradients)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        objective.backward(batch, beta=1.0)
    return float(counter.get_total_flops())


def finite_check_cost(objective, batch, model, device: str, steps: int = 20) -> float:
    """Seconds per step that the training loop's check of the loss and parameters for NaN/Inf
    (its one host synchronisation, ``mscalednn.train._finite``) adds to an Adam step: the best
    of 3 loops of ``steps`` steps with it against without it, in one process."""
    import torch
    from mscalednn.train import _finite
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    adam = torch.optim.Adam(model.parameters(), lr=1e-6)

    def loop(check: bool) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            adam.zero_grad(set_to_none=True)
            loss = objective.backward(batch, 1.0)[0]
            adam.step()
            if check:
                _finite(loss, model)
        sync()
        return (time.perf_counter() - start) / steps

    loop(False)
    without, with_check = min(loop(False) for _ in range(3)), min(loop(True) for _ in range(3))
    return with_check - without


def worker(args) -> None:
    """One process of a measurement; rank 0 prints a JSON row."""
    import torch
    from mscalednn import distributed, load_problem, load_run_config, seed_everything
    from mscalednn.runtime import tune_allocator

    tune_allocator()
    world = distributed.init_from_environment(args.device)
    problem, _ = load_problem(ROOT / "problems" / f"{args.problem}.yaml")
    per_rank = args.points if args.scaling == "weak" else args.points // world.size
    run = load_run_config(ROOT / "configs" / "mscale.yaml", [
        f"train.device={args.device}", "train.time_limit=null", "train.progress=false", "train.n_test=1000",
        f"train.n_interior={per_rank}", f"train.n_boundary={max(1, per_rank // 2)}",
        f"train.steps={args.warmup + args.steps}", f"train.eval_every={10 ** 9}",
        f"train.checkpoint_every={10 ** 9}", "train.ema=null"])
    seed_everything(0)
    model = run.model.build(problem.dim)
    per_step, result = timed_solve(problem, model, run.train, args.warmup, args.device)
    flops = None
    if world.is_main:  # the work of one step on rank 0's points, counted outside the timing
        objective, batch = step_objective(problem, run.train, model, per_rank)
        flops = step_flops(objective, batch)
        rate = sgemm_rate(args.device)
        check = finite_check_cost(objective, batch, model, args.device) if world.size == 1 else None
        print(json.dumps({"problem": args.problem, "d": problem.dim, "processes": world.size,
                          "scaling": args.scaling, "points_per_process": per_rank,
                          "threads": torch.get_num_threads(), "device": args.device,
                          "steps_per_s": 1 / per_step, "points_per_s": per_rank * world.size / per_step,
                          "step_gflop": flops / 1e9, "gflop_per_s": flops / 1e9 / per_step,
                          "sgemm_gflop_per_s": rate, "world_size": result.metrics["world_size"],
                          "finite_check_ms": None if check is None else 1e3 * check}), flush=True)
    distributed.shutdown()


def launch(problem: str, processes: int, scaling: str, args) -> dict:
    """One measurement in fresh processes; its JSON row."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // processes)
    me = [str(Path(__file__).resolve()), "--worker", "--problem", problem, "--scaling", scaling,
          "--points", str(args.points), "--steps", str(args.steps), "--warmup", str(args.warmup),
          "--device", args.device]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)] + me
           if processes > 1 else [sys.executable] + me)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"bench_throughput: {problem} P={processes} failed:\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", default=["poisson10d"])
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    p.add_argument("--scalings", nargs="+", default=["weak", "strong"], choices=["weak", "strong"])
    p.add_argument("--points", type=int, default=2000, help="interior points per process (weak) or in all (strong)")
    p.add_argument("--steps", type=int, default=40, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (at least 2)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--problem", help=argparse.SUPPRESS)
    p.add_argument("--scaling", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.warmup < 2 or args.steps < 2:
        p.error("--warmup and --steps must be at least 2")
    rows = []
    print(f"{'problem':<14}{'scaling':<8}{'P':>3}{'pts/proc':>9}{'thr':>4}{'steps/s':>9}{'points/s':>11}"
          f"{'speed-up':>9}{'GFLOP/step':>11}{'GF/s/proc':>10}{'sgemm':>7}{'share':>7}{'NaN check ms':>13}")
    for problem in args.problems:
        for scaling in args.scalings:
            base = None
            for processes in args.processes:
                row = launch(problem, processes, scaling, args)
                if processes == 1:
                    base = row["points_per_s"]
                row["speed_up"] = row["points_per_s"] / base if base else None
                rows.append(row)
                speed = f"{row['speed_up']:.2f}" if row["speed_up"] else "-"
                print(f"{problem:<14}{scaling:<8}{processes:>3}{row['points_per_process']:>9}{row['threads']:>4}"
                      f"{row['steps_per_s']:>9.2f}{row['points_per_s']:>11.0f}{speed:>9}{row['step_gflop']:>11.2f}"
                      f"{row['gflop_per_s']:>10.1f}{row['sgemm_gflop_per_s']:>7.0f}"
                      f"{row['gflop_per_s'] / row['sgemm_gflop_per_s']:>7.0%}"
                      + (f"{row['finite_check_ms']:>13.3f}" if row["finite_check_ms"] is not None else f"{'-':>13}"),
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
