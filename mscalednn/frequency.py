"""Per-frequency convergence of a network towards the exact solution: the F-Principle
measurements of docs/method.md section 4, taken during training.

Three measurements, each a fixed set of points and a map from the network's values there to
one number per row:

* :class:`GridSpectrum` (d = 1, 2): the DFT on a uniform periodic grid of the box; rows are the
  peaks of |DFT(u*)|, values Delta_F(k) = |h_k - u*_k| / |u*_k|.
* :class:`Projection` (any d): the non-uniform DFT along unit directions p (coordinate axes, or
  the direction along which u* varies most); rows are the peaks along each direction.
* :class:`Filter` (any d): the Gaussian low/high split on a fixed sample; rows e_low, e_high.

Rows are labelled by k, the cycles across the box (along p: across the box's extent p . x); the
``freqs`` lists give the same frequencies in cycles per unit length. Spectra are taken of the
function minus the mean of u*, times a Hann window across the box: the solution of a boundary
value problem is not periodic, and without the window the leakage of its smooth part buries the
smaller peaks. (A constant offset of the network is therefore seen, at the lowest peaks.) The
mean is a row of its own ("mean") when it is a sizeable part of u*.

:class:`FrequencyMonitor` is a training hook that takes snapshots at steps k, 2k, 3k, ...; when
2 * ``max_columns`` are stored it keeps every other one and doubles k, so a run of at least
``max_columns`` steps ends with ``max_columns`` to 2 * ``max_columns`` - 1 evenly spaced columns
(plus the final step). The step at which each row
first falls below ``threshold`` is tracked at every snapshot taken.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

from .metrics import predict, relative_errors
from .problem import PoissonProblem
from .sampling import MONITOR, stream
from .spectral import by_height, delta_f, filter_errors, gaussian_weights, nudft, peaks, peaks_nd, principal_direction
from .wavefinder import find_waves

MEAN_ROW_SHARE = 0.1  # the mean gets a row when |mean u*| > this times the rms of u* - mean


def _exact(problem: PoissonProblem, x: np.ndarray) -> np.ndarray:
    return problem.u(torch.as_tensor(x, dtype=torch.float64)).detach().numpy()


def _mean_row(y: np.ndarray) -> bool:
    return abs(y.mean()) > MEAN_ROW_SHARE * np.sqrt(np.mean((y - y.mean()) ** 2))


def _mean_delta(h: np.ndarray, y_mean: float) -> float:
    return abs(h.mean() - y_mean) / abs(y_mean)


class GridSpectrum:
    """Delta_F at the peaks of the windowed DFT of u* on an n^d periodic grid (d = 1 or 2).

    In 2D the spectrum of a real function is symmetric (k and -k), so only peaks with k_2 > 0, or
    k_2 = 0 and k_1 > 0, are rows; they are ordered by |k|, then by k (lexicographically), never by
    rounding noise.
    """

    name = "grid"

    def __init__(self, problem: PoissonProblem, n: int | None = None, count: int = 8, rel_height: float = 1e-2):
        d = problem.dim
        if d > 2:
            raise ValueError("GridSpectrum is for d = 1 or 2; use Projection in higher dimension")
        n = n or (1024 if d == 1 else 128)
        lo, hi = np.asarray(problem.lo), np.asarray(problem.hi)
        grids = np.meshgrid(*[lo[i] + (hi[i] - lo[i]) * np.arange(n) / n for i in range(d)], indexing="ij")
        self.x = np.stack([g.ravel() for g in grids], axis=1)
        hann = np.sin(np.pi * np.arange(n) / n) ** 2
        self.window = hann if d == 1 else np.outer(hann, hann)
        y = _exact(problem, self.x)
        self.shift = float(y.mean())                             # the mean of u*, for u* and for h
        spectrum = np.abs(self._spectrum(y))
        spectrum[(n // 2,) * d] = 0.0                              # the zero frequency (after fftshift)
        k = peaks_nd(spectrum, count=None, rel_height=rel_height) - n // 2
        k = k[(k[:, -1] > 0) | ((k[:, -1] == 0) & (k[:, 0] > 0))] if d == 2 else k[k[:, 0] > 0]
        k = k[by_height(spectrum[tuple((k + n // 2).T)])[:count]]   # the largest (ties: index order)
        k = k[np.lexsort((*k.T[::-1], (k * k).sum(axis=1)))]          # by |k|, then by k
        self.index = tuple((k + n // 2).T)
        self.freqs = [float(np.linalg.norm(row / (hi - lo))) for row in k]       # cycles per unit length
        self.rows = [f"k={int(row[0])}" if d == 1 else f"k=({int(row[0])},{int(row[1])})" for row in k]
        self.y_hat = self._spectrum(y)
        self.y_mean = float(y.mean()) if _mean_row(y) else None
        if self.y_mean is not None:
            self.rows, self.freqs = ["mean", *self.rows], [0.0, *self.freqs]

    def _spectrum(self, h: np.ndarray) -> np.ndarray:
        z = (h - self.shift).reshape(self.window.shape) * self.window
        return np.fft.fftshift(np.fft.fftn(z)) / z.size

    def __call__(self, h: np.ndarray) -> np.ndarray:
        values = delta_f(self._spectrum(h), self.y_hat, self.index) if self.index[0].size else np.zeros(0)
        if self.y_mean is not None:
            values = np.concatenate([[_mean_delta(h, self.y_mean)], values])
        return values


class Projection:
    """Delta_F at the peaks of the windowed non-uniform DFT of u* along each direction.

    Args:
        x, y: the sample [n, d] and u* there [n].
        directions: (label, unit vector) pairs.
        lo, hi: the box, to scale each projection p . x to [0, 1] across it.
        count: peaks kept per direction (the largest).
        max_k: highest frequency searched, in cycles across the box (steps of 1/2).
    A peak must also stand 4 noise levels above the sampling noise of a random sample,
    4 * rms / sqrt(n).
    """

    name = "projection"

    def __init__(self, x: np.ndarray, y: np.ndarray, directions: list[tuple[str, np.ndarray]],
                 lo: np.ndarray, hi: np.ndarray, count: int = 4, rel_height: float = 1e-2, max_k: int = 64):
        self.x, self.rows, self.freqs, self._along, self.shift = x, [], [], [], float(y.mean())
        centred = y - self.shift
        for label, p in directions:
            start = np.minimum(p * lo, p * hi).sum()
            extent = (np.abs(p) * (hi - lo)).sum()
            s = (x @ p - start) / extent                            # in [0, 1] across the box
            window = np.sin(np.pi * s) ** 2
            ks = np.arange(2 * max_k + 1) / 2
            spectrum = nudft(centred * window, s, ks)
            noise = 4 * np.sqrt(np.mean((centred * window) ** 2) / len(y))
            found = [i for i in peaks(spectrum, count=count, rel_height=rel_height) if abs(spectrum[i]) > noise]
            for i in found:
                self.rows.append(f"{label}: k={ks[i]:g}")
                self.freqs.append(float(ks[i] / extent))           # cycles per unit length
            self._along.append((s, window, ks[found], spectrum[found]))
        self.y_mean = float(y.mean()) if _mean_row(y) else None
        if self.y_mean is not None:
            self.rows, self.freqs = ["mean", *self.rows], [0.0, *self.freqs]

    def __call__(self, h: np.ndarray) -> np.ndarray:
        centred = h - self.shift
        values = [np.abs(nudft(centred * w, s, ks) - y_hat) / np.abs(y_hat)
                  for s, w, ks, y_hat in self._along if len(ks)]
        if self.y_mean is not None:
            values.insert(0, [_mean_delta(h, self.y_mean)])
        return np.concatenate(values) if values else np.zeros(0)


class Filter:
    """e_low and e_high of the Gaussian split with variance ``delta`` on the sample x [n, d].

    Taken of the mean-free parts (u* - mean u*, h - mean u*), so that a large constant in u*
    does not hide the error of the low part. The normalised kernel is built once, in row blocks
    (n^2 floats: 32 MB for the default 2,000 points), and reused at every snapshot.
    """

    name = "filter"
    rows = ["e_low", "e_high"]

    def __init__(self, x: np.ndarray, y: np.ndarray, delta: float):
        self.x, self.y, self.delta, self.shift = x, y - y.mean(), delta, y.mean()
        self.weights = gaussian_weights(x, delta)

    def __call__(self, h: np.ndarray) -> np.ndarray:
        return np.array(filter_errors(self.x, self.y, h - self.shift, self.delta, weights=self.weights))


def filter_delta(x: np.ndarray, freqs: list[float]) -> float:
    """The Gaussian's variance: it passes half the amplitude (its transfer function is
    exp(-2 pi^2 delta k^2)) at k_c = sqrt(f_low f_high) cycles per unit length, between the lowest
    and the highest positive peak frequency (delta = ln 2 / (2 pi^2 k_c^2)); with one positive
    peak, at half its frequency (the peak is then the high part, smoother content the low part);
    but delta is at least the median squared nearest-neighbour distance of the sample, so that
    the low part averages over neighbours in high dimension."""
    positive = sorted(f for f in freqs if f > 0)
    if positive:
        k_c = math.sqrt(positive[0] * positive[-1]) if positive[-1] > positive[0] else positive[0] / 2
        delta = math.log(2) / (2 * math.pi ** 2 * k_c ** 2)
    else:
        delta = 0.0
    nearest = cKDTree(x).query(x, k=2)[0][:, 1]
    return max(delta, float(np.median(nearest ** 2)))


def directions_for(problem: PoissonProblem, kind: str, x: np.ndarray, max_axes: int = 10, seed: int = 2024):
    """``axes``: the first ``max_axes`` coordinate axes. ``principal``: the first principal
    component of grad u* on the sample (the direction along which the slope of u* varies most;
    uniform points in a box have no preferred direction of their own). ``found``: the unit
    directions of the (at most ``max_axes``) strongest plane waves that the adaptive
    MscaleDNN's estimator (:func:`mscalednn.wavefinder.find_waves`) finds in the source term f,
    i.e. in the residual of the zero network: the directions of its first adaptation, found
    from the problem's data alone, labelled w1, w2, ... (none found: the axes)."""
    if kind == "axes":
        return [(f"x{i + 1}", np.eye(problem.dim)[i]) for i in range(min(problem.dim, max_axes))]
    if kind == "principal" and not problem.has_gradient:
        return directions_for(problem, "axes", x, max_axes)
    if kind == "principal":
        grad = problem.grad_u(torch.as_tensor(x[:4096], dtype=torch.float64)).numpy()
        return [("p", principal_direction(grad))]
    if kind == "found":
        waves = find_waves(problem.f, torch.tensor(problem.lo), torch.tensor(problem.hi),
                           torch.Generator().manual_seed(seed), max_waves=max_axes, points=problem.points)
        if len(waves) == 0:
            return directions_for(problem, "axes", x, max_axes)
        k = waves.k.numpy()
        return [(f"w{i + 1}", v / np.linalg.norm(v)) for i, v in enumerate(k)]
    raise ValueError(f"directions must be 'axes', 'principal' or 'found', got {kind!r}")


