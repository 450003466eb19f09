"""``mscale compare``: several models on one problem, the same training budget, several seeds.

Every contender trains with the same ``train:`` settings (those of the first config, plus
``--set`` and ``--budget``): the same steps or seconds, loss, optimizer and schedule, and, for
a given seed, the same collocation points. Each run records a :class:`FrequencyMonitor`; the
report aggregates the errors over seeds, the step at which each frequency converged, and one
sentence that says who won by how much.

The runs are independent: ``jobs`` > 1 runs them in that many worker processes (spawned, each
with ``cores / jobs`` torch threads), ``ray`` submits them as tasks to a Ray cluster (each
returns its run's files, so the workers need no file system shared with this process; they need
mscalednn installed), and a compare that was stopped resumes from its directory,
running only the runs that have no ``run.json`` yet. Every run's seed fixes its result, so the
summary does not depend on the order or the process a run had (with a budget in steps; a time
budget depends on the machine's speed anyway).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .adapt import wave_report
from .reference import Reference
from .config import RunConfig, apply_overrides, build_run_config, load_problem, read_yaml
from .errors import ConfigError
from .frequency import FrequencyMonitor
from .nn import count_parameters
from .outputs import save_checkpoint, write_atomic, write_history, write_json
from .problem import PoissonProblem
from .train import build_network, seed_everything, solve

ERRORS = ("rel_l2", "rel_max", "rel_h1")


@dataclass(frozen=True)
class Contender:
    """A model to compare: its name (the config file's stem), source file and settings."""

    name: str
    source: str
    run: RunConfig


def budget_overrides(text: str | None) -> list[str]:
    """``--budget`` as ``--set`` overrides: "300s" / "5min" (training seconds; steps unbounded)
    or "2000" (steps; no time limit)."""
    if text is None:
        return []
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|steps?)?\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError("--budget", "expected training seconds (300s, 5min) or steps (2000)", text)
    value, unit = float(m.group(1)), (m.group(2) or "steps")
    if unit.startswith("step"):
        if value != int(value):
            raise ConfigError("--budget", "expected a whole number of steps", text)
        return [f"train.steps={int(value)}", "train.time_limit=null"]
    seconds = value * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[unit]
    return [f"train.time_limit={seconds:g}", "train.steps=1000000000"]


def load_contenders(files: list[str], overrides: list[str], budget: str | None) -> tuple[list[Contender], list[str]]:
    """The contenders, all with the first file's ``train:`` section plus the overrides; and a
    note for every train setting of another file that this replaced."""
    reference = read_yaml(files[0]).get("train") or {}
    budget_items = budget_overrides(budget)
    contenders, notes, names = [], [], set()
    for path in files:
        data = read_yaml(path)
        own = data.get("train") or {}
        if not isinstance(own, dict) or not isinstance(reference, dict):
            raise ConfigError("train", "expected a mapping of training settings", own, source=path)
        replaced = sorted(k for k in set(own) | set(reference) if own.get(k) != reference.get(k))
        if replaced:
            notes.append(f"{path}: train settings {', '.join(replaced)} replaced by those of {files[0]} "
                         "(every model trains the same way)")
        try:
            settings = apply_overrides({**data, "train": reference}, [*overrides, *budget_items])
            run = build_run_config(settings)
        except ConfigError as exc:
            raise exc.with_source(path) from None
        name, n = Path(path).stem, 2
        while name in names:
            name, n = f"{Path(path).stem}-{n}", n + 1
        names.add(name)
        contenders.append(Contender(name, str(path), run))
    return contenders, notes


