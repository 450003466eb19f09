"""A coefficient that jumps across an interface: the Ritz loss against the residual loss with
interface conditions, both as `mscale solve` runs them, at equal training time.

-div(eps grad u) = rho with eps = eps_in in a ball |x - c| < R and eps_out outside: the strong
residual is undefined on the sphere, where u has a kink. Two ways to train, each one
``mscale solve FILE`` with the same config (``--model``, default the shipped default
configs/adaptive.yaml):

* ritz: ``--set train.loss=ritz`` (what ``train.loss: auto`` picks): one network, the energy
  1/2 eps |grad u|^2 - rho u needs no interface condition.
* interface: ``--set train.loss=residual`` on a problem file with ``interface:``: two networks of
  the config, one per side of the sphere (mscalednn.nn.Piecewise), each one's strong residual on
  its own side, plus w_u mean [u]^2 + w_f mean [eps du/dn]^2 on points of the sphere
  (mscalednn.losses.interface_terms; weights ``train.interface_weights``, by default
  (beta, sqrt(beta)); ``--weights`` sets them).

Both are measured on the same 20,000 uniform points (train.n_test). Runs go one after the
other. Prints a Markdown table; writes --json (default benchmarks/out/interface.json, an ignored
folder) after every run, and keeps the run directories under benchmarks/out/interface_runs/.

    python benchmarks/bench_interface.py                      # 180 s each, seed 0, both problems
    python benchmarks/bench_interface.py --budget 300 --seeds 0 1 --weights 1000,10
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mscalednn.cli import main as mscale_main  # noqa: E402

PROBLEMS = ["problems/poisson_boltzmann3d.yaml",  # the shipped problem
            "benchmarks/problems_interface/poisson_boltzmann3d_r06_eps20.yaml"]  # a variant written to check it
N_TEST = 20000
LOSS = {"ritz": "ritz", "interface": "residual"}


def run(file: str, method: str, budget: float, seed: int, model: str | None, weights: str | None, out: Path) -> dict:
    """One ``mscale solve`` run; its metrics and evaluation rows."""
    directory = out / f"{method}-{Path(file).stem}-s{seed}-{int(budget)}s-{time.strftime('%H%M%S')}"
    argv = ["solve", str(ROOT / file), "--out", str(directory), "--seed", str(seed),
            "--set", f"train.loss={LOSS[method]}", "--set", f"train.time_limit={budget}",
            "--set", f"train.n_test={N_TEST}", "--set", "train.eval_every=250", "--set", "train.progress=false",
            *(["--model", model] if model else []),
            *(["--set", f"train.interface_weights=[{weights}]"] if weights and method == "interface" else [])]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = mscale_main(argv)
    if status:
        raise RuntimeError(f"mscale solve failed ({status}): {printed.getvalue()}")
    m = json.loads((directory / "metrics.json").read_text())
    curve = [{"train_time_s": float(r["train_time_s"]), "rel_l2": float(r["rel_l2"])}
             for r in csv.DictReader((directory / "history.csv").open()) if r.get("rel_l2")]
    return {"method": method, "problem": Path(file).stem, "seed": seed, "budget": budget,
            **{k: m[k] for k in ("rel_l2", "rel_h1", "steps", "steps_per_s", "params")},
            "weights": "-" if method == "ritz" else weights or "default", "run_dir": str(directory),
            "curve": curve}


def table(results: list[dict]) -> str:
    lines = ["| method | problem | budget (s) | seed | rel L2 | rel H1 | steps | steps/s | params | weights |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['problem']} | {r['budget']:g} | {r['seed']} | {r['rel_l2']:.3e} | "
              f"{r['rel_h1']:.3e} | {r['steps']} | {r['steps_per_s']:.1f} | {r['params']} | {r['weights']} |"
              for r in results]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=PROBLEMS)
    p.add_argument("--methods", nargs="+", default=list(LOSS), choices=list(LOSS))
    p.add_argument("--budget", type=float, default=180.0, help="training seconds per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--model", default=None, help="a model config for both methods (default: the shipped default)")
    p.add_argument("--weights", default=None, help="w_u,w_f of the interface terms (default: the library's)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "interface.json"))
    args = p.parse_args()
    out = Path(args.json).parent
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for file in args.problems:
        for seed in args.seeds:
            for method in args.methods:
                r = run(file, method, args.budget, seed, args.model, args.weights, out / "interface_runs")
                results.append(r)
                Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "results": results}, indent=1))
                print(f"{method:9s} {r['problem']} seed {seed} {args.budget:g}s: rel L2 {r['rel_l2']:.3e} "
                      f"rel H1 {r['rel_h1']:.3e}, {r['steps']} steps", flush=True)
    print()
    print(table(results))
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