class FrequencyMonitor:
    """Snapshots of every measurement during training; pass it to :func:`mscalednn.solve` as a
    hook and call :meth:`finish` with the final model.

    Args:
        problem: the problem (u* is needed).
        directions: ``axes``, ``principal`` or ``found`` (see :func:`directions_for`).
        n_sample: random points for the projection and the relative L2 curve.
        n_filter: the first n_filter of them for the Gaussian filter.
        max_columns: snapshots kept (between this and twice this).
        threshold: the level whose first crossing is recorded per row.
        seed: of the sample (the same for every model and seed of a comparison).
    """

    def __init__(self, problem: PoissonProblem, directions: str = "axes", n_sample: int = 16384,
                 n_filter: int = 2000, max_columns: int = 48, threshold: float = 0.1, seed: int = 2024):
        lo, hi = np.asarray(problem.lo), np.asarray(problem.hi)
        x = problem.geometry.sample_interior(n_sample, stream(seed, MONITOR))
        y = _exact(problem, x)
        self.x, self.y = x, y
        # the grid spectrum needs u* on the whole box: only where the domain is the box
        self.measurements = [GridSpectrum(problem)] if problem.dim <= 2 and problem.is_box else []
        self.measurements.append(Projection(x, y, directions_for(problem, directions, x), lo, hi))
        freqs = [f for m in self.measurements for f in m.freqs]
        if np.ptp(y[:n_filter]) > 0:  # a constant u* has no low/high split
            self.measurements.append(Filter(x[:n_filter], y[:n_filter], filter_delta(x[:n_filter], freqs)))
        self.max_columns, self.threshold, self.every = max_columns, threshold, 1
        self.snapshots: list[dict] = []
        self.first_below = {m.name: [None] * len(m.rows) for m in self.measurements}

    def __call__(self, state) -> None:
        if state.step % self.every == 0:
            self.snapshot(state.model, state.step, state.train_time)

    def snapshot(self, model: torch.nn.Module, step: int, train_time: float) -> None:
        """Measure the model now. NumPy's BLAS runs on one thread here: its worker threads would
        otherwise spin after each call and slow the next training step (2.6x in 1D, measured)."""
        if self.snapshots and self.snapshots[-1]["step"] == step:
            return
        if self.snapshots and self.snapshots[-1]["step"] > step:  # training rolled back (a NaN): forget
            self.snapshots = [s for s in self.snapshots if s["step"] < step]  # the abandoned steps
            self.first_below = {k: [f if f is not None and f < step else None for f in v]
                                for k, v in self.first_below.items()}
        with threadpool_limits(limits=1, user_api="blas"):
            self._measure(model, step, train_time)
        if len(self.snapshots) >= 2 * self.max_columns:
            self.snapshots, self.every = self.snapshots[1::2], 2 * self.every

    def _measure(self, model: torch.nn.Module, step: int, train_time: float) -> None:
        h = predict(model, self.x)
        snap = {"step": step, "train_time_s": train_time,
                "rel_l2": relative_errors(h, self.y)["rel_l2"]}
        for m in self.measurements:
            values = m(predict(model, m.x) if m.name == "grid" else h[:len(m.x)])  # the rest: on the sample
            snap[m.name] = [float(v) for v in values]
            first = self.first_below[m.name]
            for i, v in enumerate(values):
                if first[i] is None and v < self.threshold:
                    first[i] = step
        self.snapshots.append(snap)

    def finish(self, model: torch.nn.Module, step: int, train_time: float) -> None:
        """The snapshot of the final model."""
        self.snapshot(model, step, train_time)

    def to_dict(self) -> dict:
        """Everything needed to redraw the plots (rows, frequencies, snapshots, first crossings)."""
        info = {m.name: {"rows": list(m.rows), "first_below": self.first_below[m.name],
                         **({"freqs": m.freqs} if hasattr(m, "freqs") else {"delta": m.delta})}
                for m in self.measurements}
        return {"threshold": self.threshold, "measurements": info, "snapshots": self.snapshots}
