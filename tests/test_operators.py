"""Operator selection, the Hutchinson estimator, the fallback and chunked backward passes."""

import itertools
import warnings

import pytest
import torch
from torch import nn

from mscalednn import losses
from mscalednn.derivatives import (coordinates, hutchinson_autograd, laplacian_operator, rademacher,
                                   value_grad_laplacian)
from mscalednn.forward_laplacian import forward_laplacian, unsupported_part
from mscalednn.nn import MLP, AdaptiveMscaleDNN, MscaleDNN
from mscalednn.train import auto_chunk, backward_in_chunks

D = 4


def all_signs(n: int, d: int) -> torch.Tensor:
    """Every +-1 vector of length d, for each of n points, scaled so that sum_k v v^T = I: [n, 2^d, d]."""
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)
    return (signs / signs.shape[0] ** 0.5).expand(n, -1, -1)


@pytest.mark.parametrize("model", [
    MLP(D, width=10, depth=3, activation="tanh"),
    MscaleDNN(D, scales=[1, 2, 4], width=6, depth=3, activation="s2relu"),
    MscaleDNN(D, scales="geometric:3", width=12, depth=2, activation="tanh", variant="first_layer",
              first_activation="sin", directions="mixed", pair_fraction=0.5),
])
def test_hutchinson_is_unbiased_exactly(model):
    """Averaged over all 2^d sign vectors the Rademacher estimate IS the trace: exact unbiasedness."""
    torch.manual_seed(0)
    model = model.double()
    x = torch.rand(30, D, dtype=torch.float64) * 0.8 + 0.1
    exact = value_grad_laplacian(model, x)[2]
    u, g, est = forward_laplacian(model, x, directions=all_signs(30, D))
    assert g is None
    assert torch.allclose(est, exact, rtol=1e-10, atol=1e-10)
    # and a single probe v gives v^T H v (checked against autograd Hessian-vector products)
    P = rademacher(30, 1, D, x)
    assert torch.allclose(forward_laplacian(model, x, directions=P)[2], hutchinson_autograd(model, x, P)[1],
                          rtol=1e-10, atol=1e-10)


def test_hutchinson_mean_over_many_probes():
    """The random operator: the mean over 400 calls (16 probes each) is within 5 standard errors."""
    torch.manual_seed(3)
    model = MLP(8, width=16, depth=3, activation="tanh").double()
    x = torch.rand(10, 8, dtype=torch.float64)
    exact = value_grad_laplacian(model, x)[2]
    op = laplacian_operator("hutchinson", model, probes=16)
    samples = torch.stack([op(x)[2].detach() for _ in range(400)])
    se = samples.std(dim=0) / 400 ** 0.5
    assert ((samples.mean(dim=0) - exact).abs() < 5 * se + 1e-12).all()
    assert (samples.std(dim=0) > 0).any()  # it is random


class Odd(nn.Module):
    """A model the forward pass does not know."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(x)) ** 3)


def test_fallback_warns_once_naming_the_module_and_stays_exact(monkeypatch):
    from mscalednn import derivatives
    monkeypatch.setattr(derivatives, "_warned", set())  # once per process: whatever warned before
    torch.manual_seed(0)
    model = Odd().double()
    x = torch.rand(12, D, dtype=torch.float64)
    with pytest.warns(UserWarning, match="Odd"):
        op = laplacian_operator("forward", model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        laplacian_operator("forward", model)  # once only
        auto = laplacian_operator("auto", model)  # auto never warns
    assert torch.allclose(op(x)[2], value_grad_laplacian(model, x)[2])
    assert torch.allclose(auto(x)[2], value_grad_laplacian(model, x)[2])
    # the Hutchinson fallback by Hessian-vector products is exact over all sign vectors
    _, est = hutchinson_autograd(model, x, all_signs(12, D))
    assert torch.allclose(est, value_grad_laplacian(model, x)[2], rtol=1e-10, atol=1e-12)


def test_unsupported_activation_is_named():
    model = MLP(D, width=6, depth=2, activation=nn.Hardswish())
    assert "Hardswish" in unsupported_part(model)
    assert unsupported_part(MLP(D)) is None


def test_operator_names_are_checked():
    with pytest.raises(ValueError, match="hutchinson"):
        laplacian_operator("fast", MLP(D))


def test_backward_in_chunks_equals_one_backward():
    torch.manual_seed(0)
    model = MscaleDNN(D, scales=[1, 2], width=8, depth=2, activation="tanh").double()
    x, f = torch.rand(103, D, dtype=torch.float64), torch.randn(103, dtype=torch.float64)

    def loss_of(xs, fs):
        return (forward_laplacian(model, xs, need_grad=False)[2] + fs).square().mean()

    full = loss_of(x, f)
    ref = torch.autograd.grad(full, list(model.parameters()), allow_unused=True)  # b_out: unused
    total = backward_in_chunks(loss_of, x, f, chunk=17)
    assert abs(total.item() - full.item()) < 1e-12 * abs(full.item())
    assert sum(a is not None for a in ref) == len(ref) - 1
    for a, p in zip(ref, model.parameters()):
        assert (a is None and p.grad is None) or torch.allclose(p.grad, a, rtol=1e-11, atol=1e-13)


def largest_saved_tensor(model, x):
    """The most elements of any tensor the forward Laplacian's graph keeps for the backward."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward_laplacian(model, x, need_grad=False)
    return max(sizes)


