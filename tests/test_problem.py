"""Problems: f and g derived exactly from u*, sampling, losses, error measures."""

import math

import numpy as np
import pytest
import torch

from mscalednn import load_problem, parse_expression
from mscalednn.derivatives import value_grad_laplacian
from mscalednn.losses import ritz_interior, boundary_penalty
from mscalednn.metrics import EvalSet, relative_errors
from mscalednn.problem import PoissonProblem
from mscalednn.sampling import Sampler
from mscalednn.sampling import test_points as make_test_points

pi = math.pi


def x64(n, d, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_poisson10d_source_matches_hand_computed():
    """u* = sum sin(pi x_i) + 0.1 sin(10 pi x_i)  =>  f = sum pi^2 sin(pi x_i) + 10 pi^2 sin(10 pi x_i)."""
    problem, _ = load_problem("problems/poisson10d.yaml")
    x = x64(200, 10)
    f_hand = (pi**2 * torch.sin(pi * x) + 0.1 * (10 * pi) ** 2 * torch.sin(10 * pi * x)).sum(1)
    torch.testing.assert_close(problem.f(x), f_hand, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(problem.g(x), problem.u(x))


def test_rotated_source_matches_hand_computed():
    """sin(k (x_i + x_j)/sqrt 2) has Laplacian -k^2 sin(...) (two coordinates, each k^2/2)."""
    problem, _ = load_problem("problems/poisson10d_rotated.yaml")
    x = x64(100, 10, 1)
    s = (x + torch.roll(x, -1, dims=1)) / math.sqrt(2)
    f_hand = (pi**2 * torch.sin(pi * x) + 0.1 * (10 * pi) ** 2 * torch.sin(10 * pi * s)).sum(1)
    torch.testing.assert_close(problem.f(x), f_hand, rtol=1e-12, atol=1e-9)


def test_2d_and_1d_sources():
    p2, _ = load_problem("problems/poisson2d_multiscale.yaml")
    x = x64(100, 2, 2) * 2 - 1
    s1, s20 = torch.sin(pi * x).prod(1), torch.sin(20 * pi * x).prod(1)
    torch.testing.assert_close(p2.f(x), 2 * pi**2 * s1 + 0.05 * 2 * (20 * pi) ** 2 * s20, rtol=1e-12, atol=1e-8)
    p1, _ = load_problem("problems/poisson1d_multiscale.yaml")
    x = x64(100, 1, 3) * 2 - 1
    f = pi**2 * torch.sin(pi * x[:, 0]) + 0.1 * (23 * pi) ** 2 * torch.sin(23 * pi * x[:, 0])
    torch.testing.assert_close(p1.f(x), f, rtol=1e-12, atol=1e-8)


def box_problem(d=3, lo=None, hi=None):
    lo = lo or (0.0,) * d
    hi = hi or (1.0,) * d
    return PoissonProblem(parse_expression("sum(x**2)", d), tuple(lo), tuple(hi))


@pytest.mark.parametrize("kind", ["uniform", "sobol"])
def test_sampler_points_in_box_and_on_boundary(kind):
    p = box_problem(3, (-1.0, 0.0, 2.0), (1.0, 0.5, 5.0))
    s = Sampler(p, kind, seed=0, dtype=torch.float64)
    lo, hi = torch.tensor(p.lo), torch.tensor(p.hi)
    xi = s.interior(4096)
    assert ((xi >= lo) & (xi <= hi)).all()
    xb = s.boundary(6000)
    assert ((xb >= lo) & (xb <= hi)).all()
    on_face = (xb == lo) | (xb == hi)
    assert (on_face.sum(1) >= 1).all()
    # faces are hit in proportion to their area: |x_k face| ~ prod of the other sides
    share = on_face.double().mean(0).numpy()
    areas = np.array(p.face_areas)
    np.testing.assert_allclose(share, areas / areas.sum(), atol=0.03)
    # the free coordinates are spread over their whole range (mean near the centre)
    free = xb[~on_face[:, 2], 2]
    assert abs(free.mean().item() - 3.5) < 0.1


def test_sampler_is_seeded():
    p = box_problem()
    a, b = Sampler(p, seed=5).interior(10), Sampler(p, seed=5).interior(10)
    assert torch.equal(a, b)
    assert not torch.equal(a, Sampler(p, seed=6).interior(10))


def test_test_points_grid_in_low_dimension():
    assert make_test_points(box_problem(1), 1001).shape == (1001, 1)
    assert make_test_points(box_problem(2), 10000).shape == (10000, 2)
    assert make_test_points(box_problem(10), 10000).shape == (10000, 10)


def test_box_measures():
    p = box_problem(3, (0.0, 0.0, 0.0), (1.0, 2.0, 3.0))
    assert p.volume == 6.0
    assert p.face_areas == (6.0, 3.0, 2.0)
    assert p.boundary_area == 22.0


def test_relative_errors_formulas():
    u_star = np.array([1.0, -2.0, 2.0])
    u = u_star + np.array([0.1, 0.0, -0.2])
    e = relative_errors(u, u_star, np.ones((3, 2)), 2 * np.ones((3, 2)))
    assert math.isclose(e["rel_l2"], math.sqrt(0.05) / 3)
    assert math.isclose(e["rel_max"], 0.1)
    assert math.isclose(e["rel_h1"], 0.5)


def test_ritz_energy_is_minimised_by_exact_solution():
    """E(v) = int 1/2 |grad v|^2 - f v is smallest at u* among u* + eps phi, phi = 0 on the boundary."""
    problem, _ = load_problem("problems/poisson2d_multiscale.yaml")
    x = Sampler(problem, "sobol", seed=0, dtype=torch.float64).interior(2**15)
    f = problem.f(x)
    bump = lambda y: torch.prod(1 - y**2, dim=1) * torch.sin(3 * y[:, 0])  # noqa: E731

    def energy(eps):
        u, g, _ = value_grad_laplacian(lambda y: problem.u(y) + eps * bump(y), x, create_graph=False)
        return ritz_interior(u, g, f, problem.volume).item()

    e0 = energy(0.0)
    for eps in (-0.1, -0.01, 0.01, 0.1):
        assert energy(eps) > e0
    # E(eps) = E(0) + eps L + eps^2 Q with L = 0 at the minimiser (up to quadrature error)
    L = (energy(0.1) - energy(-0.1)) / 0.2
    Q = (energy(0.1) + energy(-0.1) - 2 * e0) / 0.02
    assert Q > 0 and abs(L) < 0.02 * Q


def test_boundary_penalty_zero_for_exact_data():
    problem, _ = load_problem("problems/poisson10d.yaml")
    xb = Sampler(problem, seed=0, dtype=torch.float64).boundary(100)
    assert boundary_penalty(problem.u(xb), problem.g(xb), 20.0).item() == 0.0


def test_test_set_holds_exact_values():
    problem, _ = load_problem("problems/poisson1d_multiscale.yaml")
    t = EvalSet.build(problem, 1001)
    x = t.x[:, 0].numpy()
    np.testing.assert_allclose(t.u, np.sin(pi * x) + 0.1 * np.sin(23 * pi * x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t.grad_u[:, 0], pi * np.cos(pi * x) + 2.3 * pi * np.cos(23 * pi * x),
                               rtol=1e-12, atol=1e-11)
