"""Plots of a run: loss and error curves, and the solution on a line or a 2D slice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .metrics import predict  # noqa: E402
from .outputs import save_figure  # noqa: E402
from .problem import PoissonProblem  # noqa: E402


def plot_history(history: list[dict], path: Path, absolute: Sequence[str] = ()) -> None:
    """Loss terms (every logged row) and errors (the evaluated rows) against the step, on log
    axes; ``absolute``: the errors that are absolute, not relative (their reference is 0)."""
    logged = [r for r in history if r["step"] > 0]                    # step 0 has no place on a log axis
    evaluated = [r for r in logged if "rel_l2" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss_interior", "loss_boundary"):
        ax1.plot([r["step"] for r in logged], np.abs([r[key] for r in logged]), label=f"|{key}|", lw=1)
    ax1.set(xscale="log", yscale="log", xlabel="step", title="loss terms")
    for key in [k for k in ("rel_l2", "rel_max", "rel_h1") if evaluated and k in evaluated[0]]:
        label = key.replace("rel_", "abs_") if key in absolute else key
        ax2.plot([r["step"] for r in evaluated], [r[key] for r in evaluated], "o-", ms=3, label=label)
    ax2.set(xscale="log", yscale="log", xlabel="step", title="error against the exact solution")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_solution(problem: PoissonProblem, model: torch.nn.Module, path: Path, n: int = 201) -> None:
    """1D: u and u* on the interval. d >= 2: u*, u and |u - u*| on the slice through the
    centre spanned by the first two coordinates."""
    lo, hi = np.asarray(problem.lo), np.asarray(problem.hi)
    centre = (lo + hi) / 2
    if problem.dim == 1:
        x = np.linspace(lo[0], hi[0], 2001)[:, None]
    else:
        a, b = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n), indexing="xy")
        x = np.tile(centre, (a.size, 1))
        x[:, 0], x[:, 1] = a.ravel(), b.ravel()
    exact = problem.u(torch.as_tensor(x, dtype=torch.float64)).numpy()
    label = "exact u*" if problem.has_exact else f"reference u* ({problem.reference_kind})"
    pred = predict(model, x)
    if not problem.is_box:  # blank outside the domain (holes, the corners around a ball)
        outside = ~problem.geometry.contains(x)
        exact, pred = np.where(outside, np.nan, exact), np.where(outside, np.nan, pred)
    if problem.dim == 1:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        ax1.plot(x[:, 0], exact, "k-", lw=2, label=label)
        ax1.plot(x[:, 0], pred, "r--", lw=1.2, label="network u")
        ax1.set(xlabel="x", title=problem.name)
        ax1.legend()
        ax2.semilogy(x[:, 0], np.abs(pred - exact) + 1e-300)
        ax2.set(xlabel="x", title="|u - u*|")
    else:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
        extent = (lo[0], hi[0], lo[1], hi[1])
        vmin, vmax = np.nanmin(exact), np.nanmax(exact)
        for ax, data, title, kw in ((axes[0], exact, label, dict(vmin=vmin, vmax=vmax)),
                                    (axes[1], pred, "network u", dict(vmin=vmin, vmax=vmax)),
                                    (axes[2], np.abs(pred - exact), "|u - u*|", {})):
            im = ax.imshow(data.reshape(n, n), origin="lower", extent=extent, aspect="auto", **kw)
            ax.set(xlabel="x_1", ylabel="x_2", title=title)
            fig.colorbar(im, ax=ax)
        if problem.dim > 2:
            fig.suptitle(f"{problem.name}: slice x_3..x_{problem.dim} = centre of the "
                         f"{'box' if problem.is_box else 'bounding box'}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_waves(rows: list[dict], path: Path) -> None:
    """The adaptive MscaleDNN's placed waves (:func:`mscalednn.adapt.wave_report`): the relative
    distance of each wave vector to the exact solution's, as placed and after training, and the
    amplitude the network holds against the exact one."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    i = np.arange(len(rows))
    ax1.semilogy(i, [r["error_placed"] + 1e-16 for r in rows], "o", label="as placed (estimate)")
    ax1.semilogy(i, [r["error_trained"] + 1e-16 for r in rows], "x", label="after training")
    ax1.set(xlabel="placed wave (by exact amplitude, largest first)", ylabel="|k - k_exact| / |k_exact|",
            title="wave vectors found against the exact solution's")
    a = np.array([[r["amplitude_exact"], r["amplitude_network"]] for r in rows]).reshape(-1, 2) + 1e-16
    ax2.loglog(a[:, 0], a[:, 1], "o")
    if len(rows):
        lim = [a.min() / 2, a.max() * 2]
        ax2.plot(lim, lim, "k:", lw=1, label="equal")
        ax2.legend()
    ax2.set(xlabel="amplitude of u* at k_exact", ylabel="amplitude of the unit", title="amplitudes")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _by_model(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["model"], []).append(r)
    return out


