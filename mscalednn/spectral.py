"""Spectral tools for the Frequency Principle measurements (docs/method.md section 4).

* :func:`dft` / :func:`peaks` / :func:`peaks_nd` / :func:`delta_f`: the DFT of samples on a
  uniform grid, its frequency peaks (1D, or on a grid of any dimension), and the relative
  error at the peaks Delta_F(k) = |h_k - y_k| / |y_k|.
* :func:`nudft` / :func:`principal_direction`: the non-uniform DFT of samples projected on a
  direction p, y_hat(k) = (1/n) sum_i y_i exp(-2 pi i k p.x_i) (the projection method).
* :func:`gaussian_lowpass` / :func:`gaussian_weights` / :func:`filter_errors`: the Gaussian
  split y = y_low + y_high, y_low_i = sum_j y_j G(x_i - x_j) / sum_j G(x_i - x_j),
  G(z) = exp(-|z|^2 / (2 delta)), and e_low, e_high (the filtering method); the n x n kernel
  is built in row blocks (whole only when asked for, by :func:`gaussian_weights`).

All functions take and return NumPy arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dft(y: np.ndarray) -> np.ndarray:
    """(1/n) sum_j y_j exp(-2 pi i k j / n) for k = 0 .. n // 2 (real samples: the rest mirrors)."""
    y = np.asarray(y, dtype=float)
    return np.fft.rfft(y) / y.shape[0]


def peaks(spectrum: np.ndarray, count: int | None = None, rel_height: float = 1e-3) -> np.ndarray:
    """Indices of the strict local maxima of |spectrum| (k >= 1), low to high, ignoring those
    below ``rel_height`` times the largest non-constant coefficient (k >= 1); the ``count``
    largest of them if given."""
    a = np.abs(np.asarray(spectrum))
    k = np.arange(1, a.shape[0] - 1)
    is_peak = (a[k] > a[k - 1]) & (a[k] > a[k + 1]) & (a[k] > rel_height * a[1:].max())
    return _largest(k[is_peak], a, count)


def peaks_nd(spectrum: np.ndarray, count: int | None = None, rel_height: float = 1e-3) -> np.ndarray:
    """Indices [m, ndim] of the strict local maxima of |spectrum| over its 3 x ... x 3
    neighbourhoods (any number of axes; the border counts as lower), ignoring those below
    ``rel_height`` times the largest; the ``count`` largest if given."""
    a = np.abs(np.asarray(spectrum))
    footprint = np.ones((3,) * a.ndim, dtype=bool)
    footprint[(1,) * a.ndim] = False
    neighbours = ndimage.maximum_filter(a, footprint=footprint, mode="constant", cval=-np.inf)
    is_peak = (a > neighbours) & (a > rel_height * a.max())
    found = np.argwhere(is_peak)                                  # in index order
    if count is not None and len(found) > count:
        found = found[by_height(a[tuple(found.T)])[:count]]
    return found


