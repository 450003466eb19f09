"""Network modules: shapes, parameter counts, activation formulas."""

import math

import numpy as np
import pytest
import torch

from mscalednn.nn import ACTIVATIONS, MLP, MscaleDNN, count_parameters, get_activation, make_scales
from mscalednn.errors import ConfigError



@pytest.fixture(autouse=True)
def float64():
    """These tests compare formulas to 1e-12: float64, for this file's tests only."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def linear(a, b):
    return a * b + b


@pytest.mark.parametrize("d", [1, 3, 10])
@pytest.mark.parametrize("residual", [False, True])
def test_mlp_shape_and_count(d, residual):
    m = MLP(d, width=20, depth=3, residual=residual)
    assert m(torch.rand(7, d)).shape == (7, 1)
    assert count_parameters(m) == linear(d, 20) + 2 * linear(20, 20) + linear(20, 1)


def test_mlp_fourier_count():
    m = MLP(4, width=16, depth=2, fourier_features=8)
    assert m(torch.rand(5, 4)).shape == (5, 1)
    # B is a fixed buffer, not a parameter
    assert count_parameters(m) == linear(16, 16) + linear(16, 16) + linear(16, 1)


@pytest.mark.parametrize("d", [1, 10])
@pytest.mark.parametrize("fourier", [False, True])
@pytest.mark.parametrize("directions", ["random", "axes", "mixed"])
def test_mscale_subnets_shape_and_count(d, fourier, directions):
    n, w = 4, 12
    m = MscaleDNN(d, scales=[1, 2, 4, 8], width=w, depth=3, variant="subnets", fourier=fourier,
                  directions=directions)
    assert m(torch.rand(6, d)).shape == (6, 1)
    first = 2 * w if fourier else w
    per_subnet = linear(d, w) + linear(first, w) + linear(w, w) + w
    assert count_parameters(m) == n * per_subnet + 1


@pytest.mark.parametrize("fourier", [False, True])
def test_mscale_first_layer_shape_and_count(fourier):
    d, w = 10, 30
    m = MscaleDNN(d, scales="geometric:6", width=w, depth=3, variant="first_layer", fourier=fourier)
    assert m(torch.rand(6, d)).shape == (6, 1)
    first = 2 * w if fourier else w
    assert count_parameters(m) == linear(d, w) + linear(first, w) + linear(w, w) + linear(w, 1)
    # 30 neurons, 6 scales: groups of 5
    assert m.K.tolist() == [a for a in (1, 2, 4, 8, 16, 32) for _ in range(5)]


def test_first_layer_leftover_neurons_take_highest_scale():
    m = MscaleDNN(2, scales=[1, 2, 3], width=8, variant="first_layer")
    assert m.K.tolist() == [1, 1, 2, 2, 3, 3, 3, 3]


def test_subnets_equal_sum_of_scaled_subnetworks():
    """Batched evaluation equals sum_i N_i(a_i x) computed one subnetwork at a time."""
    torch.manual_seed(0)
    m = MscaleDNN(3, scales=[1, 3, 5], width=8, depth=2, activation="tanh", variant="subnets")
    x = torch.rand(5, 3)
    total = m.b_out.clone()
    for i, a in enumerate([1, 3, 5]):
        h = torch.tanh(a * x @ m.W0[i].T + m.b0[i])
        h = torch.tanh(h @ m.Ws[0][i] + m.bs[0][i])
        total = total + h @ m.W_out[i]
    torch.testing.assert_close(m(x), total, rtol=1e-12, atol=1e-12)


def test_first_layer_formula():
    torch.manual_seed(1)
    m = MscaleDNN(2, scales=[1, 10], width=4, depth=1, activation="sin", variant="first_layer")
    x = torch.rand(5, 2)
    K = torch.tensor([1.0, 1.0, 10.0, 10.0])
    h = torch.sin(K * (x @ m.first.weight.T) + m.first.bias)
    torch.testing.assert_close(m(x), m.stack.out(h), rtol=1e-12, atol=1e-12)


def test_axis_directions():
    m = MscaleDNN(5, scales=[1, 2], width=10, variant="first_layer", directions="axes")
    W = m.first.weight.detach()
    assert ((W != 0).sum(dim=1) == 1).all()  # each unit reads one coordinate
    assert ((W.abs().sum(dim=1) >= 0.5) & (W.abs().sum(dim=1) <= 1)).all()
    mixed = MscaleDNN(5, scales=[1, 2], width=10, variant="first_layer", directions="mixed",
                      axis_fraction=0.4)
    nnz = (mixed.first.weight.detach() != 0).sum(dim=1)
    assert (nnz == 1).sum() == 4 and (nnz == 5).sum() == 6  # 2 of 5 per group on axes
    norms = mixed.first.weight.detach().norm(dim=1)
    assert ((norms >= 0.5 - 1e-12) & (norms <= 1 + 1e-12)).all()
    pairs = MscaleDNN(6, scales=[1, 2], width=20, variant="first_layer", directions="mixed",
                      axis_fraction=0.3, pair_fraction=0.5)
    nnz = (pairs.first.weight.detach() != 0).sum(dim=1)
    assert nnz.tolist() == 2 * ([1] * 3 + [2] * 5 + [6] * 2)  # per group: axes, pairs, dense


def test_scales():
    assert make_scales("linear:4") == (1, 2, 3, 4)
    assert make_scales("geometric:4") == (1, 2, 4, 8)
    assert make_scales([0.5, 3]) == (0.5, 3.0)
    for bad in ("linear:0", "cubic:3", [0, 1], [], [1, float("nan")]):
        with pytest.raises(ConfigError, match="scales"):
            make_scales(bad)


x_np = np.linspace(-1.5, 3.5, 1001)
relu = lambda z: np.maximum(z, 0)  # noqa: E731
FORMULAS = {
    "srelu": lambda z: relu(z) * relu(1 - z),
    "s2relu": lambda z: np.sin(2 * np.pi * z) * relu(z) * relu(1 - z),
    "phi": lambda z: relu(z) ** 2 - 3 * relu(z - 1) ** 2 + 3 * relu(z - 2) ** 2 - relu(z - 3) ** 2,
    "sin": np.sin,
    "tanh": np.tanh,
    "relu": relu,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "softplus": lambda z: np.log1p(np.exp(z)),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_formula(name):
    out = get_activation(name)(torch.tensor(x_np)).numpy()
    np.testing.assert_allclose(out, FORMULAS[name](x_np), rtol=1e-12, atol=1e-14)


def test_compact_support_and_phi_spline():
    z = torch.tensor(x_np)
    for name in ("srelu", "s2relu"):
        y = get_activation(name)(z)
        assert (y[(z < 0) | (z > 1)] == 0).all()
    phi = get_activation("phi")
    assert (phi(z)[(z < 0) | (z > 3)] == 0).all()
    assert math.isclose(phi(torch.tensor(1.5)).item(), 1.5)  # B-spline peak (unnormalised)


def test_unknown_activation_lists_names():
    with pytest.raises(ConfigError, match=r"did you mean 's2relu'\?") as info:
        get_activation("s2rlu")
    assert all(name in str(info.value) for name in ACTIVATIONS)
