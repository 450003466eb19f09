"""Problems: f and g derived exactly from u*, sampling, losses, error measures."""

import math

import numpy as np
import pytest
import torch

from mscalednn import ConfigError, load_problem, parse_expression
from mscalednn.derivatives import value_grad_laplacian
from mscalednn.losses import ritz_interior, boundary_penalty
from mscalednn.metrics import EvalSet, absolute_errors, relative_errors
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


@pytest.mark.parametrize("kind", ["uniform", "sobol", "on_device"])
def test_sampler_points_in_box_and_on_boundary(kind):
    """``on_device``: the torch generator a GPU run draws with (here on the CPU)."""
    p = box_problem(3, (-1.0, 0.0, 2.0), (1.0, 0.5, 5.0))
    s = Sampler(p, "uniform" if kind == "on_device" else kind, seed=0, dtype=torch.float64,
                on_device=kind == "on_device")
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


@pytest.mark.parametrize("on_device", [False, True])
def test_sampler_is_seeded(on_device):
    p = box_problem()
    a, b = (Sampler(p, seed=5, on_device=on_device).interior(10) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, Sampler(p, seed=6, on_device=on_device).interior(10))


def test_device_sampling_continues_from_its_state_and_is_not_resumed_on_the_host():
    p = box_problem(2)
    s = Sampler(p, seed=3, on_device=True)
    s.interior(7)
    state = s.state_dict()
    ahead = torch.cat([s.interior(5), s.boundary(5)])
    again = Sampler(p, seed=3, on_device=True)
    again.load_state_dict(state)
    assert torch.equal(ahead, torch.cat([again.interior(5), again.boundary(5)]))
    with pytest.raises(ConfigError, match="expected to resume on a GPU"):
        Sampler(p, seed=3).load_state_dict(state)


def test_a_source_not_finite_at_a_training_point_is_named_not_rolled_back():
    """f is checked where the step's loss is not finite: an error naming f and the point, not a
    divergence retry (the source is the problem's fault)."""
    from mscalednn import MLP, TrainConfig, solve
    from mscalednn.errors import ProblemError

    class Poisoned(PoissonProblem):
        def f(self, x):
            out = super().f(x)
            return torch.where(x[:, 0] > 0.9, torch.nan, out) if x.shape[0] == 64 else out

    problem = Poisoned(parse_expression("sin(pi*x[0])*x[1]", 2), (0.0, 0.0), (1.0, 1.0), "poisoned")
    with pytest.raises(ProblemError, match=r"poisoned: the source f is not finite at \d+ of 64 points, e\.g\. nan"):
        solve(problem, MLP(2, width=8, depth=1), TrainConfig(steps=5, n_interior=64, n_test=100, progress=False))