def run_contender(problem: PoissonProblem, contender: Contender, seed: int, out: Path,
                  directions: str = "axes") -> dict:
    """Train one contender with one seed; write its run files under ``out``; return its record."""
    train = dataclasses.replace(contender.run.train, seed=seed)
    seed_everything(seed)
    model = build_network(contender.run.model, train, problem)
    monitor = FrequencyMonitor(problem, directions=directions)
    result = solve(problem, model, train, hooks=[monitor])
    monitor.finish(result.model, result.metrics["steps"], result.metrics["train_time_s"])
    record = {"model": contender.name, "seed": seed, "params": count_parameters(model),
              **result.metrics, "frequency": monitor.to_dict()}
    if result.metrics["adaptations"]:  # the adaptive MscaleDNN: its waves against the exact solution's
        record["waves"] = wave_report(result.model, problem, result.metrics["adaptations"])
    out.mkdir(parents=True, exist_ok=False)
    save_checkpoint(out / "model.pt", result.model, contender.run.model, problem.dim, {"step": result.metrics["steps"]})
    write_history(out / "history.csv", result.history)
    write_json(out / "run.json", record)
    return record


def _median_step(steps: list[int | None]) -> int | None:
    """The median over seeds of the first step below the threshold (the upper one of the two
    middle values for an even count); None unless more than half of the seeds got there (an
    unreached seed counts as later than any reached one)."""
    reached = sorted(s for s in steps if s is not None)
    if len(reached) * 2 <= len(steps):
        return None
    ordered = reached + [None] * (len(steps) - len(reached))
    return int(ordered[len(steps) // 2])


def _spread(values: list[float]) -> float | None:
    """The sample standard deviation (ddof = 1); 0 for a single value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)


def summarize(contenders: list[Contender], records: list[dict], primary: str) -> list[dict]:
    """One entry per contender: errors mean/std over the completed seeds, params, times (over
    the completed seeds too), and per frequency (of the ``primary`` measurement) the median step
    where Delta_F fell below 0.1. A diverged run counts as "not reached"."""
    entries = []
    for c in contenders:
        runs = [r for r in records if r["model"] == c.name]
        done = [r for r in runs if r["status"] == "completed"]
        entry = {"model": c.name, "config": c.source, "kind": c.run.model.kind, "params": runs[0]["params"],
                 "seeds": [r["seed"] for r in runs], "completed": len(done)}
        for key in ERRORS:
            values = [r[key] for r in done if r.get(key) is not None]
            entry[f"{key}_mean"] = float(np.mean(values)) if values else None
            entry[f"{key}_std"] = _spread(values)
            entry[f"{key}_per_seed"] = [r.get(key) for r in runs]
        for key in ("wall_time_s", "train_time_s", "steps_per_s", "steps"):
            entry[f"{key}_mean"] = float(np.mean([r[key] for r in done or runs]))
        for name, info in runs[0]["frequency"]["measurements"].items():
            rows = info["rows"]
            per_seed = [r["frequency"]["measurements"][name]["first_below"] if r["status"] == "completed"
                        else [None] * len(rows) for r in runs]
            key = "freq_steps" if name == primary else f"freq_steps_{name}"
            entry[key] = {row: _median_step([s[i] for s in per_seed]) for i, row in enumerate(rows)}
            entry[f"{key}_per_seed"] = {row: [s[i] for s in per_seed] for i, row in enumerate(rows)}
            if name == primary:
                entry["freqs"] = dict(zip(rows, info["freqs"]))      # cycles per unit length
        entries.append(entry)
    return entries


def verdict(problem: PoissonProblem, entries: list[dict], budget: str) -> str:
    """One sentence with the numbers: the lowest mean rel L2, how many times lower than each
    other model, whether that is beyond the spread over seeds, and the slowest frequency."""
    ranked = sorted((e for e in entries if e["rel_l2_mean"] is not None), key=lambda e: e["rel_l2_mean"])
    failed = [e["model"] for e in entries if e["rel_l2_mean"] is None]
    if not ranked:
        return f"On {problem.name} no model completed a run ({budget})."
    best = ranked[0]
    seeds, done = len(best["seeds"]), best["completed"]
    counted = f"{seeds} seed{'s' * (seeds > 1)}" if done == seeds else f"{done} of {seeds} seeds completed"
    parts = [f"On {problem.name} ({budget}, {counted}), {best['model']} reached the lowest "
             f"rel L2 error, {best['rel_l2_mean']:.2e} +/- {best['rel_l2_std']:.1e}"]
    for other in ranked[1:]:
        ratio = other["rel_l2_mean"] / best["rel_l2_mean"]
        overlap = best["rel_l2_mean"] + best["rel_l2_std"] >= other["rel_l2_mean"] - other["rel_l2_std"]
        spread = ", within the spread over seeds" if overlap and min(best["completed"], other["completed"]) > 1 else ""
        times = f"{ratio:.3g}" if ratio < 100 else f"{ratio:,.0f}"
        parts.append(f"{times}x lower than {other['model']} ({other['rel_l2_mean']:.2e}{spread})")
    text = parts[0] + (": " + "; ".join(parts[1:]) if parts[1:] else "")
    slowest = _slowest_frequency(ranked)
    if slowest:
        text += f"; {slowest}"
    if failed:
        text += f"; {', '.join(failed)} did not complete (non-finite loss)"
    return text + "."


def _slowest_frequency(ranked: list[dict]) -> str:
    """'Delta_F < 0.1 at the highest tracked frequency (k=23): a: step 400, b: not reached'."""
    freqs = {r: f for r, f in ranked[0].get("freqs", {}).items() if r != "mean"}
    if not freqs:
        return ""
    row = max(freqs, key=freqs.get)
    said = {e["model"]: e["freq_steps"][row] for e in ranked}
    text = ", ".join(f"{m}: {'step ' + str(s) if s is not None else 'not reached'}" for m, s in said.items())
    return f"Delta_F < 0.1 at the highest tracked frequency ({row}): {text}"


def primary_measurement(problem: PoissonProblem) -> str:
    """The measurement whose rows make ``freq_steps``: the grid DFT for d <= 2, else the projection."""
    return "grid" if problem.dim <= 2 else "projection"


def report_markdown(problem: PoissonProblem, entries: list[dict], sentence: str, budget: str, notes: list[str],
                    figures: list[str]) -> str:
    """summary.md: the table, the frequency steps, the verdict and the figures."""
    def pm(e, key):
        if e[f"{key}_mean"] is None:
            return "diverged" if key == "rel_l2" or e["rel_l2_mean"] is None else "-"
        return f"{e[f'{key}_mean']:.2e} ± {e[f'{key}_std']:.1e}"

    lines = [f"# mscale compare: {problem.name} (d = {problem.dim})", "", f"Budget: {budget}. " + sentence, "",
             "| model | params | rel L2 | rel max | rel H1 | train s | wall s | steps/s | steps | seeds done |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['model']} | {e['params']:,} | {pm(e, 'rel_l2')} | {pm(e, 'rel_max')} | {pm(e, 'rel_h1')} | "
                     f"{e['train_time_s_mean']:.1f} | {e['wall_time_s_mean']:.1f} | {e['steps_per_s_mean']:.1f} | "
                     f"{e['steps_mean']:.0f} | {e['completed']}/{len(e['seeds'])} |")
    lines += ["", "Mean ± standard deviation over seeds. Train s: time in training steps (the budget); "
              "wall s: with evaluations and frequency snapshots.", ""]
    rows = list(entries[0].get("freq_steps", {}))
    if rows:
        lines += ["## Step at which Delta_F first fell below 0.1 (median over seeds)", "",
                  "| model | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
        for e in entries:
            cells = ("—" if e["freq_steps"][r] is None else str(e["freq_steps"][r]) for r in rows)
            lines.append(f"| {e['model']} | " + " | ".join(cells) + " |")
        lines += ["", "—: not reached by more than half of the seeds."]
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    lines += ["", "## Figures", "", *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(lines)


def waves_markdown(records: list[dict], limit: int = 12) -> str:
    """The waves each adaptive run placed (:func:`mscalednn.adapt.wave_report`), at most
    ``limit`` per run (the largest in u*): where they were placed, how far from the exact
    solution's wave vector before and after training, and the amplitudes."""
    lines = []
    for r in records:
        if not r.get("waves"):
            continue
        lines += ["", f"## Waves placed by {r['model']}, seed {r['seed']} ({len(r['waves'])} in all)", "",
                  "| step | \\|k_exact\\| | error as placed | error trained | amplitude of u* | amplitude of the unit |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {w['step']} | {w['norm_k_exact']:.2f} | {w['error_placed']:.1e} | {w['error_trained']:.1e} | "
                  f"{w['amplitude_exact']:.2e} | {w['amplitude_network']:.2e} |" for w in r["waves"][:limit]]
        lines += ["", "Error: |k - k_exact| / |k_exact|, k_exact from the plane-wave least-squares fit of u* minus "
                  "the rest of the network, started at the units' trained wave vectors."]
    return "\n".join(lines) + ("\n" if lines else "")


def _job(problem_file: str, contender: Contender, seed: int, out: Path, directions: str, threads: int) -> dict:
    """One run in a worker process: the problem is read again from its file (a parsed expression
    is not sent between processes), torch gets ``threads`` threads."""
    import torch
    torch.set_num_threads(threads)
    problem, _ = load_problem(problem_file)
    reference = None if problem.has_solution else Reference.load(out.parent.parent)  # the compare's, if here
    return run_contender(problem if reference is None else problem.with_reference(reference), contender, seed, out,
                         directions)


def _remote_job(problem_name: str, problem_text: str, contender: Contender, seed: int, directions: str,
                threads: int) -> dict[str, bytes]:
    """One run as a Ray task, on any machine of the cluster: the problem file is re-created from
    its text in a temporary directory, and the run's files come back as bytes."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        problem_file = Path(tmp) / problem_name
        problem_file.write_text(problem_text)
        _job(str(problem_file), contender, seed, Path(tmp) / "run", directions, threads)
        return {p.name: p.read_bytes() for p in (Path(tmp) / "run").iterdir()}


def connect_ray(address: str):
    """The ray module, connected: to the instance this process already started, else to
    ``address`` (``auto``: the cluster this machine belongs to; ``ray://host:port``; ``local``: a
    new instance on this machine)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray", "expected the optional package ray (pip install 'mscalednn[ray]')",
                          address) from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, log_to_driver=False)
    return ray


