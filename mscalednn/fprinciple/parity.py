"""``parity``: the counter-example. f(x) = prod_j x_j on {-1, 1}^bits is dominated by its
highest frequency, so a network trained on a few points generalises no better than a coin,
while the same network does well on real digits, whose labels are low-frequency dominated."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..errors import ConfigError, MscaleError  # noqa: E402
from ..nn import MLP  # noqa: E402
from ..outputs import save_figure  # noqa: E402
from ..spectral import nudft  # noqa: E402
from ..validate import Range, Seed  # noqa: E402
from .data import load_images  # noqa: E402
from .fit import Activation, fit, initialize  # noqa: E402

Count = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0.0, lo_open=True)]


@dataclass(frozen=True)
class Parity:
    """10-bit parity, 200 random training points, all 2^10 points as the test set; the same
    fully connected network on ``digits`` real MNIST digits (4/5 train, 1/5 test) for contrast."""

    bits: Annotated[int, Range(2, 16)] = 10
    train_points: Count = 200
    widths: tuple[Count, ...] = (500, 500)
    activation: Activation = "relu"
    init_scale: Positive = 1.0
    lr: Positive = 1e-3
    steps: Count = 2000
    digits: Annotated[int, Range(0)] = 5000
    digit_steps: Count = 1500
    batch: Count = 256
    seed: Seed = 0

    def __post_init__(self):
        if self.train_points > 2 ** self.bits:
            raise ConfigError("train_points", f"expected an integer <= 2^bits = {2 ** self.bits} (bits is "
                              f"{self.bits})", self.train_points)


QUICK_PARITY = {"steps": 800, "digits": 2000, "digit_steps": 500}


def _accuracy(scores: torch.Tensor, target: torch.Tensor) -> float:
    if scores.shape[-1] == 1:
        return float((torch.sign(scores[:, 0]) == target).double().mean())
    return float((scores.argmax(-1) == target).double().mean())


def run_parity(s: Parity, out: Path, progress: bool = True, data: str | None = None) -> dict:
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    cube = np.array(list(itertools.product([-1.0, 1.0], repeat=s.bits)))
    target = cube.prod(axis=1)
    if s.train_points > len(cube):
        raise MscaleError(f"parity: train_points must be at most 2^bits = {len(cube)}")
    train = rng.choice(len(cube), s.train_points, replace=False)
    unseen = np.setdiff1d(np.arange(len(cube)), train)
    model = initialize(MLP(s.bits, width=list(s.widths), activation=s.activation), s.init_scale).double()
    x, y = torch.as_tensor(cube), torch.as_tensor(target)
    fit(model, x[train], y[train][:, None], s.steps, s.lr, progress=progress, desc="parity")
    with torch.no_grad():
        h = model(x)
    result = {"train_accuracy": _accuracy(h[train], y[train]), "test_accuracy": _accuracy(h, y),
              "unseen_accuracy": _accuracy(h[unseen], y[unseen])}
    # spectrum along the diagonal p = (1, ..., 1) / sqrt(bits): p.x takes bits + 1 values
    v = cube.sum(axis=1) / (2 * s.bits) + 0.5           # in [0, 1]: (number of +1 bits) / bits
    k = np.arange(0, s.bits + 1) / 2
    spectra = {"target": np.abs(nudft(target, v, k)), "network": np.abs(nudft(h[:, 0].numpy(), v, k))}
    result["diagonal_spectrum"] = {"k": k.tolist(), **{n: a.tolist() for n, a in spectra.items()}}
    try:
        if s.digits == 0:
            raise MscaleError("digits: 0")
        result["mnist"] = _digits(s, data, progress)
    except MscaleError as exc:
        result["mnist"] = None
        result["mnist_skipped"] = str(exc)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(k, spectra["target"], "k-o", label="target (parity)")
    ax.plot(k, spectra["network"], "r-o", label="network")
    ax.set(xlabel="frequency k along the diagonal (cycles across it)", ylabel="|NUDFT|",
           title=f"parity: test accuracy {result['test_accuracy']:.2f} (unseen {result['unseen_accuracy']:.2f})")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "parity.png", dpi=100)
    mnist = result["mnist"]
    result["holds"] = (abs(result["test_accuracy"] - 0.5) < 0.1 and result["unseen_accuracy"] < 0.6
                       and (mnist is None or mnist["test_accuracy"] > 0.8))
    digits = f"MNIST test accuracy {mnist['test_accuracy']:.3f}" if mnist else f"MNIST skipped ({result['mnist_skipped']})"
    result["verdict"] = (f"parity accuracy {result['test_accuracy']:.3f} on all points, "
                         f"{result['unseen_accuracy']:.3f} on unseen ones; {digits}"
                         + (": holds" if result["holds"] else ": does NOT hold"))
    result["figures"] = ["parity.png"]
    result["check"] = ("parity accuracy on all 1024 points within 0.1 of a coin's 0.5 and no better than 0.6 on the "
                       "unseen ones, while the same network's MNIST test accuracy is above 0.8")
    return result


def _digits(s: Parity, data: str | None, progress: bool) -> dict:
    images = load_images(data, limit=s.digits)
    n_train = images.n_train
    x, y = torch.as_tensor(images.x), torch.as_tensor(images.labels)
    model = initialize(MLP(x.shape[1], out_dim=10, width=list(s.widths), activation=s.activation), s.init_scale)
    model = model.double()
    fit(model, x[:n_train], y[:n_train], s.digit_steps, s.lr, batch=s.batch, loss="cross_entropy",
        progress=progress, desc="digits", seed=s.seed)
    with torch.no_grad():
        scores = model(x)
    return {"train_accuracy": _accuracy(scores[:n_train], y[:n_train]),
            "test_accuracy": _accuracy(scores[n_train:], y[n_train:]), "source": images.source,
            "train": n_train, "test": len(images.x) - n_train}
