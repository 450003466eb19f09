"""A coefficient that jumps across an interface: the library's Ritz loss against a residual form
with interface conditions, at equal training time.

-div(eps grad u) = rho with eps = eps_in in a ball |x - c| < R and eps_out outside: the strong
residual is undefined on the sphere, where u has a kink. Two ways to train:

* ritz: ``mscale solve FILE --set train.loss=ritz`` through the CLI entry, the shipped default
  config (configs/adaptive.yaml) untouched otherwise: one network, the energy
  1/2 eps |grad u|^2 - rho u needs no interface condition.
* iface: written here from the library's pieces: two MscaleDNNs of configs/mscale.yaml (each the
  default size), u = net_in inside the ball and net_out outside; the strong residual
  -eps Laplace u - rho (forward Laplacian, mscalednn.losses / Operator.residual) of each network
  on the collocation points of its own subdomain (eps is constant there), mean over the whole
  batch, plus
      w_u * mean (u_in - u_out)^2 + w_f * mean (eps_in du_in/dn - eps_out du_out/dn)^2
  on fresh uniform points of the sphere and w_b * mean (u_out - g)^2 on the box (w_b = w_u), with
  configs/mscale.yaml's Adam settings (lr 3e-3, exponential decay to 0.1x over the time budget,
  EMA 0.99 of the parameters, the library's output scaling of both networks from g), fresh points
  every step, n_interior / n_boundary of the config and --n-interface sphere points.

Both are measured on the same 20,000 uniform points (mscalednn.metrics.EvalSet, seed 12345; the
Ritz run gets them through train.n_test=20000): relative L2 and H1-seminorm errors every
--eval-every seconds of training time (evaluation is not training time, as in the library) and at
the end. --tune S first runs the iface form for S seconds with each pair (w_u, w_f) of --grid on
the first problem, seed 0, and takes the best relative L2 for everything after (the Ritz run is
not tuned). Runs go one after the other. Prints a Markdown table; writes --json (default
benchmarks/out/interface.json, an ignored folder) after every run.

    python benchmarks/bench_interface.py                      # tune 60 s, then 180 s runs, seed 0
    python benchmarks/bench_interface.py --tune 0 --weights 1000,10 --budget 300 --seeds 0 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mscalednn import averaging  # noqa: E402
from mscalednn.cli import main as mscale_main  # noqa: E402
from mscalednn.config import load_problem, load_run_config  # noqa: E402
from mscalednn.derivatives import value_and_grad  # noqa: E402
from mscalednn.forward_laplacian import forward_laplacian  # noqa: E402
from mscalednn.metrics import EvalSet, evaluate  # noqa: E402
from mscalednn.nn import count_parameters  # noqa: E402
from mscalednn.sampling import Sampler  # noqa: E402
from mscalednn.train import learning_rate, output_scaling, seed_everything  # noqa: E402

# the interface of each problem file: centre, radius (eps on each side is read from the file)
PROBLEMS = {
    "problems/poisson_boltzmann3d.yaml": ((0.0, 0.0, 0.0), 0.7),
    "benchmarks/problems_interface/poisson_boltzmann3d_r06_eps20.yaml": ((0.0, 0.0, 0.0), 0.6),
}
GRID = ((1000, 1), (1000, 10), (1000, 100), (100, 10), (10000, 100))
N_TEST = 20000


class Piecewise(nn.Module):
    """u(x) = inner(x) for |x - c| < R, else outer(x)."""

    def __init__(self, inner: nn.Module, outer: nn.Module, centre, radius: float):
        super().__init__()
        self.inner, self.outer, self.radius = inner, outer, radius
        self.register_buffer("centre", torch.tensor(centre))

    def forward(self, x):
        inside = (x - self.centre.to(x.dtype)).norm(dim=-1, keepdim=True) < self.radius
        return torch.where(inside, self.inner(x), self.outer(x))


def sphere(n: int, centre: torch.Tensor, radius: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n uniform points on the sphere and their outward normals."""
    normal = torch.randn(n, centre.numel(), generator=gen, dtype=torch.float64)
    normal = normal / normal.norm(dim=1, keepdim=True)
    return centre + radius * normal, normal


