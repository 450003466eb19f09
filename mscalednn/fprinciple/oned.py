"""One-dimensional F-Principle experiments: ``1d`` (a sum of sines, frequency by frequency) and
``noise`` (noisy data: early stopping explained by the spectrum)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from ..nn import MLP
from ..spectral import delta_f, dft, peaks
from ..errors import ConfigError
from ..validate import Length, Range, Seed
from .fit import Activation, fit, initialize
from . import figures

Positive = Annotated[float, Range(0.0, lo_open=True)]
Count = Annotated[int, Range(1)]


@dataclass(frozen=True)
class OneD:
    """``1d``: fit y = sum_i a_i sin(k_i x) on ``points`` even points of [-pi, pi) (full batch).

    Published set-up (docs/method.md section 5): sin x + sin 3x + sin 5x, tanh 200-200-200-100,
    small initialisation, Adam, lr 1e-4..2e-4.
    """

    frequencies: Annotated[tuple[Annotated[int, Range(1)], ...], Length(1)] = (1, 3, 5)
    amplitudes: tuple[float, ...] = (1.0, 1.0, 1.0)
    points: Annotated[int, Range(16)] = 256
    widths: tuple[Count, ...] = (200, 200, 200, 100)
    activation: Activation = "tanh"
    init_scale: Positive = 1.0
    lr: Positive = 2e-4
    steps: Count = 2000
    record_every: Count = 10
    frames: Annotated[int, Range(2)] = 40
    threshold: Positive = 0.1
    seed: Seed = 0

    def __post_init__(self):
        if len(self.amplitudes) != len(self.frequencies):
            raise ConfigError("amplitudes", f"expected a list of {len(self.frequencies)} numbers (one per "
                              "frequency)", list(self.amplitudes))


QUICK_1D = {"steps": 1200}


def sum_of_sines(x: np.ndarray, frequencies, amplitudes) -> np.ndarray:
    return sum(a * np.sin(k * x) for k, a in zip(frequencies, amplitudes))


def train_1d(s: OneD, progress: bool = True, desc: str = "1d"):
    """Train on the sum of sines; returns (x, y, peaks, steps, Delta_F [snapshots, peaks],
    network outputs at the GIF frames, frame steps, the trained model)."""
    if len(s.amplitudes) != len(s.frequencies):
        raise ValueError("1d: amplitudes and frequencies must have the same length")
    torch.manual_seed(s.seed)
    x = -math.pi + 2 * math.pi * np.arange(s.points) / s.points
    y = sum_of_sines(x, s.frequencies, s.amplitudes)
    y_hat = dft(y)
    at = peaks(y_hat, rel_height=1e-3)
    model = initialize(MLP(1, width=list(s.widths), activation=s.activation), s.init_scale).double()
    xt, yt = torch.as_tensor(x)[:, None], torch.as_tensor(y)[:, None]
    frame_every = max(1, s.steps // s.frames)
    steps, deltas, frames, frame_steps = [], [], [], []

    def record(step, net, _loss):
        with torch.no_grad():
            h = net(xt)[:, 0].numpy()
        steps.append(step)
        deltas.append(delta_f(dft(h), y_hat, at))
        if step % frame_every == 0 or step == s.steps:
            frames.append(h)
            frame_steps.append(step)

    record(0, model, float("nan"))
    fit(model, xt, yt, s.steps, s.lr, record, every=s.record_every, progress=progress, desc=desc)
    return x, y, at, np.array(steps), np.array(deltas), np.array(frames), frame_steps, model


def first_below(steps: np.ndarray, values: np.ndarray, threshold: float) -> list[int | None]:
    """Per column of ``values`` [snapshots, rows]: the first step with a value below threshold."""
    out = []
    for column in values.T:
        hit = np.flatnonzero(column < threshold)
        out.append(int(steps[hit[0]]) if hit.size else None)
    return out


def in_order(steps_to_converge: list[int | None]) -> bool:
    """Lower frequencies converged no later than higher ones, and all converged."""
    return all(s is not None for s in steps_to_converge) and steps_to_converge == sorted(steps_to_converge)


def low_first(steps_to_converge: list[int | None]) -> bool:
    """The lowest frequency converged, and the converged ones are the lowest few, in order (no
    frequency converged while a lower one had not)."""
    reached = [s for s in steps_to_converge if s is not None]
    return bool(reached) and steps_to_converge[:len(reached)] == sorted(reached)


def run_1d(s: OneD, out: Path, progress: bool = True) -> dict:
    x, y, at, steps, deltas, frames, frame_steps, _ = train_1d(s, progress)
    converge = first_below(steps, deltas, s.threshold)
    rows = [f"k={k}" for k in at]
    figures.heatmap(steps, deltas.T, rows, out / "heatmap.png",
                    f"Delta_F at the DFT peaks of {' + '.join(f'sin {k}x' for k in s.frequencies)}")
    figures.curves(steps, deltas.T, rows, out / "curves.png", s.threshold)
    figures.fit_animation(x, y, frames, frame_steps, out / "fit.gif")
    ordered = in_order(converge)
    verdict = (f"peaks {[int(k) for k in at]} reached Delta_F < {s.threshold:g} at steps {converge}: "
               + ("in order of frequency" if ordered else "NOT in order of frequency"))
    return {"peaks": [int(k) for k in at], "steps_to_converge": converge, "ordered": ordered,
            "holds": ordered, "verdict": verdict,
            "threshold": s.threshold,
            "delta_f": {"steps": steps.tolist(), "values": deltas.tolist()},
            "figures": ["heatmap.png", "curves.png", "fit.gif"],
            "check": "each DFT peak's Delta_F falls below the threshold, lowest frequency first"}


@dataclass(frozen=True)
class Noise:
    """``noise``: fit y = sin x + sigma N(0, 1) on ``points`` random points of [-10, 10]; the
    test set is as many other points with their own noise. Published: 100 points, sigma 0.2."""

    points: Count = 100
    sigma: Annotated[float, Range(0.0)] = 0.2
    widths: tuple[Count, ...] = (200, 200, 200, 100)
    activation: Activation = "tanh"
    init_scale: Positive = 1.0
    lr: Positive = 5e-4
    steps: Count = 20000
    record_every: Count = 20
    cutoff: Positive = 2.0      # "high frequency": above this many radians per unit length
    seed: Seed = 0


QUICK_NOISE = {"steps": 6000}


def high_frequency_share(h: np.ndarray, dx: float, cutoff: float) -> float:
    """The share of the energy of h (on a uniform grid, spacing dx) above ``cutoff`` radians per
    unit length (mean removed)."""
    spectrum = np.abs(np.fft.rfft(h - h.mean())) ** 2
    omega = 2 * np.pi * np.fft.rfftfreq(len(h), dx)
    return float(spectrum[omega > cutoff].sum() / spectrum.sum())


def run_noise(s: Noise, out: Path, progress: bool = True) -> dict:
    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    x_train, x_test = rng.uniform(-10, 10, s.points), rng.uniform(-10, 10, s.points)
    y_train = np.sin(x_train) + s.sigma * rng.standard_normal(s.points)
    y_test = np.sin(x_test) + s.sigma * rng.standard_normal(s.points)
    grid = np.linspace(-10, 10, 2048, endpoint=False)
    model = initialize(MLP(1, width=list(s.widths), activation=s.activation), s.init_scale).double()
    xt, yt = torch.as_tensor(x_train)[:, None], torch.as_tensor(y_train)[:, None]
    xs, ys = torch.as_tensor(x_test)[:, None], torch.as_tensor(y_test)
    xg = torch.as_tensor(grid)[:, None]
    steps, test_loss, train_loss = [], [], []
    best = {"loss": math.inf}

    def record(step, net, loss):
        with torch.no_grad():
            value = float(((net(xs)[:, 0] - ys) ** 2).mean())
        steps.append(step)
        test_loss.append(value)
        train_loss.append(loss)
        if value < best["loss"]:
            with torch.no_grad():
                best.update(loss=value, step=step, h=net(xg)[:, 0].numpy())

    fit(model, xt, yt, s.steps, s.lr, record, every=s.record_every, progress=progress, desc="noise")
    with torch.no_grad():
        final = model(xg)[:, 0].numpy()
    dx = grid[1] - grid[0]
    share_best = high_frequency_share(best["h"], dx, s.cutoff)
    share_end = high_frequency_share(final, dx, s.cutoff)
    figures.noise_figure(steps, train_loss, test_loss, best["step"], grid, best["h"], final,
                         x_train, y_train, s.cutoff, out / "noise.png")
    holds = best["step"] < steps[-1] and share_best < share_end
    verdict = (f"best test loss at step {best['step']} of {steps[-1]}; energy above the cut-off {share_best:.3f} there "
               f"vs {share_end:.3f} at the end: " + ("holds" if holds else "does NOT hold"))
    return {"holds": holds, "verdict": verdict,
            "steps": steps, "test_loss": test_loss, "train_loss": train_loss, "best_step": best["step"],
            "best_test_loss": best["loss"], "final_test_loss": test_loss[-1],
            "high_frequency_share_best": share_best, "high_frequency_share_end": share_end,
            "figures": ["noise.png"],
            "check": "the test loss is lowest before the end, and the network there has less energy above "
                     f"{s.cutoff:g} rad per unit length than at the end"}