@pytest.mark.parametrize("make", [
    lambda d: MLP(d, width=128, depth=3),
    lambda d: MscaleDNN(d, scales="geometric:6", width=120, depth=3, variant="first_layer"),
    lambda d: MscaleDNN(d, scales="geometric:6", width=64, depth=3, variant="subnets"),  # Jacobian [6, N, d, 64]
    lambda d: MscaleDNN(d, scales="geometric:4", width=32, depth=3, variant="subnets", fourier=True),
], ids=["mlp", "first_layer", "subnets", "subnets-fourier"])
def test_auto_chunk_bounds_the_jacobian(make):
    """No tensor the forward Laplacian keeps for the backward exceeds the budget (and chunks
    are not needlessly small: the largest is over a third of it)."""
    torch.manual_seed(0)
    d, budget = 20, 2**22
    model = make(d)
    chunk = auto_chunk(model, d, budget=budget)
    assert chunk >= 256
    assert budget / 3 < largest_saved_tensor(model, torch.rand(chunk, d)) <= budget
    assert auto_chunk(MLP(10, width=128, depth=3), 10) > 2000  # small problems are not split


def test_tune_allocator_applies_on_linux_glibc():
    import platform
    import sys

    from mscalednn import tune_allocator
    applied = tune_allocator()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied in (True, False)


def test_compile_loss_falls_back_with_a_warning(monkeypatch):
    """If torch.compile cannot compile (no C++ compiler, say), the loss still runs, eagerly."""
    from mscalednn.train import compile_loss

    def broken_compile(fn):
        def raise_(*args):
            raise RuntimeError("no compiler")
        return raise_

    monkeypatch.setattr(torch, "compile", broken_compile)
    loss = compile_loss(lambda a, b: (a - b).square().sum())
    a, b = torch.ones(3), torch.zeros(3)
    with pytest.warns(UserWarning, match="no compiler"):
        assert loss(a, b).item() == 3.0
    assert loss(a, b).item() == 3.0  # and stays eager, without another warning


def test_compiled_training_matches_eager():
    """train.compile: true trains the same network as eager mode (float64, a few steps)."""
    import shutil

    from mscalednn import MLP, PoissonProblem, TrainConfig, parse_expression, seed_everything, solve
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile needs a C++ compiler on the CPU")
    problem = PoissonProblem(parse_expression("sum(sin(pi*x))", 2), lo=(0, 0), hi=(1, 1))
    results = []
    for compile_ in (False, True):
        seed_everything(0)
        cfg = TrainConfig(steps=5, n_interior=64, n_boundary=32, eval_every=5, n_test=100, dtype="float64",
                          progress=False, compile=compile_, lr=1e-2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append(solve(problem, MLP(2, width=16, depth=2), cfg).metrics["rel_l2"])
        assert not [w for w in caught if "train.compile" in str(w.message)]  # it compiled: no fallback
    assert abs(results[0] - results[1]) < 1e-9 * results[0]


def test_sampled_coordinates_are_exact_with_every_axis_and_unbiased_with_fewer():
    """SDGD: K = d coordinates give the Laplacian exactly; K < d distinct axes per point, each
    scaled by sqrt(d/K), average to it (all C(d, K) subsets are equally likely)."""
    torch.manual_seed(5)
    model = MLP(6, width=12, depth=3, activation="tanh").double()
    x = torch.rand(20, 6, dtype=torch.float64)
    exact = value_grad_laplacian(model, x)[2]
    assert torch.allclose(laplacian_operator("sampled", model, probes=6)(x)[2], exact, rtol=1e-10, atol=1e-10)
    P = coordinates(20, 2, 6, x).dense(x.dtype)
    assert torch.equal((P != 0).sum(dim=(1, 2)), torch.full((20,), 2))          # two distinct axes
    assert torch.allclose(P.square().sum(dim=(1, 2)), torch.full((20,), 6.0, dtype=torch.float64))
    op = laplacian_operator("sampled", model, probes=2)
    samples = torch.stack([op(x)[2].detach() for _ in range(600)])
    se = samples.std(dim=0) / 600 ** 0.5
    assert ((samples.mean(dim=0) - exact).abs() < 5 * se + 1e-12).all()
    assert (samples.std(dim=0) > 0).all()


@pytest.mark.parametrize("model", [
    MLP(D, width=10, depth=3, activation="tanh", residual=True),
    MscaleDNN(D, scales=[1, 2, 4], width=6, depth=3, activation="s2relu"),
    MscaleDNN(D, scales="geometric:3", width=12, depth=2, activation="tanh", variant="first_layer",
              first_activation="sin", directions="mixed", pair_fraction=0.5),
    AdaptiveMscaleDNN(D, width=12, depth=2, variant="first_layer", activation="tanh", wave_slots=4),
])
def test_axes_kept_as_indices_give_what_the_dense_directions_give(model):
    """The sampled estimator's axes are gathered, not multiplied: the same estimate as the dense
    [N, K, d] directions, and the same gradient to the parameters."""
    torch.manual_seed(1)
    model = model.double()
    if isinstance(model, AdaptiveMscaleDNN):
        model.place_waves(torch.randn(2, D, dtype=torch.float64) * 5, torch.randn(2, 2, dtype=torch.float64))
    x = torch.rand(15, D, dtype=torch.float64)
    P = coordinates(15, 3, D, x)
    fast, dense = forward_laplacian(model, x, directions=P)[2], forward_laplacian(model, x, directions=P.dense(x.dtype))[2]
    assert torch.allclose(fast, dense, rtol=1e-12, atol=1e-12)
    params = list(model.parameters())
    g1 = torch.autograd.grad(fast.square().sum(), params, allow_unused=True, materialize_grads=True)
    g2 = torch.autograd.grad(dense.square().sum(), params, allow_unused=True, materialize_grads=True)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(g1, g2))


