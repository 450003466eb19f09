"""The spectral tools recover known spectra exactly."""

import numpy as np
import pytest

from mscalednn.spectral import (delta_f, dft, filter_errors, gaussian_lowpass, gaussian_weights, nudft, peaks,
                                peaks_nd, principal_direction)


def test_sum_of_sines_gives_its_peaks_and_amplitudes():
    n = 600
    t = np.arange(n) / n
    y = 1.0 * np.sin(2 * np.pi * 3 * t) + 0.5 * np.sin(2 * np.pi * 7 * t) + 0.25 * np.cos(2 * np.pi * 20 * t)
    Y = dft(y)
    assert list(peaks(Y)) == [3, 7, 20]
    assert np.allclose(np.abs(Y[[3, 7, 20]]), [0.5, 0.25, 0.125], atol=1e-12)
    assert list(peaks(Y, count=2)) == [3, 7]


def test_delta_f_is_zero_for_the_target_and_one_for_zero():
    y = np.sin(np.linspace(0, 2 * np.pi * 5, 256, endpoint=False))
    Y, at = dft(y), peaks(dft(y))
    assert np.allclose(delta_f(Y, Y, at), 0.0)
    assert np.allclose(delta_f(dft(np.zeros_like(y)), Y, at), 1.0)
    assert np.allclose(delta_f(dft(0.9 * y), Y, at), 0.1)


@pytest.mark.parametrize("axis", [0, 2])
def test_nudft_along_an_axis_matches_the_fft_on_a_uniform_grid(axis):
    rng = np.random.default_rng(0)
    n, d = 128, 3
    x = rng.random((n, d))
    x[:, axis] = np.arange(n) / n                 # a uniform grid along the axis
    y = np.sin(2 * np.pi * 5 * x[:, axis]) + 0.3 * np.cos(2 * np.pi * 11 * x[:, axis]) + rng.normal(size=n) * 0.1
    p = np.eye(d)[axis]
    k = np.arange(n // 2 + 1)
    assert np.allclose(nudft(y, x @ p, k), dft(y), atol=1e-12)


def test_principal_direction_finds_the_long_axis():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3)) * np.array([0.1, 3.0, 0.5])
    assert np.allclose(np.abs(principal_direction(x)), [0, 1, 0], atol=0.02)


def test_gaussian_filter_of_a_constant_is_the_constant_and_blocks_do_not_matter():
    rng = np.random.default_rng(2)
    x = rng.random((300, 5))
    assert np.allclose(gaussian_lowpass(x, np.full(300, 2.5), delta=0.1, block=64), 2.5, atol=1e-12)
    y = np.sin(8 * x[:, 0]) + x[:, 1]
    assert np.allclose(gaussian_lowpass(x, y, 0.05, block=7), gaussian_lowpass(x, y, 0.05, block=1000), atol=1e-12)
    # a tiny delta keeps everything (each point's own weight dominates), a huge one averages it all
    assert np.allclose(gaussian_lowpass(x, y, 1e-8), y, atol=1e-9)
    assert np.allclose(gaussian_lowpass(x, y, 1e8), y.mean(), atol=1e-6)


def test_filter_errors_separate_low_and_high_parts():
    rng = np.random.default_rng(3)
    x = rng.random((400, 2))
    low, high = np.sin(2 * x[:, 0]), 0.3 * np.sin(60 * x[:, 0]) * np.sin(60 * x[:, 1])
    y = low + high
    e_low, e_high = filter_errors(x, y, y, delta=0.01)
    assert e_low == 0.0 and e_high == 0.0
    e_low, e_high = filter_errors(x, y, low, delta=0.01)  # a fit missing the high part
    assert e_high > 0.5 and e_low < 0.2 * e_high


def test_peaks_nd_finds_the_plane_waves_of_a_2d_grid():
    n = 64
    t = np.arange(n) / n
    X, Y = np.meshgrid(t, t, indexing="ij")
    f = np.sin(2 * np.pi * 3 * X) * np.sin(2 * np.pi * 2 * Y) + 0.1 * np.cos(2 * np.pi * (9 * X + 5 * Y))
    F = np.fft.fftshift(np.fft.fft2(f) / f.size)
    k = peaks_nd(F, rel_height=1e-3) - n // 2          # back to signed frequencies
    found = {tuple(int(v) for v in row) for row in k}
    assert found == {(3, 2), (-3, 2), (3, -2), (-3, -2), (9, 5), (-9, -5)}
    top = peaks_nd(F, count=4) - n // 2
    assert {tuple(int(v) for v in row) for row in top} == {(3, 2), (-3, 2), (3, -2), (-3, -2)}


def test_precomputed_gaussian_weights_give_the_same_split():
    rng = np.random.default_rng(4)
    x = rng.random((300, 3))
    y, h = np.sin(5 * x[:, 0]) + np.cos(40 * x[:, 1]), np.sin(5 * x[:, 0])
    W = gaussian_weights(x, 0.02, block=50)
    assert np.allclose(W.sum(axis=1), 1.0, atol=1e-12)
    assert np.allclose(W @ y, gaussian_lowpass(x, y, 0.02), atol=1e-12)
    assert np.allclose(filter_errors(x, y, h, 0.02, weights=W), filter_errors(x, y, h, 0.02), atol=1e-12)


def test_nudft_of_columns_equals_the_nudft_of_each_column():
    rng = np.random.default_rng(5)
    v, y, k = rng.random(200), rng.normal(size=(200, 3)), np.arange(6) / 2
    assert np.allclose(nudft(y, v, k), np.stack([nudft(y[:, j], v, k) for j in range(3)], axis=1), atol=1e-14)
