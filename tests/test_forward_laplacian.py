"""The forward Laplacian agrees with nested autograd, for every network and activation."""

import zlib

import pytest
import torch

from mscalednn.derivatives import value_grad_laplacian
from mscalednn.forward_laplacian import forward_laplacian, one_pass, supports
from mscalednn.nn import ACTIVATIONS, MLP, MscaleDNN

VARIANTS = {
    "mlp": lambda d, act: MLP(d, width=12, depth=3, activation=act),
    "mlp_residual_fourier": lambda d, act: MLP(d, width=12, depth=2, activation=act, residual=True,
                                               fourier_features=5),
    "subnets": lambda d, act: MscaleDNN(d, scales=[1, 2, 3], width=8, depth=3, activation=act),
    "subnets_fourier_residual": lambda d, act: MscaleDNN(d, scales=[1, 3], width=6, depth=3, activation=act,
                                                         fourier=True, residual=True, scale_bias=True),
    "first_layer": lambda d, act: MscaleDNN(d, scales="geometric:3", width=9, depth=3, activation=act,
                                            variant="first_layer", first_activation="sin",
                                            directions="mixed", pair_fraction=0.3),
    "first_layer_same_act": lambda d, act: MscaleDNN(d, scales=[1, 4], width=8, depth=2, activation=act,
                                                     variant="first_layer", residual=True),
    # one hidden layer: the Laplacian is sigma''(z) |A|^2 read out, no d tangents (one_pass)
    "mlp_one_layer": lambda d, act: MLP(d, width=12, depth=1, activation=act),
    "subnets_one_layer": lambda d, act: MscaleDNN(d, scales=[1, 2, 3], width=8, depth=1, activation=act),
    "first_layer_one_layer": lambda d, act: MscaleDNN(d, scales="geometric:3", width=9, depth=1,
                                                      activation=act, variant="first_layer",
                                                      directions="mixed", pair_fraction=0.3),
}
ONE_PASS = {"mlp_one_layer", "subnets_one_layer", "first_layer_one_layer"}


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_matches_nested_autograd(variant, act):
    torch.manual_seed(zlib.crc32(f"{variant}-{act}".encode()))  # stable: hash() is salted per process
    d = 4
    model = VARIANTS[variant](d, act).double()
    assert supports(model) and one_pass(model) == (variant in ONE_PASS)
    x = torch.rand(64, d, dtype=torch.float64) * 0.8 + 0.1
    u0, g0, l0 = value_grad_laplacian(model, x)
    u1, g1, l1 = forward_laplacian(model, x)
    assert rel(u1, u0) < 1e-12
    assert rel(g1, g0) < 1e-10
    assert rel(l1, l0) < 1e-10
    # gradients with respect to the parameters through both paths agree
    params = [p for p in model.parameters()]
    loss0 = (l0 + u0).square().mean() + g0.square().mean()
    loss1 = (l1 + u1).square().mean() + g1.square().mean()
    grads0 = torch.autograd.grad(loss0, params, allow_unused=True)
    grads1 = torch.autograd.grad(loss1, params, allow_unused=True)
    for p0, p1 in zip(grads0, grads1):
        if p0 is None or p1 is None:
            assert p0 is None or p0.abs().max() == 0
            continue
        assert rel(p1, p0) < 1e-8 or (p1 - p0).abs().max() < 1e-12


def test_linear_network_and_residual_first_layer():
    """Edge cases: no hidden layer (Laplace u = 0), and a residual first layer (width = d)."""
    torch.manual_seed(0)
    x = torch.rand(20, 4, dtype=torch.float64)
    for model in (MLP(4, width=8, depth=0).double(), MLP(4, width=4, depth=2, residual=True).double()):
        for a, b in zip(value_grad_laplacian(model, x), forward_laplacian(model, x)):
            assert (a - b).abs().max() < 1e-12
    assert forward_laplacian(MLP(4, depth=0).double(), x)[2].abs().max() == 0


@pytest.mark.parametrize("variant", ["mlp", "first_layer", "subnets_fourier_residual", "first_layer_one_layer",
                                     "subnets_one_layer"])
@pytest.mark.parametrize("act", ["tanh", "s2relu", "gelu", "sin"])
def test_laplacian_only_loss_gradients(variant, act):
    """need_grad=False (the residual loss) skips the last Jacobian (and a one-layer sin network
    its cosines); values and parameter gradients stay exact."""
    torch.manual_seed(1)
    model = VARIANTS[variant](3, act).double()
    x = torch.rand(50, 3, dtype=torch.float64) * 0.8 + 0.1
    u, g, lap = forward_laplacian(model, x, need_grad=False)
    assert g is None
    u0, _, lap0 = value_grad_laplacian(model, x)
    assert rel(u, u0) < 1e-12 and rel(lap, lap0) < 1e-10
    params = list(model.parameters())
    ref = torch.autograd.grad((lap0 + u0.square()).square().mean(), params, allow_unused=True)
    got = torch.autograd.grad((lap + u.square()).square().mean(), params, allow_unused=True)
    for a, b in zip(ref, got):
        if a is not None:
            assert rel(b, a) < 1e-8 or (a - b).abs().max() < 1e-12


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_closed_form_derivatives(act):
    """sigma, sigma', sigma'', sigma''' against autograd, at points away from the kinks."""
    from mscalednn.forward_laplacian import _closed_forms
    from mscalednn.nn import get_activation
    module = get_activation(act).double()
    z = torch.linspace(-3.7, 3.7, 301, dtype=torch.float64)
    z = z[(z - z.round()).abs() > 0.05]  # away from 0, 1, 2, 3, where the piecewise ones bend
    z.requires_grad_(True)
    derivs = [module(z)]
    for _ in range(3):
        (dz,) = torch.autograd.grad(derivs[-1].sum(), z, create_graph=True, allow_unused=True, materialize_grads=True)
        derivs.append(dz)
    for order, (mine, ref) in enumerate(zip(_closed_forms(module, z.detach()), derivs)):
        assert torch.allclose(mine, ref.detach(), rtol=1e-10, atol=1e-10), (act, order)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_path_agrees_with_float64(variant):
    """Users train in float32 (the default dtype): the forward Laplacian in float32 stays float32
    and agrees with the float64 computation to float32 accuracy."""
    import copy
    torch.manual_seed(zlib.crc32(variant.encode()))
    model = VARIANTS[variant](4, "tanh")
    x = torch.rand(64, 4) * 0.8 + 0.1
    assert next(model.parameters()).dtype == x.dtype == torch.float32
    u, g, lap = forward_laplacian(model, x)
    assert u.dtype == g.dtype == lap.dtype == torch.float32
    u64, g64, lap64 = value_grad_laplacian(copy.deepcopy(model).double(), x.double())
    assert rel(u.double(), u64) < 1e-5 and rel(g.double(), g64) < 1e-5 and rel(lap.double(), lap64) < 1e-4