def train_iface(problem, centre, radius, budget: float, seed: int, w_u: float, w_f: float, n_interface: int,
                eval_every: float, test: EvalSet, scale_output: bool = True) -> dict:
    """The residual form with interface conditions; returns errors, steps and the curve."""
    run = load_run_config(ROOT / "configs" / "mscale.yaml", [f"train.seed={seed}", f"train.time_limit={budget}"])
    cfg = run.train
    seed_everything(seed)
    dtype = getattr(torch, cfg.dtype)
    nets = nn.ModuleDict({"inner": run.model.build(problem.dim), "outer": run.model.build(problem.dim)})
    shift, scale = output_scaling(problem, seed)
    for net in nets.values():
        if scale_output:  # the library's rule (train.scale_output), else u = the raw network
            net.set_output_scaling(shift, scale)
    nets.to(dtype)
    model = Piecewise(nets["inner"], nets["outer"], centre, radius).to(dtype)
    opt = torch.optim.Adam(nets.parameters(), lr=cfg.lr)
    average = averaging.start(nets, cfg.ema)
    sampler = Sampler(problem, cfg.sampler, seed, dtype=dtype)
    gen = torch.Generator().manual_seed(10_000 + seed)
    op, c64 = problem.operator, torch.tensor(centre, dtype=torch.float64)
    # eps on each side of the sphere, from the problem's own coefficient (constant on each side)
    probe, n_probe = sphere(64, c64, radius, gen)
    eps_in = float(op.coefficients(c64 + (radius - 1e-6) * n_probe)[0].mean())
    eps_out = float(op.coefficients(c64 + (radius + 1e-6) * n_probe)[0].mean())

    def loss_terms():
        x = sampler.interior(cfg.n_interior)
        inside = (x.double() - c64).norm(dim=1) < radius
        residuals = []
        for net, xs in ((nets["inner"], x[inside]), (nets["outer"], x[~inside])):
            u, grad, lap = forward_laplacian(net, xs, need_grad=op.needs_grad)
            residuals.append(op.residual(problem.interior_data(xs), u, grad, lap))
        interior = torch.cat(residuals).square().mean()
        xb = sampler.boundary(cfg.n_boundary)
        bc = (nets["outer"](xb).reshape(-1) - problem.boundary_data(xb)).square().mean()
        xs, n = sphere(n_interface, c64, radius, gen)
        xs, n = xs.to(dtype), n.to(dtype)
        u_in, g_in = value_and_grad(nets["inner"], xs)
        u_out, g_out = value_and_grad(nets["outer"], xs)
        jump_u = (u_in - u_out).square().mean()
        jump_f = (eps_in * (g_in * n).sum(1) - eps_out * (g_out * n).sum(1)).square().mean()
        return interior, bc, jump_u, jump_f

    def measure(step, train_time):
        with averaging.swapped_in(nets, average):
            return {"step": step, "train_time_s": train_time, **evaluate(model, test)}

    curve, step, train_time, next_eval = [], 0, 0.0, eval_every
    while train_time < budget:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, min(train_time / budget, 1.0))
        interior, bc, jump_u, jump_f = loss_terms()
        loss = interior + w_u * bc + w_u * jump_u + w_f * jump_f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        average.update_parameters(nets)
        step += 1
        train_time += time.perf_counter() - t0
        if not math.isfinite(loss.item()):
            break
        if train_time >= next_eval or train_time >= budget:
            curve.append(measure(step, train_time))
            next_eval += eval_every
    final = curve[-1] if curve else measure(step, train_time)
    return {"method": "iface", "rel_l2": final["rel_l2"], "rel_h1": final["rel_h1"], "steps": step,
            "train_time_s": train_time, "steps_per_s": step / train_time, "weights": {"w_b": w_u, "w_u": w_u, "w_f": w_f},
            "eps": [eps_in, eps_out], "parameters": count_parameters(nets),
            "parameters_each": count_parameters(nets["inner"]), "last_loss_terms":
            {k: float(v.detach()) for k, v in zip(("interior", "boundary", "jump_u", "jump_flux"), (interior, bc, jump_u, jump_f))},
            "curve": curve}