def _run_on_ray(address: str, todo: list, problem_file: str, directions: str, run_dir, report, log) -> None:
    """Every (seed, contender) of ``todo`` as a Ray task; each finished run's files are written
    under ``run_dir(contender, seed)`` as it comes back (run.json last: it marks a finished run)."""
    ray = connect_ray(address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cpus // len(todo))
    log(f"{len(todo)} runs on Ray ({cpus} CPUs), {threads} torch thread(s) each")
    task = ray.remote(num_cpus=threads)(_remote_job)
    text = Path(problem_file).read_text()
    pending = {task.remote(Path(problem_file).name, text, c, seed, directions, threads): (seed, c) for seed, c in todo}
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        seed, c = pending.pop(ready)
        files, folder = ray.get(ready), run_dir(c, seed)
        folder.mkdir(parents=True, exist_ok=False)
        for name in sorted(files, key=lambda n: n == "run.json"):
            write_atomic(folder / name, files[name])
        report(json.loads(files["run.json"]))


def finished_runs(out: Path) -> dict[tuple[str, int], dict]:
    """The records of the runs under ``out/runs`` that finished (their run.json was written),
    by (model, seed); a run directory without one (a run stopped while writing) is removed."""
    done = {}
    for run_dir in sorted((out / "runs").glob("*")):
        record_file = run_dir / "run.json"
        if record_file.is_file():
            record = json.loads(record_file.read_text())
            done[(record["model"], record["seed"])] = record
        elif run_dir.is_dir():
            shutil.rmtree(run_dir)
    return done


def resumable_runs(out: Path, contenders: list[Contender]) -> dict[tuple[str, int], dict]:
    """The finished runs under ``out``, or a ConfigError where they are of other models than
    ``contenders`` (a resume must repeat the stopped compare's models)."""
    done = finished_runs(out)
    unknown = sorted({name for name, _ in done} - {c.name for c in contenders})
    if unknown:
        raise ConfigError("--resume", "expected the runs of the same models as the compare being resumed",
                          f"runs of {', '.join(unknown)} in {out}")
    return done


def compare(problem: PoissonProblem, contenders: list[Contender], seeds: list[int], out: Path,
            budget: str, notes: list[str] = (), directions: str = "axes", log=print, jobs: int = 1,
            problem_file: str | None = None, ray: str | None = None) -> dict:
    """Run every contender with every seed (those with a finished run under ``out`` are not run
    again), in ``jobs`` worker processes if more than 1, or as tasks of the Ray cluster at
    ``ray`` (both read the problem from ``problem_file``), then write summary.json, summary.md
    and the plots into ``out``; returns the summary."""
    plan = [(seed, c) for seed in seeds for c in contenders]
    done = resumable_runs(out, contenders)
    todo = [(seed, c) for seed, c in plan if (c.name, seed) not in done]
    if done:
        log(f"resuming: {len(plan) - len(todo)} of {len(plan)} runs finished, {len(todo)} to run")

    def report(r: dict) -> None:
        log(f"    {r['model']}, seed {r['seed']}: {r['status']}: rel L2 "
            f"{r['rel_l2'] if r['rel_l2'] is None else format(r['rel_l2'], '.3e')} after {r['steps']} steps, "
            f"{r['train_time_s']:.1f} s of training")

    def run_dir(c: Contender, seed: int) -> Path:
        return out / "runs" / f"{c.name}-seed{seed}"

    if (jobs > 1 or ray is not None) and todo and problem_file is None:
        raise ValueError("compare with jobs > 1 or ray needs the problem's file (workers read it)")
    if ray is not None and todo:
        _run_on_ray(ray, todo, problem_file, directions, run_dir, report, log)
    elif jobs <= 1 or len(todo) <= 1:
        for i, (seed, c) in enumerate(todo):
            log(f"[{i + 1}/{len(todo)}] {c.name}, seed {seed}")
            report(run_contender(problem, c, seed, run_dir(c, seed), directions))
    else:
        workers = min(jobs, len(todo))
        threads = max(1, (os.cpu_count() or 1) // workers)
        log(f"{len(todo)} runs in {workers} processes, {threads} torch thread(s) each")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_job, problem_file, c, seed, run_dir(c, seed), directions, threads)
                       for seed, c in todo]
            for future in as_completed(futures):
                report(future.result())
    done = finished_runs(out)  # every record as written to run.json, fresh or resumed alike
    records = [done[(c.name, seed)] for seed, c in plan]  # the sequential order, whatever ran first
    return write_report(problem, contenders, records, out, budget, notes)


