"""``lfp``: the linear F-Principle (docs/method.md section 5).

A wide two-layer ReLU network f(x) = (1/sqrt m) sum_j a_j relu(w_j x + b_j), trained by full-
batch gradient descent from an antisymmetric initialisation (f = 0 at the start), ends near the
LFP prediction: the minimiser of  int gamma(xi)^-2 |h_hat(xi)|^2 dxi  with h(x_i) = y_i, where
gamma(xi)^2 = A / xi^4 + B / xi^2,  A = E[r^3] / (16 pi^4),  B = E[a^2 r] / (4 pi^2),  r = |w|.

In 1D that minimiser is the interpolant  h(x) = sum_i c_i K(x - x_i) + alpha + beta x  with the
kernel whose Fourier transform is gamma^2,
    K(x) = E[r^3] / 12 |x|^3 - E[a^2 r] / 2 |x|
(F[|x|^3] = 3 / (4 pi^4 xi^4), F[|x|] = -1 / (2 pi^2 xi^2)), and sum c_i = sum c_i x_i = 0.
When E[r^2] >> E[a^2] the |x|^3 term dominates: the natural cubic spline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.interpolate import CubicSpline  # noqa: E402
from torch import nn  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..outputs import save_figure  # noqa: E402
from ..validate import Length, Range, Seed  # noqa: E402
from .fit import fit  # noqa: E402

Positive = Annotated[float, Range(0.0, lo_open=True)]


@dataclass(frozen=True)
class LFP:
    """The authors' demo: 5 points, width 10^4, w, b ~ U(-3, 3), a ~ U(-0.1, 0.1)."""

    x: Annotated[tuple[float, ...], Length(3)] = (-0.8, -0.6, -0.3, -0.06, 0.1)
    y: tuple[float, ...] = (0.25, -0.25, -0.07, 0.15, -0.05)
    width: Annotated[int, Range(2)] = 10000
    w_range: Positive = 3.0
    a_range: Positive = 0.1
    steps: Annotated[int, Range(1)] = 100000
    lr_factor: Annotated[float, Range(0.0, 2.0, lo_open=True)] = 1.8   # lr = lr_factor x half the stable step
    tolerance: Positive = 0.1
    seed: Seed = 0

    def __post_init__(self):
        if len(self.y) != len(self.x):
            raise ConfigError("y", f"expected a list of {len(self.x)} numbers (one per x)", list(self.y))
        if len(set(self.x)) != len(self.x):
            raise ConfigError("x", "expected distinct numbers", list(self.x))


QUICK_LFP = {"width": 4000, "steps": 30000}


