"""The F-Principle experiments (docs/method.md section 5), one command each:
``mscale fprinciple EXPERIMENT``.

Every experiment is a frozen settings dataclass (its defaults are the published set-up and
equal ``configs/fprinciple/EXPERIMENT.yaml``), a dict of ``--quick`` overrides, and a function
``run(settings, out, progress) -> results`` that writes its figures into ``out`` and returns the
numbers that ``results.json`` records, including the experiment's quantitative check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import apply_overrides, read_yaml
from ..errors import ConfigError
from ..validate import build_dataclass
from .highdim import QUICK_HIGHDIM, HighDim, run_filter, run_projection
from .image import QUICK_IMAGE, ImageFit, run_image
from .init import QUICK_INIT, Init, run_init
from .lfp import LFP, QUICK_LFP, run_lfp
from .oned import QUICK_1D, QUICK_NOISE, Noise, OneD, run_1d, run_noise
from .parity import QUICK_PARITY, Parity, run_parity


@dataclass(frozen=True)
class Experiment:
    settings: type
    quick: dict
    run: Callable
    summary: str
    needs_data: bool = False


EXPERIMENTS = {
    "1d": Experiment(OneD, QUICK_1D, run_1d, "sin x + sin 3x + sin 5x: Delta_F at each peak over training"),
    "image": Experiment(ImageFit, QUICK_IMAGE, run_image, "a gray photo, (x, y) -> intensity: coarse features first"),
    "noise": Experiment(Noise, QUICK_NOISE, run_noise, "sin x + noise: the test-loss minimum and the spectrum there"),
    "projection": Experiment(HighDim, QUICK_HIGHDIM, run_projection, "MNIST: Delta_F along the first principal "
                             "component", needs_data=True),
    "filter": Experiment(HighDim, QUICK_HIGHDIM, run_filter, "MNIST: e_low and e_high of the Gaussian split",
                         needs_data=True),
    "lfp": Experiment(LFP, QUICK_LFP, run_lfp, "wide two-layer ReLU net against the linear F-Principle prediction"),
    "parity": Experiment(Parity, QUICK_PARITY, run_parity, "10-bit parity: a high-frequency target, coin-flip "
                         "generalisation", needs_data=True),
    "init": Experiment(Init, QUICK_INIT, run_init, "small against large initial weights (1d and image)"),
}

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "fprinciple"


def load_settings(name: str, config: str | Path | None = None, overrides: list[str] = (), quick: bool = False):
    """The validated settings of experiment ``name``: the config file (default: the shipped
    ``configs/fprinciple/NAME.yaml`` if present, else the built-in defaults), then ``--quick``,
    then the overrides (``--set key=value``)."""
    experiment = EXPERIMENTS[name]
    path = Path(config) if config is not None else CONFIG_DIR / f"{name}.yaml"
    data = read_yaml(path) if config is not None or path.exists() else {}
    source = str(path) if config is not None or path.exists() else "defaults"
    try:
        quick_items = [f"{k}={list(v) if isinstance(v, tuple) else v}"
                       for k, v in experiment.quick.items()] if quick else []
        return build_dataclass(experiment.settings, apply_overrides(data, [*quick_items, *overrides]), "")
    except ConfigError as exc:
        raise exc.with_source(source) from None


def run_experiment(name: str, settings, out: Path, progress: bool = True, data: str | None = None) -> dict:
    """Run one experiment into the existing directory ``out``; returns results.json's content."""
    experiment = EXPERIMENTS[name]
    start = time.perf_counter()
    kwargs = {"data": data} if experiment.needs_data else {}
    results = experiment.run(settings, out, progress, **kwargs)
    return {"experiment": name, "settings": dataclasses.asdict(settings), **results,
            "wall_time_s": time.perf_counter() - start}


def run_all(out: Path, quick: bool = False, data: str | None = None, image: str | None = None,
            progress: bool = True, log=print) -> dict:
    """Every experiment into ``out/NAME/`` (its results.json and figures), then ``out/index.md``:
    for each, whether its check held, with the numbers. An experiment that cannot run (no
    data) is listed with the reason; the others still run."""
    from ..errors import MscaleError
    from ..outputs import environment, write_atomic, write_json

    lines = ["# F-Principle experiments" + (" (quick)" if quick else ""), "",
             "| experiment | check | held | time (s) |", "|---|---|---|---|"]
    sections, summary = [], {}
    for name, experiment in EXPERIMENTS.items():
        log(f"== {name}: {experiment.summary}")
        target = out / name
        target.mkdir()
        try:
            overrides = [f"image={image}"] if image and "image" in experiment.settings.__dataclass_fields__ else []
            results = run_experiment(name, load_settings(name, None, overrides, quick), target, progress, data)
        except MscaleError as exc:
            log(f"   skipped: {exc}")
            summary[name] = {"skipped": str(exc)}
            lines.append(f"| {name} | skipped: {exc} | - | - |")
            continue
        write_json(target / "results.json", {**results, "versions": environment()})
        summary[name] = {key: results[key] for key in ("holds", "verdict", "wall_time_s")}
        log(f"   {results['verdict']} ({results['wall_time_s']:.1f} s)")
        lines.append(f"| {name} | {results['check']} | {'yes' if results['holds'] else '**no**'} | "
                     f"{results['wall_time_s']:.0f} |")
        sections += [f"## {name}", "", results["verdict"] + ".", "",
                     *[f"![{f}]({name}/{f})" for f in results["figures"]], ""]
    write_atomic(out / "index.md", "\n".join(lines + [""] + sections))
    write_json(out / "summary.json", summary)
    return summary


__all__ = ["EXPERIMENTS", "HighDim", "ImageFit", "Init", "LFP", "Noise", "OneD", "Parity", "load_settings",
           "run_all", "run_experiment"]