@pytest.mark.parametrize("operator", ["hutchinson", "sampled"])
def test_the_residual_loss_of_an_estimator_is_unbiased(operator):
    """With a random Laplacian the residual loss is the product of two independent estimates.
    Where the network solves the PDE (f = -Laplace u_theta at the points) the exact loss and its
    gradient are 0: the product's mean over draws and its mean gradient are 0 within 5 standard
    errors, while the square of one estimate is positive by the estimator's variance and its
    gradient pulls the network away from the solution."""
    from mscalednn import PoissonProblem, TrainConfig, parse_expression
    from mscalednn.train import _interior_loss

    torch.manual_seed(2)
    model = MLP(5, width=10, depth=2, activation="tanh").double()
    with torch.no_grad():
        model.stack.layers[0].weight.mul_(3.0)  # a Hessian with large entries: an estimator with a large variance
    x = torch.rand(40, 5, dtype=torch.float64)
    f = -value_grad_laplacian(model, x)[2].detach()
    problem = PoissonProblem(parse_expression("sum(x**2)", 5), (0.0,) * 5, (1.0,) * 5)  # only its type is used
    params = list(model.parameters())
    n = 2000

    def draws(loss_fn):
        values, grads = [], []
        for _ in range(n):
            loss = loss_fn(x, f)
            values.append(loss.detach())
            grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(
                loss, params, allow_unused=True, materialize_grads=True)]))
        return torch.stack(values), torch.stack(grads)

    def significant(samples):  # is the mean 0 within 5 standard errors (per entry)?
        return (samples.mean(0).abs() > 5 * samples.std(0) / n ** 0.5 + 1e-12)

    unbiased, _ = _interior_loss(problem, model, TrainConfig(derivatives=operator, probes=2))
    L, G = draws(unbiased)
    assert not significant(L[:, None]).any() and not significant(G).any()
    estimate = laplacian_operator(operator, model, probes=1)
    L, G = draws(lambda x, f: losses.residual_interior(estimate(x)[2], f))
    assert significant(L[:, None]).all() and float(L.min()) > 0 and significant(G).any()


def test_auto_estimates_the_laplacian_only_in_high_dimension_with_the_residual_loss():
    from mscalednn import PoissonProblem, TrainConfig, parse_expression, solve
    from mscalednn.derivatives import chosen_operator

    assert chosen_operator("auto", "residual", 32, 16) == "auto"
    assert chosen_operator("auto", "residual", 33, 16) == "hutchinson"
    assert chosen_operator("auto", "residual", 33, 32) == "auto"       # more probes: the estimate costs more
    assert chosen_operator("auto", "ritz", 1000, 16) == "auto"         # Ritz needs grad u only
    assert chosen_operator("forward", "residual", 1000, 16) == "forward"  # an explicit choice is kept
    assert chosen_operator("auto", "residual", 1000, 16, one_pass=True) == "auto"  # exact costs one pass
    d = 80
    problem = PoissonProblem(parse_expression("sum(x**2)", d), (0.0,) * d, (1.0,) * d)
    torch.manual_seed(0)
    result = solve(problem, MLP(d, width=8, depth=2), TrainConfig(steps=2, n_interior=32, n_boundary=16, n_test=200,
                                                                 progress=False))
    assert result.metrics["derivatives"] == "hutchinson"
    # a network with one hidden layer keeps the exact Laplacian at any d (it costs one forward pass)
    torch.manual_seed(0)
    result = solve(problem, MLP(d, width=8, depth=1), TrainConfig(steps=2, n_interior=32, n_boundary=16, n_test=200,
                                                                 progress=False))
    assert result.metrics["derivatives"] == "auto"