def by_height(heights: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """The order of ``heights`` from the largest down, with heights equal to ``rtol`` (relative to
    the largest) treated as equal and kept in their given order: peaks that are equal in exact
    arithmetic (symmetric modes) differ by rounding noise that depends on the CPU and the FFT
    library, and must not decide which is kept or listed first."""
    heights = np.asarray(heights, dtype=float)
    if heights.size == 0:
        return np.zeros(0, dtype=int)
    scale = np.abs(heights).max() or 1.0
    order = np.argsort(-heights, kind="stable")
    # runs of neighbours closer than rtol * scale form one group, whatever the rounding (no bin edges)
    group = np.concatenate([[0], np.cumsum(-np.diff(heights[order]) > rtol * scale)])
    return order[np.lexsort((order, group))]


def _largest(found: np.ndarray, a: np.ndarray, count: int | None) -> np.ndarray:
    if count is not None and found.size > count:
        found = np.sort(found[by_height(a[found])[:count]])
    return found


def delta_f(h_hat: np.ndarray, y_hat: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Delta_F(k) = |h_hat_k - y_hat_k| / |y_hat_k| at the frequencies ``at``."""
    return np.abs(h_hat[at] - y_hat[at]) / np.abs(y_hat[at])


def principal_direction(x: np.ndarray) -> np.ndarray:
    """The unit first principal component of the rows of x [n, d]; its sign makes the first of its
    largest entries positive (entries within 1e-9 of the largest count as equal, so that rounding
    noise cannot flip the direction of, e.g., (1, -1) / sqrt 2)."""
    x = np.asarray(x, dtype=float)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    p = vt[0]
    first_largest = np.flatnonzero(np.abs(p) >= (1 - 1e-9) * np.abs(p).max())[0]
    return p if p[first_largest] > 0 else -p


def nudft(y: np.ndarray, v: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """y_hat(k) = (1/n) sum_i y_i exp(-2 pi i k v_i) for each k in ``freqs`` (v_i = p . x_i);
    for y [n, m], each column's ([len(freqs), m]), with the exponentials built once."""
    y, v, freqs = np.asarray(y, dtype=float), np.asarray(v, dtype=float), np.asarray(freqs, dtype=float)
    return np.exp(-2j * np.pi * np.outer(freqs, v)) @ y / y.shape[0]


def gaussian_lowpass(x: np.ndarray, ys: np.ndarray, delta: float, block: int = 1024) -> np.ndarray:
    """The Gaussian low-frequency part of each column of ys [n, m] (or of ys [n]) over points
    x [n, d]: kernel rows built ``block`` at a time (memory ~ block * n, not n * n)."""
    x = np.asarray(x, dtype=float)
    ys = np.asarray(ys, dtype=float)
    flat = ys.ndim == 1
    ys = ys[:, None] if flat else ys
    out = np.empty_like(ys)
    for rows, weights in _kernel_blocks(x, delta, block):
        out[rows] = weights @ ys
    return out[:, 0] if flat else out


def gaussian_weights(x: np.ndarray, delta: float, block: int = 1024, dtype=np.float64) -> np.ndarray:
    """The whole row-normalised kernel W [n, n] (y_low = W @ y), built ``block`` rows at a time
    in float64 and stored as ``dtype``: for a fixed sample filtered many times (n^2 floats:
    32 MB at n = 2000 in float64, 100 MB at n = 5000 in float32)."""
    x = np.asarray(x, dtype=float)
    out = np.empty((x.shape[0], x.shape[0]), dtype=dtype)
    for rows, weights in _kernel_blocks(x, delta, block):
        out[rows] = weights
    return out


def _kernel_blocks(x: np.ndarray, delta: float, block: int):
    """(rows, G[rows] / G[rows].sum(axis=1)) for blocks of rows of G_ij = exp(-|x_i - x_j|^2 / (2 delta))."""
    sq = (x * x).sum(axis=1)
    for start in range(0, x.shape[0], block):
        rows = slice(start, start + block)
        G = np.exp(-np.maximum(sq[rows, None] + sq[None, :] - 2.0 * x[rows] @ x.T, 0.0) / (2.0 * delta))
        yield rows, G / G.sum(axis=1, keepdims=True)


def filter_errors(x: np.ndarray, y: np.ndarray, h: np.ndarray, delta: float, block: int = 1024,
                  weights: np.ndarray | None = None):
    """(e_low, e_high) = (||y_low - h_low|| / ||y_low||, ||y_high - h_high|| / ||y_high||);
    with ``weights`` (from :func:`gaussian_weights`) the kernel is not built again."""
    y, h = np.asarray(y, dtype=float), np.asarray(h, dtype=float)
    both = np.stack([y, h], axis=1)
    low = weights @ both if weights is not None else gaussian_lowpass(x, both, delta, block)
    y_low, h_low = low[:, 0], low[:, 1]
    y_high, h_high = y - y_low, h - h_low
    return (float(np.linalg.norm(y_low - h_low) / np.linalg.norm(y_low)),
            float(np.linalg.norm(y_high - h_high) / np.linalg.norm(y_high)))
