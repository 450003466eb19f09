"""High-dimensional real data: ``projection`` and ``filter`` (docs/method.md section 5).

A fully connected network and a small CNN learn real digits (one-hot labels, mean squared
error, full batch, as in the papers). Along the inputs' first principal component p, at the
peaks of the labels' non-uniform DFT (or, when fewer than two clear the sampling noise, as on
MNIST, at k = 1/2, 1, 2, 4), Delta_F(k) = ||h_hat(k) - y_hat(k)|| / ||y_hat(k)|| (norms over the
10 outputs) falls at the low frequencies first (``projection``). The Gaussian filter splits labels and
outputs into low and high frequency parts over the inputs; e_low falls before e_high
(``filter``). Both are measured on the training digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from ..nn import MLP
from ..spectral import gaussian_weights, nudft, peaks, principal_direction
from ..validate import Length, Range, Seed
from . import figures
from .data import load_images
from .fit import Activation, fit
from .oned import first_below, low_first

Count = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0.0, lo_open=True)]


@dataclass(frozen=True)
class HighDim:
    """Settings shared by ``projection`` and ``filter``.

    ``delta_factors``: the filter's delta values as multiples of the median squared distance
    between two samples (so the same factors suit MNIST, CIFAR-10 or any scaling of the data).
    ``threshold``: Delta_F level of a converged projection peak; ``filter_threshold``: the level
    e_low and e_high are timed at (0.5: half of the part learned).
    """

    digits: Annotated[int, Range(100)] = 5000
    networks: Annotated[tuple[Literal["fcn", "cnn"], ...], Length(1)] = ("fcn", "cnn")
    fcn_widths: tuple[Count, ...] = (400, 200)
    activation: Activation = "tanh"
    lr: Positive = 1e-3
    steps: Count = 800
    batch: Count | None = None          # None: full batch, as in the papers
    record_every: Count = 25
    peaks: Count = 4
    max_k: Count = 40
    delta_factors: Annotated[tuple[Positive, ...], Length(1)] = (0.05, 0.1, 0.2)
    threshold: Positive = 0.1
    filter_threshold: Positive = 0.5
    seed: Seed = 0


QUICK_HIGHDIM = {"digits": 2000, "steps": 400, "networks": ("fcn",), "record_every": 20}


def small_cnn(shape: tuple[int, int, int], classes: int = 10) -> nn.Module:
    """Two strided 5x5 convolutions (16, 32 channels, ReLU) and a linear read-out."""
    c, h, w = shape
    features = nn.Sequential(nn.Unflatten(1, shape), nn.Conv2d(c, 16, 5, stride=2, padding=2), nn.ReLU(),
                             nn.Conv2d(16, 32, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten())
    size = features(torch.zeros(1, c * h * w)).shape[1]
    return nn.Sequential(features, nn.Linear(size, classes))


def _network(kind: str, s: HighDim, dim: int, shape) -> nn.Module:
    if kind == "fcn":
        return MLP(dim, out_dim=10, width=list(s.fcn_widths), activation=s.activation)
    return small_cnn(shape)


def training_digits(s: HighDim, data: str | None):
    """The images, the training inputs (the first 4/5) and their one-hot labels."""
    images = load_images(data, limit=s.digits)
    return images, images.x[:images.n_train], np.eye(10)[images.labels[:images.n_train]]


def train_highdim(s: HighDim, images, measure, progress: bool = True) -> dict:
    """Train each network on the first 4/5 of the digits; ``measure(outputs [n, 10])`` is
    called on the training digits every ``record_every`` steps. Returns per network: steps,
    measurements, train and test accuracy."""
    n_train = images.n_train
    x = torch.as_tensor(images.x, dtype=torch.float32)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(images.labels), 10).float()
    results = {}
    for kind in s.networks:
        torch.manual_seed(s.seed)
        model = _network(kind, s, x.shape[1], images.shape).float()
        steps, values = [], []

        def record(step, net, _loss):
            with torch.no_grad():
                h = net(x[:n_train]).double().numpy()
            steps.append(step)
            values.append(measure(h))

        record(0, model, 0.0)
        fit(model, x[:n_train], onehot[:n_train], s.steps, s.lr, record, every=s.record_every, batch=s.batch,
            progress=progress, desc=kind, seed=s.seed)
        with torch.no_grad():
            predicted = model(x).argmax(1).numpy()
        correct = predicted == images.labels
        results[kind] = {"steps": steps, "values": np.array(values), "train_accuracy": float(correct[:n_train].mean()),
                         "test_accuracy": float(correct[n_train:].mean())}
    return {"networks": results, "source": images.source}


def run_projection(s: HighDim, out: Path, progress: bool = True, data: str | None = None) -> dict:
    images, x_train, y = training_digits(s, data)
    v = x_train @ principal_direction(x_train)
    t = (v - v.min()) / (v.max() - v.min())                  # [0, 1] along p
    ks = np.arange(2 * s.max_k + 1) / 2

    def spectrum(values: np.ndarray, at=ks) -> np.ndarray:   # [len(at), 10]
        return nudft(values, t, at)

    y_full = spectrum(y)
    amplitude = np.linalg.norm(y_full, axis=1)
    noise = 4 * np.sqrt(((y - y.mean(0)) ** 2).sum(1).mean() / len(y))   # 4x the sampling noise
    at = [i for i in peaks(amplitude, count=s.peaks) if amplitude[i] > noise]
    if len(at) < 2:   # no peaks above the noise (MNIST: the spectrum decays from k = 0): k = 1/2, 1, 2, 4, ...
        at = [i for i in (2 ** np.arange(s.peaks)).astype(int) if i < len(ks) and amplitude[i] > noise]
    at = np.array(at, dtype=int)
    y_hat = y_full[at]

    def measure(h):
        return np.linalg.norm(spectrum(h, ks[at]) - y_hat, axis=1) / np.linalg.norm(y_hat, axis=1)

    trained = train_highdim(s, images, measure, progress)
    rows = [f"k={ks[i]:g}" for i in at]
    result, holds = {"peaks": [float(ks[i]) for i in at], "noise_level": float(noise),
                     "amplitudes": [float(amplitude[i]) for i in at], "source": trained["source"], "networks": {}}, True
    for kind, r in trained["networks"].items():
        converge = first_below(np.array(r["steps"]), r["values"], s.threshold)
        ordered = low_first(converge)
        holds &= ordered
        figures.heatmap(r["steps"], r["values"].T, rows, out / f"projection_{kind}.png",
                        f"{kind.upper()} on {trained['source'].split(' (')[0]}: Delta_F along the first "
                        "principal component")
        result["networks"][kind] = {"steps": r["steps"], "delta_f": r["values"].tolist(), "steps_to_converge": converge,
                                    "ordered": ordered, "train_accuracy": r["train_accuracy"],
                                    "test_accuracy": r["test_accuracy"]}
    summary = "; ".join(f"{k}: peaks reached Delta_F < {s.threshold:g} at {v['steps_to_converge']}"
                        for k, v in result["networks"].items())
    return {**result, "holds": holds, "verdict": summary + (": low first" if holds else ": NOT low first"),
            "figures": [f"projection_{k}.png" for k in s.networks],
            "check": "along the first principal component the lowest peak of the labels converges, and no peak "
                     "before a lower one (every network)"}


def run_filter(s: HighDim, out: Path, progress: bool = True, data: str | None = None) -> dict:
    images, x_train, y = training_digits(s, data)
    sample = np.random.default_rng(s.seed).choice(len(x_train), min(1000, len(x_train)), replace=False)
    sq = (x_train[sample] ** 2).sum(1)
    median = float(np.median(np.maximum(sq[:, None] + sq[None, :] - 2 * x_train[sample] @ x_train[sample].T, 0)))
    deltas = [f * median for f in s.delta_factors]
    kernels = [gaussian_weights(x_train, d, dtype=np.float32) for d in deltas]   # float32, built in blocks
    lows = [W @ y for W in kernels]

    def measure(h):
        out_ = []
        for W, y_low in zip(kernels, lows):
            h_low = W @ h
            out_ += [np.linalg.norm(h_low - y_low) / np.linalg.norm(y_low),
                     np.linalg.norm((h - h_low) - (y - y_low)) / np.linalg.norm(y - y_low)]
        return np.array(out_)

    trained = train_highdim(s, images, measure, progress)
    result, holds = {"deltas": deltas, "delta_factors": list(s.delta_factors), "median_sq_distance": median,
                     "source": trained["source"], "networks": {}}, True
    for kind, r in trained["networks"].items():
        per_delta = {}
        for i, d in enumerate(deltas):
            e_low, e_high = r["values"][:, 2 * i], r["values"][:, 2 * i + 1]
            low_at, high_at = first_below(np.array(r["steps"]), np.stack([e_low, e_high], 1), s.filter_threshold)
            first = low_at is not None and (high_at is None or low_at < high_at)
            holds &= first
            per_delta[f"{d:.4g}"] = {"e_low": e_low.tolist(), "e_high": e_high.tolist(), "low_below_at": low_at,
                                     "high_below_at": high_at, "low_first": first}
        rows = [f"{part}, delta {d:.3g}" for d in deltas for part in ("e_low", "e_high")]
        figures.curves(r["steps"], r["values"].T, rows, out / f"filter_{kind}.png", s.filter_threshold,
                       ylabel="relative error", title=f"{kind.upper()}: low and high frequency parts")
        figures.heatmap(r["steps"], r["values"].T, rows, out / f"filter_{kind}_heatmap.png",
                        f"{kind.upper()}: e_low and e_high per delta")
        result["networks"][kind] = {"steps": r["steps"], "per_delta": per_delta,
                                    "train_accuracy": r["train_accuracy"], "test_accuracy": r["test_accuracy"]}
    summary = "; ".join(f"{k}, delta {d}: e_low < {s.filter_threshold:g} at {v['low_below_at']}, "
                        f"e_high at {v['high_below_at']}"
                        for k, n in result["networks"].items() for d, v in n["per_delta"].items())
    return {**result, "holds": holds, "verdict": summary + (": low first" if holds else ": NOT low first"),
            "figures": [f for k in s.networks for f in (f"filter_{k}.png", f"filter_{k}_heatmap.png")],
            "check": f"for every delta, e_low falls below {s.filter_threshold:g} before e_high does"}
