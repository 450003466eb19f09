"""Figures of the F-Principle experiments (PNG and GIF, matplotlib only)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: E402

from ..outputs import save_figure  # noqa: E402
from ..plots import delta_f_heatmap  # noqa: E402


def heatmap(steps, values: np.ndarray, rows: list[str], path: Path, title: str, xlabel: str = "step") -> None:
    """One Delta_F heat map (rows low to high frequency, RdBu, 0.1..1)."""
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 2.3))
    mesh = delta_f_heatmap(ax, steps, values, rows, xlabel)
    ax.set(ylabel="frequency", title=title)
    fig.colorbar(mesh, ax=ax, label="Delta_F", extend="both")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def curves(steps, values: np.ndarray, rows: list[str], path: Path, threshold: float, ylabel: str = "Delta_F",
           xlabel: str = "step", title: str = "") -> None:
    """values [rows, snapshots] against the step, log y, with the threshold drawn."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row, v in zip(rows, values):
        ax.plot(steps, v, label=row)
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"threshold {threshold:g}")
    ax.set(yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def fit_animation(x: np.ndarray, y: np.ndarray, frames: np.ndarray, frame_steps: list[int], path: Path) -> None:
    """GIF: the network against the target (left) and |DFT| of both (right), over training."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    k = np.arange(len(y) // 2 + 1)
    y_hat = np.abs(np.fft.rfft(y)) / len(y)
    kmax = min(len(k), 4 * int(k[np.argmax(y_hat)]) + 12)
    ax1.plot(x, y, "k-", lw=2, label="target")
    (line,) = ax1.plot(x, frames[0], "r-", lw=1.3, label="network")
    ax1.set(xlabel="x", ylim=(1.2 * y.min() - 0.1, 1.2 * y.max() + 0.1))
    ax1.legend(loc="upper right")
    ax2.plot(k[:kmax], y_hat[:kmax], "k-o", ms=3, label="|DFT| target")
    (spec,) = ax2.plot(k[:kmax], np.abs(np.fft.rfft(frames[0]))[:kmax] / len(y), "r-o", ms=3, label="|DFT| network")
    ax2.set(xlabel="frequency k", ylim=(0, 1.15 * y_hat.max()))
    ax2.legend(loc="upper right")
    title = fig.suptitle("")

    def draw(i):
        line.set_ydata(frames[i])
        spec.set_ydata(np.abs(np.fft.rfft(frames[i]))[:kmax] / len(y))
        title.set_text(f"step {frame_steps[i]}")
        return line, spec, title

    tmp = Path(path).with_name(f".{Path(path).stem}.tmp.gif")  # written whole, then renamed (atomic)
    FuncAnimation(fig, draw, frames=len(frames), blit=False).save(tmp, writer=PillowWriter(fps=6), dpi=70)
    plt.close(fig)
    os.replace(tmp, path)


def noise_figure(steps, train_loss, test_loss, best_step, grid, h_best, h_end, x_train, y_train, cutoff,
                 path: Path) -> None:
    """Losses with the test minimum marked; the fits and the spectra at the best step and the end."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(steps, train_loss, label="training loss")
    axes[0].plot(steps, test_loss, label="test loss")
    axes[0].axvline(best_step, color="k", ls="--", lw=0.8, label=f"test minimum (step {best_step})")
    axes[0].set(yscale="log", xlabel="step", title="losses")
    axes[0].legend()
    axes[1].plot(x_train, y_train, "k.", ms=4, label="data")
    axes[1].plot(grid, h_best, label=f"network at step {best_step}")
    axes[1].plot(grid, h_end, label="network at the end", alpha=0.8)
    axes[1].set(xlabel="x", title="fits")
    axes[1].legend()
    omega = 2 * np.pi * np.fft.rfftfreq(len(grid), grid[1] - grid[0])
    for h, label in ((h_best, f"step {best_step}"), (h_end, "end")):
        axes[2].semilogy(omega, np.abs(np.fft.rfft(h - h.mean())) / len(h) + 1e-12, label=label)
    axes[2].axvline(cutoff, color="k", ls="--", lw=0.8, label=f"cut-off {cutoff:g}")
    axes[2].set(xlabel="frequency (rad per unit length)", xlim=(0, 30), title="|DFT| of the network")
    axes[2].legend()
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