def train_ritz(file: str, budget: float, seed: int, out: Path, scale_output: bool = True) -> dict:
    """``mscale solve FILE --set train.loss=ritz`` with the default config; errors on the same
    20,000 points (train.n_test) and the run's evaluation rows as the curve."""
    directory = out / f"ritz-{Path(file).stem}-s{seed}-{int(budget)}s-{time.strftime('%H%M%S')}"
    argv = ["solve", str(ROOT / file), "--out", str(directory), "--seed", str(seed),
            "--set", "train.loss=ritz", "--set", f"train.time_limit={budget}", "--set", f"train.n_test={N_TEST}",
            "--set", "train.eval_every=250", "--set", "train.progress=false",
            "--set", f"train.scale_output={str(scale_output).lower()}"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = mscale_main(argv)
    if status:
        raise RuntimeError(f"mscale solve failed ({status}): {printed.getvalue()}")
    metrics = json.loads((directory / "metrics.json").read_text())
    import csv
    rows = [r for r in csv.DictReader((directory / "history.csv").open()) if r.get("rel_l2")]
    curve = [{"step": int(r["step"]), "train_time_s": float(r["train_time_s"]), "rel_l2": float(r["rel_l2"]),
              "rel_h1": float(r["rel_h1"])} for r in rows]
    from mscalednn.outputs import load_model
    params = count_parameters(load_model(directory / "model.pt"))
    return {"method": "ritz", "rel_l2": metrics["rel_l2"], "rel_h1": metrics["rel_h1"], "steps": metrics["steps"],
            "train_time_s": metrics["train_time_s"], "steps_per_s": metrics["steps_per_s"], "weights": "library (beta 1000)",
            "parameters": params, "run_dir": str(directory), "waves_placed": len(metrics.get("adaptations") or []),
            "curve": curve}


def thin(curve: list[dict], every: float) -> list[dict]:
    """The evaluation rows nearest to every multiple of ``every`` seconds, and the last."""
    if not curve:
        return []
    marks = [every * k for k in range(1, int(curve[-1]["train_time_s"] // every) + 1)]
    keep = {min(range(len(curve)), key=lambda i: abs(curve[i]["train_time_s"] - m)) for m in marks}
    return [curve[i] for i in sorted(keep | {len(curve) - 1})]


def table(results: list[dict]) -> str:
    lines = ["| method | problem | budget (s) | seed | rel L2 | rel H1 | steps | steps/s | params | weights (w_u=w_b, w_f) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        w = r["weights"] if isinstance(r["weights"], str) else f"{r['weights']['w_u']:g}, {r['weights']['w_f']:g}"
        lines.append(f"| {r['method']}{' (tune)' if r.get('tune') else ''} | {r['problem']} | {r['budget']:g} | "
                     f"{r['seed']} | {r['rel_l2']:.3e} | {r['rel_h1']:.3e} | {r['steps']} | {r['steps_per_s']:.1f} | "
                     f"{r['parameters']} | {w} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--methods", nargs="+", default=["ritz", "iface"], choices=["ritz", "iface"])
    p.add_argument("--budget", type=float, default=180.0, help="training seconds per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--tune", type=float, default=60.0, help="seconds per weight pair of --grid (0: no tuning)")
    p.add_argument("--grid", nargs="+", default=[f"{a},{b}" for a, b in GRID], help="w_u,w_f pairs to tune over")
    p.add_argument("--weights", default="1000,10", help="w_u,w_f when --tune 0")
    p.add_argument("--eps-scaled", type=float, default=None, metavar="EPS_REF",
                   help="multiply w_u and w_f by (eps_out / EPS_REF)^2: the outer residual (eps_out Laplace e)^2 "
                        "grows with eps_out^2, so weights tuned where eps_out = EPS_REF keep their balance")
    p.add_argument("--no-scale-output", action="store_true",
                   help="both methods without the library's output scaling from g (train.scale_output=false)")
    p.add_argument("--n-interface", type=int, default=1000)
    p.add_argument("--eval-every", type=float, default=30.0, help="seconds of training between evaluations")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for both methods (default: the library's, torch's default)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "out" / "interface.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.json).parent
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    record = {"argv": sys.argv[1:], "torch_threads": torch.get_num_threads(), "n_test": N_TEST, "results": results}

    def save(r: dict) -> None:
        results.append({**r, "curve": thin(r["curve"], args.eval_every)})
        Path(args.json).write_text(json.dumps(record, indent=1))
        c = results[-1]
        print(f"{c['method']:5s} {Path(c['problem']).stem} seed {c['seed']} {c['budget']:g}s: rel L2 {c['rel_l2']:.3e} "
              f"rel H1 {c['rel_h1']:.3e}, {c['steps']} steps; curve "
              + " ".join(f"{row['train_time_s']:.0f}s:{row['rel_l2']:.2e}" for row in c["curve"]), flush=True)

    tests = {}

    def setup(file):
        problem, _ = load_problem(ROOT / file)
        if file not in tests:
            tests[file] = EvalSet.build(problem, N_TEST)
        return problem, tests[file]

    weights = tuple(float(v) for v in args.weights.split(","))
    if args.tune > 0 and "iface" in args.methods:
        file = args.problems[0]
        problem, test = setup(file)
        tuned = []
        for pair in args.grid:
            w_u, w_f = (float(v) for v in pair.split(","))
            r = train_iface(problem, *PROBLEMS[file], args.tune, 0, w_u, w_f, args.n_interface, args.eval_every, test)
            save({**r, "problem": file, "budget": args.tune, "seed": 0, "tune": True})
            tuned.append((r["rel_l2"] if math.isfinite(r["rel_l2"]) else math.inf, (w_u, w_f)))
        weights = min(tuned)[1]
        record["tuned_weights"] = weights
        print(f"tuned: w_u = w_b = {weights[0]:g}, w_f = {weights[1]:g}", flush=True)
    for file in args.problems:
        problem, test = setup(file)
        for seed in args.seeds:
            for method in args.methods:
                if method == "ritz":
                    r = train_ritz(file, args.budget, seed, out / "interface_runs", not args.no_scale_output)
                else:
                    factor = 1.0
                    if args.eps_scaled:
                        centre, radius = PROBLEMS[file]
                        outside = torch.tensor([centre], dtype=torch.float64) + (radius + 1e-6) * torch.eye(3)[:1].double()
                        factor = (float(problem.operator.coefficients(outside)[0][0]) / args.eps_scaled) ** 2
                    r = train_iface(problem, *PROBLEMS[file], args.budget, seed, *(w * factor for w in weights),
                                    args.n_interface, args.eval_every, test, not args.no_scale_output)
                save({**r, "problem": file, "budget": args.budget, "seed": seed,
                      "scale_output": not args.no_scale_output, "eps_scaled": args.eps_scaled})
    print()
    print(table(results))
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