def delta_f_heatmap(ax, steps, values: np.ndarray, rows: list[str], xlabel: str = "step"):
    """Delta_F [rows, snapshots] as a heat map on ``ax``: columns at the given steps, rows low
    to high frequency from the bottom, RdBu with colour range 0.1..1 (red: converged, blue: not yet)."""
    steps = np.asarray(steps, dtype=float)
    edges = np.concatenate([[0.0], (steps[1:] + steps[:-1]) / 2, [steps[-1]]])
    mesh = ax.pcolormesh(edges, np.arange(len(rows) + 1), values, cmap="RdBu", vmin=0.1, vmax=1.0)
    ax.set_yticks(np.arange(len(rows)) + 0.5, rows)
    ax.set_xlabel(xlabel)
    return mesh


def plot_compare_errors(records: list[dict], path: Path) -> None:
    """Relative L2 error (on the frequency sample) against the step and against the training
    time, every model in its colour, one line per seed."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for colour, (model, runs) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4, _by_model(records).items()):
        for i, r in enumerate(runs):
            snaps = r["frequency"]["snapshots"]
            err = [s["rel_l2"] for s in snaps]
            for ax, key in zip(axes, ("step", "train_time_s")):
                ax.plot([s[key] for s in snaps], err, color=colour, alpha=0.9 if i == 0 else 0.45, lw=1.3,
                        label=model if i == 0 else None)
    for ax, xlabel in zip(axes, ("step", "training time (s)")):
        ax.set(yscale="log", xlabel=xlabel, ylabel="relative L2 error")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title("error vs step (one line per seed)")
    axes[1].set_title("error vs training time")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_frequency_heatmaps(records: list[dict], measurement: str, path: Path) -> bool:
    """Delta_F (rows: frequencies low to high, columns: steps) of the first seed of every model,
    side by side; RdBu, colour range 0.1..1 (red: converged). False if there are no rows."""
    runs = [rs[0] for rs in _by_model(records).values()]
    rows = runs[0]["frequency"]["measurements"][measurement]["rows"]
    if not rows:
        return False
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs) + 1.2, 0.32 * len(rows) + 2.2),
                             squeeze=False, sharey=True)
    for ax, r in zip(axes[0], runs):
        snaps = r["frequency"]["snapshots"]
        mesh = delta_f_heatmap(ax, [s["step"] for s in snaps], np.array([s[measurement] for s in snaps]).T, rows)
        ax.set_title(f"{r['model']} (seed {r['seed']})")
    axes[0][0].set_ylabel("frequency (low to high)")
    fig.colorbar(mesh, ax=axes[0].tolist(), label="Delta_F = |h_k - u*_k| / |u*_k|", extend="both")
    fig.suptitle(f"per-frequency error, {measurement} method", y=1.0 + 0.25 / (0.32 * len(rows) + 2.2))
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    return True


def plot_filter_curves(records: list[dict], path: Path) -> bool:
    """e_low and e_high against the step, one panel per model (one line per seed)."""
    grouped = _by_model(records)
    fig, axes = plt.subplots(1, len(grouped), figsize=(4.2 * len(grouped), 3.8), squeeze=False, sharey=True)
    for ax, (model, runs) in zip(axes[0], grouped.items()):
        for i, r in enumerate(runs):
            snaps = r["frequency"]["snapshots"]
            steps = [s["step"] for s in snaps]
            e = np.array([s["filter"] for s in snaps])
            ax.plot(steps, e[:, 0], color="tab:blue", alpha=0.9 if i == 0 else 0.4, label="e_low" if i == 0 else None)
            ax.plot(steps, e[:, 1], color="tab:red", alpha=0.9 if i == 0 else 0.4, label="e_high" if i == 0 else None)
        ax.set(yscale="log", xlabel="step", title=model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    delta = records[0]["frequency"]["measurements"]["filter"]["delta"]
    fig.suptitle(f"filtering method: Gaussian split, delta = {delta:.3g}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return True