class TwoLayerReLU(nn.Module):
    """f(x) = (1/sqrt m) sum_j a_j relu(w_j x + b_j), initialised antisymmetrically: units
    m/2 + j copy w_j, b_j of unit j with -a_j, so f = 0 at the start."""

    def __init__(self, width: int, w_range: float, a_range: float, generator: torch.Generator):
        super().__init__()
        half = width // 2
        w = (torch.rand(half, generator=generator, dtype=torch.float64) * 2 - 1) * w_range
        b = (torch.rand(half, generator=generator, dtype=torch.float64) * 2 - 1) * w_range
        a = (torch.rand(half, generator=generator, dtype=torch.float64) * 2 - 1) * a_range
        self.w, self.b = nn.Parameter(torch.cat([w, w])), nn.Parameter(torch.cat([b, b]))
        self.a = nn.Parameter(torch.cat([a, -a]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.w + self.b) @ self.a[:, None] / math.sqrt(self.a.numel())


def lfp_interpolant(x: np.ndarray, y: np.ndarray, er3: float, ea2r: float):
    """The LFP prediction as a function (see the module docstring)."""
    def kernel(z):
        return er3 / 12 * np.abs(z) ** 3 - ea2r / 2 * np.abs(z)

    n = len(x)
    P = np.stack([np.ones(n), x], axis=1)
    system = np.block([[kernel(x[:, None] - x[None, :]), P], [P.T, np.zeros((2, 2))]])
    coef = np.linalg.solve(system, np.concatenate([y, [0.0, 0.0]]))
    c, (alpha, beta) = coef[:n], coef[n:]
    return lambda t: kernel(np.asarray(t)[:, None] - x[None, :]) @ c + alpha + beta * np.asarray(t)


def _ntk_largest_eigenvalue(model: nn.Module, x: torch.Tensor) -> float:
    rows = []
    for xi in x:
        model.zero_grad()
        model(xi[None, None])[0, 0].backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    J = torch.stack(rows)
    return float(torch.linalg.eigvalsh(J @ J.T).max())


def train_lfp(s: LFP, width: int, progress: bool = True):
    """Train a network of ``width`` units to interpolate the data; returns it, the final
    training loss and the empirical E[r^3], E[a^2 r] of its initial units."""
    x, y = np.asarray(s.x), np.asarray(s.y)
    model = TwoLayerReLU(width, s.w_range, s.a_range, torch.Generator().manual_seed(s.seed))
    xt, yt = torch.as_tensor(x)[:, None], torch.as_tensor(y)[:, None]
    # MSE = (1/n) sum (f - y)^2: gradient descent is stable for lr < n / lambda_max(J J^T)
    lr = s.lr_factor * len(x) / _ntk_largest_eigenvalue(model, xt) / 2
    r = model.w.detach().abs().numpy()
    er3, ea2r = float(np.mean(r ** 3)), float(np.mean(model.a.detach().numpy() ** 2 * r))
    log = fit(model, xt, yt, s.steps, lr, every=max(1, s.steps // 100), optimizer="sgd", progress=progress,
              desc=f"lfp m={width}")
    return model, log[-1][1], er3, ea2r


def run_lfp(s: LFP, out: Path, progress: bool = True) -> dict:
    """Train at width m/4 and m; compare each with the LFP prediction. The check: the distance
    at width m is under the tolerance. The network's kernel is an average over m random units,
    so part of the distance should shrink like m^-1/2; the measured exponent between m/4 and m
    is reported (it is noisy between seeds, see benchmarks/RESULTS.md)."""
    if len(s.x) != len(s.y) or len(s.x) < 3:
        raise ValueError("lfp: x and y must be lists of the same length, at least 3")
    x, y = np.asarray(s.x), np.asarray(s.y)
    grid = np.linspace(x.min(), x.max(), 1001)
    wide = np.linspace(x.min() - 0.3, x.max() + 0.3, 1001)
    order = np.argsort(x)
    spline = CubicSpline(x[order], y[order], bc_type="natural")
    span = float(y.max() - y.min())
    fig, ax = plt.subplots(figsize=(7, 4.2))
    widths, distances, losses = [max(2, s.width // 4), s.width], [], []
    for width, style in zip(widths, ("m:", "r-")):
        model, loss, er3, ea2r = train_lfp(s, width, progress)
        lfp = lfp_interpolant(x, y, er3, ea2r)
        with torch.no_grad():
            net, net_wide = (model(torch.as_tensor(t)[:, None])[:, 0].numpy() for t in (grid, wide))
        distances.append(float(np.abs(net - lfp(grid)).max() / span))
        losses.append(loss)
        ax.plot(wide, net_wide, style, lw=2 if width == s.width else 1.2, label=f"network (m = {width})")
    exponent = math.log(distances[0] / distances[1]) / math.log(widths[1] / widths[0])
    holds = distances[1] < s.tolerance
    ax.plot(wide, lfp(wide), "b--", lw=1.5, label="LFP prediction")
    ax.plot(wide, spline(wide), "g:", lw=1.5, label="natural cubic spline")
    ax.plot(x, y, "ko", label="data")
    ax.set(xlabel="x", title=f"linear F-Principle: max |network - LFP| / data range = {distances[1]:.3f}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "lfp.png", dpi=100)
    to_spline = float(np.abs(net - spline(grid)).max() / span)
    to_linear = float(np.abs(net - np.interp(grid, x[order], y[order])).max() / span)
    verdict = (f"max |network - LFP| / data range = {distances[1]:.4f} at m = {widths[1]} (tolerance "
               f"{s.tolerance:g}), {distances[0]:.4f} at m = {widths[0]} (m^-{exponent:.2f}); "
               f"network vs cubic spline {to_spline:.4f}: " + ("agrees" if holds else "does NOT agree"))
    return {"holds": holds, "verdict": verdict, "relative_distance": distances[1], "widths": widths,
            "relative_distances": distances, "width_exponent": exponent, "relative_distance_spline": to_spline,
            "relative_distance_linear": to_linear,
            "relative_distance_lfp_spline": float(np.abs(lfp(grid) - spline(grid)).max() / span),
            "tolerance": s.tolerance, "final_train_loss": losses[1], "final_train_losses": losses,
            "E_r3": er3, "E_a2r": ea2r, "figures": ["lfp.png"],
            "check": "max |network - LFP prediction| over the data interval / data range is below the "
                     "tolerance at width m"}
