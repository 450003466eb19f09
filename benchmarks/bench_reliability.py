"""Kill/resume trials and the cost of the safety checks.

1. Trials: for each problem, one uninterrupted `mscale solve` (CPU, float64, a step budget),
   then N runs of the same command killed at a random moment (SIGKILL, or SIGTERM / SIGINT for
   every third trial) and resumed with `mscale solve --resume DIR`; a trial passes when every
   final metric and every history row equals the uninterrupted run's to 1e-12 (relative).
2. Overhead: training steps/s on poisson10d with the default model, float32, side by side in one
   process: no checkpoint file, a checkpoint file every 500 steps (the default), every 10 steps.
   (The NaN/Inf check on the loss and parameters runs in all three.)

    python benchmarks/bench_reliability.py                       # 20 trials, ~15 minutes on 2 cores
    python benchmarks/bench_reliability.py --trials 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.dtype=float64", "train.device=cpu", "train.time_limit=null", "model.width=48",
         "model.hidden_width=24", "train.n_interior=256", "train.n_boundary=128", "train.progress=false",
         "train.n_test=400", "train.eval_every=100", "train.checkpoint_every=25"]
PROBLEMS = {"poisson1d_multiscale": 1000, "poisson2d_multiscale": 600, "poisson10d": 400}  # steps
KEYS = ("rel_l2", "rel_max", "rel_h1", "loss", "steps")


def command(problem: str, steps: int, out: Path) -> list[str]:
    sets = [a for item in SMALL + [f"train.steps={steps}"] for a in ("--set", item)]
    return [sys.executable, "-m", "mscalednn.cli", "solve", f"problems/{problem}.yaml", "--model",
            "configs/mscale.yaml", "--out", str(out), *sets]


def finished(out: Path) -> tuple[dict, list[list[str]]]:
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [line.split(",")[:9] for line in (out / "history.csv").read_text().splitlines()[1:]]
    return metrics, [[float(v) if v else None for v in row] for row in rows]  # loss rows have no errors


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-12 * max(1.0, abs(b))


def trial(problem: str, steps: int, out: Path, sig: int, rng: random.Random, reference) -> dict:
    proc = subprocess.Popen(command(problem, steps, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    while not (out / "checkpoint.pt").exists():  # training has started
        if proc.poll() is not None:
            raise SystemExit(proc.stderr.read())
        time.sleep(0.05)
    delay = rng.uniform(0.0, 0.8 * reference["train_time_s"])
    time.sleep(delay)
    proc.send_signal(sig)
    proc.communicate()
    if (out / "metrics.json").exists() and json.loads((out / "metrics.json").read_text())["status"] == "completed":
        return {"problem": problem, "signal": signal.Signals(sig).name, "delay_s": delay, "killed": False}
    import torch
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    resumed = subprocess.run([sys.executable, "-m", "mscalednn.cli", "solve", "--resume", str(out)], cwd=ROOT,
                             capture_output=True, text=True)
    if resumed.returncode != 0:
        raise SystemExit(resumed.stderr)
    metrics, history = finished(out)
    ref_metrics, ref_history = reference["metrics"], reference["history"]
    same = (all(close(metrics[k], ref_metrics[k]) for k in KEYS) and len(history) == len(ref_history)
            and all(close(a, b) for ra, rb in zip(history, ref_history) for a, b in zip(ra, rb)))
    return {"problem": problem, "signal": signal.Signals(sig).name, "delay_s": delay, "killed": True,
            "exit_code": proc.returncode, "checkpoint_step": step, "identical": same,
            "max_rel_diff": max(abs(metrics[k] - ref_metrics[k]) / abs(ref_metrics[k]) for k in KEYS[:4])}


def overhead(steps: int, repeats: int) -> dict:
    from mscalednn import load_problem, load_run_config, seed_everything, solve
    from mscalednn.train import Checkpointing

    problem, _ = load_problem(ROOT / "problems" / "poisson10d.yaml")
    rates: dict[str, list[float]] = {"no file": [], "every 500": [], "every 10": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for name in rates:
                every = {"no file": 500, "every 500": 500, "every 10": 10}[name]
                run = load_run_config(ROOT / "configs" / "mscale.yaml",
                                      [f"train.steps={steps}", "train.time_limit=null", "train.progress=false",
                                       "train.eval_every=100000", "train.n_test=500",
                                       f"train.checkpoint_every={every}"])
                seed_everything(0)
                model = run.model.build(problem.dim)
                path = None if name == "no file" else Checkpointing(Path(tmp) / "checkpoint.pt")
                rates[name].append(solve(problem, model, run.train, checkpoint=path).metrics["steps_per_s"])
    best = {k: max(v) for k, v in rates.items()}
    return {"steps": steps, "repeats": repeats, "steps_per_s": rates,
            "ratio_vs_no_file": {k: best[k] / best["no file"] for k in best}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20, help="kill/resume trials in all (split over the problems)")
    p.add_argument("--seed", type=int, default=2026, help="seed of the kill times")
    p.add_argument("--overhead-steps", type=int, default=1000)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "reliability.json"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    signals = [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGINT]
    results, references = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for problem, steps in PROBLEMS.items():
            out = Path(tmp) / f"{problem}-ref"
            t0 = time.perf_counter()
            subprocess.run(command(problem, steps, out), cwd=ROOT, check=True, capture_output=True)
            metrics, history = finished(out)
            references[problem] = {"metrics": metrics, "history": history, "train_time_s": metrics["train_time_s"],
                                   "process_s": time.perf_counter() - t0}
        for i in range(args.trials):
            problem = list(PROBLEMS)[i % len(PROBLEMS)]
            r = trial(problem, PROBLEMS[problem], Path(tmp) / f"trial{i}", signals[i % len(signals)], rng,
                      references[problem])
            results.append(r)
            print(f"trial {i:2d} {problem:>22} {r['signal']:>7} after {r['delay_s']:5.2f} s: "
                  + (f"checkpoint step {r['checkpoint_step']:4d}, exit {r['exit_code']}, identical {r['identical']}"
                     if r["killed"] else "finished before the signal"), flush=True)
    cost = overhead(args.overhead_steps, 3)
    killed = [r for r in results if r["killed"]]
    summary = {"trials": len(results), "killed": len(killed), "identical": sum(r["identical"] for r in killed),
               "by_signal": {s: sum(1 for r in killed if r["signal"] == s) for s in ("SIGKILL", "SIGTERM", "SIGINT")},
               "max_rel_diff": max((r["max_rel_diff"] for r in killed), default=None)}
    print(f"\n{summary['identical']} of {summary['killed']} killed runs resumed to the uninterrupted result "
          f"(max relative difference {summary['max_rel_diff']}); signals {summary['by_signal']}")
    print("\ncheckpoint overhead (poisson10d, default model, float32, best of 3):")
    print(f"{'checkpoint file':>16} | steps/s | ratio")
    for k, v in cost["ratio_vs_no_file"].items():
        print(f"{k:>16} | {max(cost['steps_per_s'][k]):7.2f} | {v:.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "trials": results, "overhead": cost,
                                           "references": {k: {"metrics": v["metrics"], "process_s": v["process_s"]}
                                                          for k, v in references.items()}}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
