"""Plots of a run: loss and error curves, and the solution on a line or a 2D slice."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .problem import PoissonProblem  # noqa: E402


def plot_history(history: list[dict], path: Path) -> None:
    """Loss terms and relative errors against the step, on log axes."""
    steps = [r["step"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss_interior", "loss_boundary"):
        ax1.plot(steps, np.abs([r[key] for r in history]), label=f"|{key}|")
    ax1.set(xscale="log", yscale="log", xlabel="step", title="loss terms")
    for key in ("rel_l2", "rel_max", "rel_h1"):
        ax2.plot(steps, [r[key] for r in history], label=key)
    ax2.set(xscale="log", yscale="log", xlabel="step", title="relative error vs exact solution")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def plot_solution(problem: PoissonProblem, model: torch.nn.Module, path: Path, n: int = 201) -> None:
    """1D: u and u* on the interval. d >= 2: u*, u and |u - u*| on the slice through the
    centre spanned by the first two coordinates."""
    p = next(model.parameters())
    lo, hi = np.asarray(problem.lo), np.asarray(problem.hi)
    centre = (lo + hi) / 2
    if problem.dim == 1:
        x = np.linspace(lo[0], hi[0], 2001)[:, None]
    else:
        a, b = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n), indexing="xy")
        x = np.tile(centre, (a.size, 1))
        x[:, 0], x[:, 1] = a.ravel(), b.ravel()
    xt = torch.as_tensor(x, dtype=torch.float64)
    exact = problem.u(xt).numpy()
    pred = model(xt.to(device=p.device, dtype=p.dtype)).squeeze(-1).double().cpu().numpy()
    if problem.dim == 1:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        ax1.plot(x[:, 0], exact, "k-", lw=2, label="exact u*")
        ax1.plot(x[:, 0], pred, "r--", lw=1.2, label="network u")
        ax1.set(xlabel="x", title=problem.name)
        ax1.legend()
        ax2.semilogy(x[:, 0], np.abs(pred - exact) + 1e-300)
        ax2.set(xlabel="x", title="|u - u*|")
    else:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
        extent = (lo[0], hi[0], lo[1], hi[1])
        vmin, vmax = exact.min(), exact.max()
        for ax, data, title, kw in ((axes[0], exact, "exact u*", dict(vmin=vmin, vmax=vmax)),
                                    (axes[1], pred, "network u", dict(vmin=vmin, vmax=vmax)),
                                    (axes[2], np.abs(pred - exact), "|u - u*|", {})):
            im = ax.imshow(data.reshape(n, n), origin="lower", extent=extent, aspect="auto", **kw)
            ax.set(xlabel="x_1", ylabel="x_2", title=title)
            fig.colorbar(im, ax=ax)
        if problem.dim > 2:
            fig.suptitle(f"{problem.name}: slice x_3..x_{problem.dim} = centre of the box")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