def write_report(problem: PoissonProblem, contenders: list[Contender], records: list[dict], out: Path,
                 budget: str, notes: list[str] = ()) -> dict:
    """summary.json, summary.md and the plots from the runs' records (``runs/*/run.json``)."""
    from .plots import plot_compare_errors, plot_filter_curves, plot_frequency_heatmaps, plot_waves

    primary = primary_measurement(problem)
    entries = summarize(contenders, records, primary)
    sentence = verdict(problem, entries, budget)
    figures = ["errors.png"]
    plot_compare_errors(records, out / "errors.png")
    for name in records[0]["frequency"]["measurements"]:
        target = out / f"{name}.png"
        drawn = (plot_filter_curves(records, target) if name == "filter"
                 else plot_frequency_heatmaps(records, name, target))
        if drawn:
            figures.append(target.name)
    adaptive = [r for r in records if r.get("waves")]
    if adaptive:
        plot_waves(adaptive[0]["waves"], out / "waves.png")
        figures.append("waves.png")
    summary = {"problem": problem.name, "dim": problem.dim, "budget": budget,
               "seeds": sorted({r["seed"] for r in records}),
               "primary_measurement": primary, "verdict": sentence, "notes": list(notes), "models": entries,
               "figures": figures}
    write_json(out / "summary.json", summary)
    write_atomic(out / "summary.md", report_markdown(problem, entries, sentence, budget, list(notes), figures)
                 + waves_markdown(records))
    return summary


def describe_budget(run: RunConfig) -> str:
    t = run.train
    if t.time_limit is not None and t.steps >= 10 ** 8:
        return f"{t.time_limit:g} s of training per run"
    return f"{t.steps} steps" + (f" or {t.time_limit:g} s of training" if t.time_limit else "") + " per run"
