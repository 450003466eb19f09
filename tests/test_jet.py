"""The Taylor-mode pass over expressions (mscalednn.jet): value, gradient and Laplacian equal
nested automatic differentiation, for every operation of the expression language."""

import math

import pytest
import torch

from mscalednn import load_problem, parse_expression
from mscalednn.derivatives import value_grad_laplacian
from mscalednn.expr import ELEMENTWISE
from mscalednn.jet import RULES

EXPRESSIONS = [
    "3 + sum(sin(pi*x)*cos(pi*roll(x, -1)) + x*roll(x, -2) - 0.25)/sqrt(d)",
    "prod(sin(pi*x)) + 0.1*prod(sin(5*pi*x))",
    "exp(-sum(x**2)) + norm(x)**3 + x[0]*x[-1]",
    "prod(x + 1) / (1 + sum(x)**2)",
    "tanh(dot(x, roll(x, 1))) + log(2 + mean(x))",
    "sum(i*x)**2 + max(x) + min(x)**2",
    "sqrt(1 + sum(x[1:3]**2)) * atan(x[0]) + abs(x[-1] - 0.3)",
    "sinh(x[0])*cosh(sum(x)) / (2 + cos(sum(x)))",
    "tan(0.3*sum(x)) - x[1]**5 + 2.5",
    "-sum(x**3)/x[1] + sum(x[::2])",
    "prod(x*roll(x, 1)) + prod(sin(x) + cos(roll(x, 2)))",
    "sum(x*sum(x)) + sum(exp(x)*mean(x))",
    "sin(3*dot([0.6, -0.8, 2*pi/10, 1, 0, -1][0:3], x[0:3])) + sum([1, 2, 3]*x[0:3]**2)",
    "4.0",
]


@pytest.mark.parametrize("dim", [3, 6])
@pytest.mark.parametrize("text", EXPRESSIONS)
def test_jet_equals_nested_autograd(text, dim):
    u = parse_expression(text, dim)
    x = torch.rand(50, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64) + 0.1
    value, grad, lap = u.value_grad_laplacian(x)
    ref = value_grad_laplacian(u, x, create_graph=False)
    for got, want in zip((value, grad, lap), ref):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-10)


def test_jet_in_one_dimension_and_at_zeros_of_a_product():
    """d = 1, and points where factors of a product vanish (the box's faces for prod(sin(pi x))):
    the product's Laplacian is taken without dividing by a factor."""
    u = parse_expression("prod(sin(pi*x))", 3)
    x = torch.tensor([[0.0, 0.5, 0.25], [1.0, 0.0, 0.5], [0.3, 0.6, 0.9]], dtype=torch.float64)
    _, grad, lap = u.value_grad_laplacian(x)
    s, c = torch.sin(math.pi * x), torch.cos(math.pi * x)
    torch.testing.assert_close(lap, -3 * math.pi**2 * s.prod(1), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad[1], torch.tensor([0.0, math.pi * c[1, 1] * s[1, 0] * s[1, 2], 0.0],
                                                     dtype=torch.float64), atol=1e-12, rtol=0)
    v = parse_expression("sin(3*x[0]) + x[0]**2", 1)
    t = torch.linspace(-1, 1, 7, dtype=torch.float64)[:, None]
    _, _, lap = v.value_grad_laplacian(t)
    torch.testing.assert_close(lap, -9 * torch.sin(3 * t[:, 0]) + 2)


@pytest.mark.parametrize("name", ["poisson50d", "poisson100d", "poisson5d_product", "poisson10d_rotated"])
def test_shipped_problems_source_by_the_jet_equals_autograd(name):
    problem, _ = load_problem(f"problems/{name}.yaml")
    x = torch.rand(40, problem.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lap = value_grad_laplacian(problem.exact, x, create_graph=False)[2]
    torch.testing.assert_close(problem.f(x), -lap.detach(), rtol=1e-10, atol=1e-9)


def test_jet_in_high_dimension_against_the_hand_computed_laplacian():
    """d = 2,000, where nested autograd would take 2,000 backward passes: the jet's tensors are
    O(N d), no Hessian is formed."""
    d = 2000
    u = parse_expression("sum(sin(pi*x)*cos(pi*roll(x, -1)) + x*roll(x, -2))", d)
    x = torch.rand(8, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, grad, lap = u.value_grad_laplacian(x)
    s, c = torch.sin(math.pi * x), torch.cos(math.pi * x)
    want = (-2 * math.pi**2 * s * torch.roll(c, -1, dims=1)).sum(1)  # x_i x_{i+2} is harmonic
    torch.testing.assert_close(lap, want, rtol=1e-10, atol=1e-9)
    assert grad.shape == (8, d)


def check_dense_plane_waves(seed, direction_text):
    """Twenty waves in 10D along random unit directions (rounded to 4 digits as written), ten
    sin(pi k.x) and ten 0.1 sin(10 pi k.x), each direction written into the text by
    ``direction_text(v)`` (a scalar expression for v.x): the jet's gradient and Laplacian equal
    the closed forms."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(20, 10, generator=g, dtype=torch.float64)
    dirs = torch.round(dirs / dirs.norm(dim=1, keepdim=True), decimals=4)  # as written in the text
    text = " + ".join(f"{0.1 if m >= 10 else 1.0}*sin({10 if m >= 10 else 1}*pi*({direction_text(v)}))"
                      for m, v in enumerate(dirs.tolist()))
    u = parse_expression(text, 10)
    x = torch.rand(30, 10, generator=g, dtype=torch.float64)
    _, grad, lap = u.value_grad_laplacian(x)
    k = dirs * torch.tensor([1.0] * 10 + [10.0] * 10, dtype=torch.float64)[:, None] * math.pi
    a = torch.tensor([1.0] * 10 + [0.1] * 10, dtype=torch.float64)
    phase = x @ k.T
    torch.testing.assert_close(lap, -(a * (k * k).sum(1) * torch.sin(phase)).sum(1), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(grad, (a * torch.cos(phase)) @ k, rtol=1e-10, atol=1e-10)


def test_plane_waves_along_dense_directions_written_out():
    """Directional coordinates written as (0.31)*x[0] + (-0.2)*x[1] + ... (about 3,000 syntax
    nodes): the expression parses, and the jet (scalar terms kept as one gradient) is exact."""
    check_dense_plane_waves(5, lambda v: " + ".join(f"({c:.4f})*x[{j}]" for j, c in enumerate(v)))


def test_plane_waves_along_dense_directions_as_vector_literals():
    """The same kind of sum with each direction a vector of numbers, dot([...], x): the same
    derivatives, from an expression a few hundred nodes long."""
    check_dense_plane_waves(6, lambda v: f"dot([{', '.join(f'{c:.4f}' for c in v)}], x)")


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_every_elementwise_function_has_a_rule_matching_autograd(name):
    """A function added to the language without its derivative rule fails here, not in a run."""
    assert name in RULES
    u = parse_expression(f"sum({name}(0.5*x + 0.2*roll(x, 1)))", 3)
    x = torch.rand(20, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.1
    ref = value_grad_laplacian(u, x, create_graph=False)
    for got, want in zip(u.value_grad_laplacian(x), ref):
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-10)