def test_test_points_grid_in_low_dimension():
    """1D and 2D: a uniform grid over the closed box, boundary included; higher d: uniform points."""
    x1 = make_test_points(box_problem(1, (-1.0,), (2.0,)), 1001)[:, 0]
    np.testing.assert_allclose(x1, np.linspace(-1.0, 2.0, 1001), rtol=0, atol=1e-15)
    x2 = make_test_points(box_problem(2, (0.0, -1.0), (1.0, 3.0)), 10000)
    assert x2.shape == (10000, 2)
    for k, (a, b) in enumerate(((0.0, 1.0), (-1.0, 3.0))):
        values, counts = np.unique(x2[:, k], return_counts=True)
        np.testing.assert_allclose(values, np.linspace(a, b, 100), atol=1e-15)  # 100 x 100 points
        assert (counts == 100).all()
    x10 = make_test_points(box_problem(10, (0.0,) * 10, (2.0,) * 10), 10000)
    assert x10.shape == (10000, 10) and (x10 > 0).all() and (x10 < 2).all()
    np.testing.assert_allclose(x10.mean(axis=0), 1.0, atol=0.03)               # uniform: mean 1, variance 1/3
    np.testing.assert_allclose(x10.var(axis=0), 1 / 3, atol=0.02)


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
    """E(v) = int 1/2 |grad v|^2 - f v is smallest at u* among u* + eps phi, phi = 0 on the boundary:
    E(eps) = E(0) + eps L + eps^2 Q with L = 0 (Gauss-Legendre quadrature, 200 x 200 points)."""
    problem, _ = load_problem("problems/poisson2d_multiscale.yaml")
    nodes, weights = np.polynomial.legendre.leggauss(200)           # on [-1, 1], the problem's box
    x = torch.as_tensor(np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2))
    w = torch.as_tensor(np.outer(weights, weights).ravel())
    f = problem.f(x)
    bump = lambda y: torch.prod(1 - y**2, dim=1) * torch.sin(3 * y[:, 0])  # noqa: E731

    def energy(eps):
        u, g, _ = value_grad_laplacian(lambda y: problem.u(y) + eps * bump(y), x, create_graph=False)
        return (w * (0.5 * g.square().sum(1) - f * u)).sum().item()

    e0 = energy(0.0)
    for eps in (-0.1, -0.01, 0.01, 0.1):
        assert energy(eps) > e0
    L = (energy(0.1) - energy(-0.1)) / 0.2
    Q = (energy(0.1) + energy(-0.1) - 2 * e0) / 0.02
    assert Q > 0 and abs(L) < 1e-8 * Q
    # and the loss the code minimises is this energy (its sample mean times |Omega|)
    xs = Sampler(problem, "sobol", seed=0, dtype=torch.float64).interior(2**16)
    u, g, _ = value_grad_laplacian(problem.u, xs, create_graph=False)
    assert ritz_interior(u, g, problem.f(xs), problem.volume).item() == pytest.approx(e0, rel=2e-3)


def test_boundary_penalty_measures_the_mismatch_on_the_boundary_only():
    """u* + c * bump, with a bump that is 0 on the boundary and 1 at the centre: the penalty on
    boundary points is 0 (they lie on the boundary), on interior points it is not; u* + c
    gives weight * c^2."""
    problem, _ = load_problem("problems/poisson10d.yaml")
    sampler = Sampler(problem, seed=0, dtype=torch.float64)
    xb, xi = sampler.boundary(400), sampler.interior(400)
    bump = lambda y: torch.prod(4 * y * (1 - y), dim=1)  # noqa: E731
    for x, zero in ((xb, True), (xi, False)):
        penalty = boundary_penalty(problem.u(x) + 0.3 * bump(x), problem.g(x), 20.0).item()
        assert (penalty < 1e-28) if zero else (penalty > 1e-12)
    assert boundary_penalty(problem.u(xb) + 0.3, problem.g(xb), 20.0).item() == pytest.approx(20.0 * 0.09)


def test_test_set_holds_exact_values():
    problem, _ = load_problem("problems/poisson1d_multiscale.yaml")
    t = EvalSet.build(problem, 1001)
    x = t.x[:, 0].numpy()
    np.testing.assert_allclose(t.u, np.sin(pi * x) + 0.1 * np.sin(23 * pi * x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t.grad_u[:, 0], pi * np.cos(pi * x) + 2.3 * pi * np.cos(23 * pi * x),
                               rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("seed", [0, 12345])
def test_training_points_are_independent_of_the_test_points(seed):
    """The test set (seed 12345) must not reappear as training points, whatever train.seed is."""
    problem = box_problem(5)
    test = make_test_points(problem, 2000)
    train = Sampler(problem, seed=seed, dtype=torch.float64).interior(2000).numpy()
    distance = np.abs(train[:, None, :] - test[None, :, :]).max(axis=2).min()
    assert distance > 1e-3  # independent uniform points: no two within 1e-3 in every coordinate


def test_relative_errors_are_absolute_where_the_reference_is_zero():
    zero = np.zeros(4)
    u = np.array([0.1, -0.1, 0.1, -0.1])
    e = relative_errors(u, zero, np.ones((4, 2)), np.zeros((4, 2)))
    assert e == pytest.approx({"rel_l2": 0.1, "rel_max": 0.1, "rel_h1": math.sqrt(2)})  # root mean squares
    assert absolute_errors(zero, np.zeros((4, 2))) == ["rel_l2", "rel_max", "rel_h1"]
    assert absolute_errors(np.ones(4), np.zeros((4, 2))) == ["rel_h1"]                 # a constant u*
    assert absolute_errors(np.ones(4), np.ones((4, 2))) == []


@pytest.mark.parametrize("exact, absolute", [("0", ["rel_l2", "rel_max", "rel_h1"]), ("1.5", ["rel_h1"]),
                                             ("1 + 2*x[0]", [])])
def test_laplace_problems_with_constant_or_linear_solutions_are_solved(exact, absolute):
    """-Laplace u = 0 with u* = 0, a constant or a linear function: f = 0, errors defined."""
    from mscalednn import MLP, TrainConfig, seed_everything, solve
    problem = PoissonProblem(parse_expression(exact, 2), (0.0, 0.0), (1.0, 1.0), "laplace")
    x = x64(50, 2)
    assert problem.f(x).abs().max().item() == 0.0
    seed_everything(0)
    result = solve(problem, MLP(2, width=16, depth=2), TrainConfig(steps=400, lr=1e-2, n_interior=256, n_boundary=256,
                                                                   n_test=400, progress=False, dtype="float64"))
    m = result.metrics
    assert m["status"] == "completed" and m["absolute_errors"] == absolute
    assert all(math.isfinite(m[k]) for k in ("rel_l2", "rel_max", "rel_h1"))
    errors = [r["rel_l2"] for r in result.history if "rel_l2" in r]
    assert m["rel_l2"] < 5e-2 and m["rel_l2"] < 0.5 * errors[0]


def test_a_singular_problem_is_refused_before_training(tmp_path):
    """u* = 1/x[0] on [0, 1]^2 is infinite on the face x[0] = 0: say so (not 'diverged, lower the lr')."""
    from mscalednn import ConfigError, MLP, TrainConfig, solve
    from mscalednn.errors import ProblemError
    path = tmp_path / "singular.yaml"
    path.write_text('name: singular\ndim: 2\nexact: "1/x[0]"\n')
    with pytest.raises(ConfigError, match=r"singular.yaml: singular: the exact solution u\* is not finite at .* "
                                          r"points, e\.g\. inf at x = \(0, "):
        load_problem(path)
    path.write_text('name: cusp\ndim: 3\nexact: "sqrt(x[0])"\n')                # u* finite, grad u* not
    with pytest.raises(ConfigError, match=r"cusp: grad u\* is not finite"):
        load_problem(path)
    problem = PoissonProblem(parse_expression("1/x[0]", 2), (0.0, 0.0), (1.0, 1.0), "singular")
    with pytest.raises(ProblemError, match="not finite"):
        solve(problem, MLP(2, width=8, depth=1), TrainConfig(steps=5, progress=False))
    inside = PoissonProblem(parse_expression("1/(x[0] + 1)", 2), (0.0, 0.0), (1.0, 1.0))  # the pole outside
    assert math.isfinite(solve(inside, MLP(2, width=8, depth=1), TrainConfig(steps=5, progress=False,
                                                                             n_test=100)).metrics["rel_l2"])


def test_an_exact_solution_not_computed_by_torch_is_an_error_not_zero_derivatives():
    from mscalednn.errors import ProblemError
    through_numpy = PoissonProblem(lambda x: torch.as_tensor(np.sin(x.detach().numpy()[:, 0])), (0.0,), (1.0,))
    with pytest.raises(ProblemError, match="not computed from x by torch operations"):
        through_numpy.f(x64(5, 1))
    smooth = PoissonProblem(parse_expression("sin(pi*x[0])", 1), (0.0,), (1.0,))
    with torch.no_grad():  # derivatives are still taken (they read 0 before)
        assert smooth.grad_u(torch.zeros(1, 1, dtype=torch.float64)).item() == pytest.approx(math.pi)
