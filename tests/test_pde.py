"""Operators other than -Laplace (coefficients, Poisson-Boltzmann), sources without a closed-form
solution, and finite-difference reference solutions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mscalednn import adapt, losses
from mscalednn.cli import _with_reference, main
from mscalednn.conditions import Condition
from mscalednn.config import TrainConfig, load_problem
from mscalednn.derivatives import value_and_grad, value_grad_laplacian
from mscalednn.distributed import SINGLE
from mscalednn.errors import ConfigError
from mscalednn.expr import parse_expression
from mscalednn.geometry import Box, Shell
from mscalednn.nn import MLP
from mscalednn.operator import Operator
from mscalednn.problem import PoissonProblem
from mscalednn.metrics import predict
from mscalednn.reference import GridReference, PointReference, Reference, finite_difference, solve_grid
from mscalednn.train import _interior_loss, chosen_loss, solve

U2 = "sin(pi*x[0])*cos(2*x[1]) + x[0]*x[1]"
A2 = "1 + 0.5*sin(2*pi*x[0])*x[1]"


def operator(dim: int, kappa: str | None = "0.7") -> Operator:
    e = lambda text: parse_expression(text, dim)  # noqa: E731
    return Operator(a=e(A2 if dim == 2 else "2 + cos(3*x[0])"), c=e("1 + x[0]"), kappa=None if kappa is None else e(kappa))


class Closed(torch.nn.Module):
    """A 'network' that is a given function (for losses at the exact solution)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.dummy = fn, torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        return (self.fn(x) + 0 * self.dummy)[:, None]


def test_source_is_the_divergence_form_of_the_exact_solution():
    """f = -div(a grad u*) + c u* + kappa^2 sinh(u*), against nested autograd of the flux."""
    u, op = parse_expression(U2, 2), operator(2)
    problem = PoissonProblem(u, (0.0, 0.0), (1.0, 1.0), operator=op)
    x = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    value = u(x)
    (grad,) = torch.autograd.grad(value.sum(), x, create_graph=True)
    flux = op.a(x)[:, None] * grad
    div = sum(torch.autograd.grad(flux[:, k].sum(), x, create_graph=True)[0][:, k] for k in range(2))
    expected = -div + op.c(x) * value + 0.49 * torch.sinh(value)
    torch.testing.assert_close(problem.f(x.detach()), expected.detach(), rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("derivatives", ["autograd", "forward"])
def test_residual_loss_vanishes_at_the_exact_solution(derivatives):
    """The residual loss of the exact solution is ~0 for the divergence-form operator (the jets
    from nested autograd, and from the forward Laplacian of a network fitted to nothing: there
    only the loss of a network against its own source is ~0)."""
    u, op = parse_expression(U2, 2), operator(2)
    x = torch.rand(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if derivatives == "autograd":
        problem, model = PoissonProblem(u, (0.0, 0.0), (1.0, 1.0), operator=op), Closed(u)
    else:  # a network's own L u as the source: its residual is 0
        model = MLP(2, width=16, depth=2).double()
        problem = PoissonProblem(lambda y: model(y).squeeze(-1), (0.0, 0.0), (1.0, 1.0), operator=op)
    loss, _ = _interior_loss(problem, model, TrainConfig(derivatives=derivatives))
    data = problem.interior_data(x)
    assert data.shape == (300, 6)
    assert loss(x, data).item() < 1e-20
    assert loss(x, data + torch.tensor([1e-3, 0, 0, 0, 0, 0], dtype=torch.float64)).item() == pytest.approx(1e-6)


def test_energy_is_least_at_the_exact_solution():
    """The Ritz energy of the linear operator (a, c) is E(u* + t v) = E(u*) + t^2 Q(v) for v = 0 on
    the boundary (no linear term: u* is its minimiser; Gauss-Legendre quadrature, 48^2 points);
    with the sinh term the minimum stays at t = 0."""
    nodes, weights = np.polynomial.legendre.leggauss(48)
    nodes, weights = (nodes + 1) / 2, weights / 2
    X, Y = np.meshgrid(nodes, nodes, indexing="ij")
    x = torch.as_tensor(np.stack([X.ravel(), Y.ravel()], axis=1))
    w = torch.as_tensor(np.outer(weights, weights).ravel())
    u = parse_expression("sin(pi*x[0])*sin(pi*x[1])", 2)
    for kappa in (None, "0.7"):
        op = operator(2, kappa)
        data = PoissonProblem(u, (0.0, 0.0), (1.0, 1.0), operator=op).interior_data(x)

        def energy(t):
            fn = lambda y: u(y) + t * torch.sin(math.pi * y[:, 0]) * torch.sin(2 * math.pi * y[:, 1])  # noqa: E731
            value, grad = value_and_grad(fn, x, create_graph=False)
            return float((w * op.energy(data, value.detach(), grad)).sum())

        e0, ep, em = energy(0.0), energy(0.1), energy(-0.1)
        assert ep > e0 and em > e0
        if kappa is None:  # quadratic, without a linear term
            assert (ep - e0) == pytest.approx(em - e0, rel=1e-8)
            assert energy(0.2) - e0 == pytest.approx(4 * (ep - e0), rel=1e-8)
    mc = torch.rand(1000, 2, dtype=torch.float64)  # ritz_interior is |Omega| times the mean energy density
    value, grad = value_and_grad(u, mc, create_graph=False)
    data = PoissonProblem(u, (0.0, 0.0), (1.0, 1.0), operator=op).interior_data(mc)
    assert losses.ritz_interior(value, grad, data, 2.5, op).item() == pytest.approx(
        2.5 * op.energy(data, value, grad).mean().item(), rel=1e-12)


def test_estimators_train_the_residual_of_an_operator_without_a_varying_a():
    """c u + kappa^2 sinh(u) keeps the estimator's loss unbiased (u is exact in both estimates);
    an a that varies needs grad u: auto keeps the exact Laplacian, an estimator is refused. (Two hidden
    layers: for one, auto keeps the exact Laplacian anyway.)"""
    e = lambda text: parse_expression(text, 40)  # noqa: E731
    u = e("sum(sin(x))")
    config = TrainConfig(steps=2, progress=False, n_test=100, n_interior=64, n_boundary=32)
    reaction = PoissonProblem(u, (0.0,) * 40, (1.0,) * 40, operator=Operator(c=e("1"), kappa=e("0.5")))
    torch.manual_seed(0)
    assert solve(reaction, MLP(40, width=8, depth=2), config).metrics["derivatives"] == "hutchinson"
    varying = PoissonProblem(u, (0.0,) * 40, (1.0,) * 40, operator=Operator(a=e("1 + x[0]")))
    assert solve(varying, MLP(40, width=8, depth=2), config).metrics["derivatives"] == "auto"
    with pytest.raises(ConfigError, match="train.derivatives: expected auto, forward or autograd for a problem whose"):
        solve(varying, MLP(40, width=8, depth=2), TrainConfig(**{**config.__dict__, "derivatives": "sampled"}))


def test_gauss_newton_is_refused_for_other_operators():
    u = parse_expression("sin(pi*x[0])", 1)
    problem = PoissonProblem(u, (0.0,), (1.0,), operator=Operator(c=parse_expression("1", 1)))
    with pytest.raises(ConfigError, match="expected adam or lbfgs for an operator other than -Laplace"):
        solve(problem, MLP(1, width=8, depth=1), TrainConfig(steps=2, optimizer="gauss_newton", progress=False))


def test_the_linearised_operator_on_a_wave():
    """The adaptive MscaleDNN's least-squares columns: L'(wave) equals the operator applied to the
    wave (a linear operator: exactly), by nested autograd."""
    op = operator(2, None)
    problem = PoissonProblem(parse_expression(U2, 2), (0.0, 0.0), (1.0, 1.0), operator=op)
    x = torch.rand(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    K = torch.tensor([[3.0, -5.0], [7.0, 1.0]], dtype=torch.float64)
    columns = adapt.linearised_waves(x, K, problem.interior_data(x), torch.zeros(64, dtype=torch.float64))
    for j, (k, fn) in enumerate([(K[0], torch.cos), (K[1], torch.cos), (K[0], torch.sin), (K[1], torch.sin)]):
        wave = lambda y, k=k, fn=fn: fn(y @ k)  # noqa: E731
        expected = op.apply(x, *value_grad_laplacian(wave, x, create_graph=False))
        torch.testing.assert_close(columns[:, j], expected.detach(), rtol=1e-10, atol=1e-10)


def nodal_rate(problem: PoissonProblem, u) -> tuple[list[float], float]:
    """The finite-difference solution's largest nodal error against u on 16 ... 128 cells per
    axis (8 ... 32 in 3D), and the rate fitted to them."""
    cells = [8, 16, 32] if problem.dim == 3 else [16, 32, 64, 128]
    errors = []
    for n in cells:
        grid = solve_grid(problem, n)
        axes = [np.linspace(a, b, n + 1) for a, b in zip(problem.lo, problem.hi)]
        nodes = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)
        errors.append(float(np.abs(grid.ravel() - u(torch.as_tensor(nodes)).numpy()).max()))
    return errors, -np.polyfit(np.log(cells), np.log(errors), 1)[0]


@pytest.mark.parametrize("dim,kappa", [(1, None), (2, None), (2, "0.7"), (3, "0.7")])
def test_finite_differences_converge_at_second_order(dim, kappa):
    """The nodal error of the finite-difference solution against a manufactured solution with a
    variable coefficient a, c and (with kappa) the sinh term: fitted rate within 0.2 of 2."""
    text = {1: "sin(3*x[0]) + x[0]**2", 2: U2, 3: "sin(pi*x[0])*cos(x[1])*exp(x[2])"}[dim]
    e = lambda t: parse_expression(t, dim)  # noqa: E731
    u = e(text)
    a = {1: "2 + cos(3*x[0])", 2: A2, 3: "1 + x[0]*x[1] + x[2]**2"}[dim]
    op = Operator(a=e(a), c=e("1 + x[0]"), kappa=None if kappa is None else e(kappa))
    exact = PoissonProblem(u, (0.0,) * dim, (1.0,) * dim, operator=op)
    problem = PoissonProblem(None, exact.lo, exact.hi, operator=op, source=exact.f, boundary=u)
    errors, rate = nodal_rate(problem, u)
    assert abs(rate - 2) < 0.2, (errors, rate)


@pytest.mark.parametrize("dim,kind", [(1, "robin"), (2, "robin"), (2, "neumann"), (3, "robin")])
def test_finite_differences_with_neumann_and_robin_faces_converge_at_second_order(dim, kind):
    """Robin (alpha = 1 + x_0) or Neumann (with c > 0) data on every face of the box, g derived
    from u* with each face's own normal (the corners too): the nodal error falls at rate 2."""
    text = {1: "cos(3*x[0]) + x[0]**2", 2: U2, 3: "sin(pi*x[0])*cos(x[1])*exp(x[2])"}[dim]
    e = lambda t: parse_expression(t, dim)  # noqa: E731
    u = e(text)
    op = Operator(a=e("2 + x[0]*x[dim-1]".replace("dim-1", str(dim - 1))), c=e("1 + x[0]"), kappa=None)
    condition = Condition("robin", None, e("1 + x[0]")) if kind == "robin" else Condition("neumann")
    problem = PoissonProblem(u, (0.0,) * dim, (1.0,) * dim, operator=op, conditions=(("boundary", condition),))
    errors, rate = nodal_rate(problem, u)
    assert abs(rate - 2) < 0.25, (errors, rate)


@pytest.mark.parametrize("dim", [2, 3])
def test_finite_differences_on_a_box_with_dirichlet_neumann_and_robin_faces(dim):
    """Named faces with different conditions (the box's other faces Dirichlet): rate 2 at the
    nodes, the corners between a Dirichlet and a Neumann face included."""
    e = lambda t: parse_expression(t, dim)  # noqa: E731
    u = e(U2 if dim == 2 else "sin(pi*x[0])*cos(x[1])*exp(x[2])")
    hi = (2.0, 1.0) if dim == 2 else (1.0, 1.0, 1.0)
    # the Dirichlet part is named last: at the corners it shares with the others, the nodes still
    # take its data (u*), not the neighbouring face's du/dn
    box = Box((0.0,) * dim, hi, name="inlet", faces=((2, "walls"), (3, "walls"), (1, "outlet")))
    conditions = (("walls", Condition()), ("inlet", Condition("neumann")), ("outlet", Condition("robin", None, e("2 + x[1]"))))
    problem = PoissonProblem.on(box, u, operator=Operator(a=e("1 + 0.5*x[1]")), conditions=conditions)
    errors, rate = nodal_rate(problem, u)
    assert abs(rate - 2) < 0.25, (errors, rate)


def test_the_reference_estimates_its_own_error():
    """Richardson's estimate from h and 2h is within a factor 1.5 of the true error (values between
    the nodes included), and the interpolated gradient is second-order accurate too."""
    u = parse_expression(U2, 2)
    exact = PoissonProblem(u, (0.0, 0.0), (1.0, 1.0), operator=operator(2))
    problem = PoissonProblem(None, exact.lo, exact.hi, operator=exact.operator, source=exact.f, boundary=u)
    reference = finite_difference(problem, cells=64)
    x = torch.rand(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    true = float((reference.values(x) - u(x)).norm() / u(x).norm())
    assert true / 1.5 < reference.error < true * 1.5
    grad_error = float((reference.gradient(x) - exact.grad_u(x)).norm() / exact.grad_u(x).norm())
    assert grad_error < 20 * true


def test_interpolation_is_exact_for_multilinear_functions(tmp_path):
    lo, hi = (-1.0, 0.0), (1.0, 2.0)
    nodes = [np.linspace(a, b, 9) for a, b in zip(lo, hi)]
    X, Y = np.meshgrid(*nodes, indexing="ij")
    reference = GridReference(lo=lo, hi=hi, u=3 * X * Y - X + 2, error=1e-3, seconds=1.5)
    x = torch.rand(100, 2, dtype=torch.float64) * torch.tensor([2.0, 2.0]) + torch.tensor([-1.0, 0.0])
    torch.testing.assert_close(reference.values(x), 3 * x[:, 0] * x[:, 1] - x[:, 0] + 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(reference.gradient(x), torch.stack([3 * x[:, 1] - 1, 3 * x[:, 0]], 1), rtol=0, atol=1e-12)
    reference.save(tmp_path)
    back = Reference.load(tmp_path)
    assert back.lo == lo and back.hi == hi and back.error == 1e-3 and back.kind == "finite-difference"
    assert np.array_equal(back.u, reference.u)
    assert Reference.load(tmp_path / "nothing") is None


def test_a_problem_file_without_exact_solution_is_solved_against_its_reference(tmp_path, monkeypatch):
    """f and g given: metrics.json names the reference and its error; the reference is kept in the
    run directory and read from there again (a resumed run does not compute it)."""
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ndim: 1\noperator: {a: '1 + x[0]**2', kappa: 1}\nf: 'exp(x[0])'\ng: 'x[0]'\n")
    out = tmp_path / "run"
    rc = main(["solve", str(path), "--out", str(out), "--set", "train.steps=30", "--set", "train.progress=false",
               "--set", "train.n_test=200"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["reference"] == "finite-difference" and 0 < m["reference_error"] < 1e-6
    assert math.isfinite(m["rel_l2"]) and (out / "reference.npz").is_file()
    problem, _ = load_problem(path)

    def never(*args, **kwargs):
        raise AssertionError("the reference was computed again")

    monkeypatch.setattr("mscalednn.reference.finite_difference", never)
    again = _with_reference(problem, out, SINGLE)
    assert np.array_equal(again.reference.u, Reference.load(out).u)
    x = torch.linspace(0, 1, 11, dtype=torch.float64)[:, None]
    torch.testing.assert_close(again.u(x)[[0, -1]], torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_the_exact_solution_and_a_given_source_must_agree(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("dim: 2\nexact: 'sin(pi*x[0])*sin(pi*x[1])'\nf: '2*pi**2*sin(pi*x[0])*sin(pi*x[1])'\ng: 0\n")
    problem, _ = load_problem(path)  # consistent: accepted
    assert problem.source is not None and problem.has_exact
    path.write_text("dim: 2\nexact: 'sin(pi*x[0])*sin(pi*x[1])'\nf: 'pi**2*sin(pi*x[0])*sin(pi*x[1])'\n")
    with pytest.raises(ConfigError, match=r"f: expected f = L u\*"):
        load_problem(path)


def test_the_poisson_boltzmann_tutorial_solution_satisfies_the_interface_conditions():
    """problems/poisson_boltzmann3d.yaml: u and eps du/dn are continuous across r = 0.5 and r = 0.7
    (from both sides, 1e-7 apart), u solves -div(eps grad u) = rho inside each shell (the given f
    agrees with L u*: checked when the file loads), and u = Q / (4 pi 5 r) outside."""
    problem, _ = load_problem(Path(__file__).resolve().parents[1] / "problems" / "poisson_boltzmann3d.yaml")
    assert problem.operator.jumps and problem.source is not None
    n = torch.nn.functional.normalize(torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)), dim=1)
    for r in (0.5, 0.7):
        inside, outside = n * (r - 1e-7), n * (r + 1e-7)
        u_in, u_out = problem.u(inside), problem.u(outside)
        torch.testing.assert_close(u_in, u_out, rtol=0, atol=1e-6)
        flux = [(problem.operator.a(y) * (problem.grad_u(y) * n).sum(1)) for y in (inside, outside)]
        torch.testing.assert_close(flux[0], flux[1], rtol=1e-5, atol=0)
    far = n * 0.9
    torch.testing.assert_close(problem.u(far), torch.full((64,), (4 / 3 * math.pi * 0.125) / (4 * math.pi * 5 * 0.9),
                                                          dtype=torch.float64), rtol=1e-12, atol=0)
    with pytest.warns(UserWarning, match="the residual loss does not see the jump"):
        solve(problem, MLP(3, width=8, depth=1), TrainConfig(steps=1, progress=False, n_test=50, n_interior=16,
                                                              n_boundary=16, loss="residual"))


@pytest.mark.parametrize("name,loss", [("poisson_boltzmann3d", "residual"), ("oscillatory_coefficient2d", "ritz"),
                                       ("poisson_boltzmann_nonlinear2d", "residual"), ("poisson10d", "residual")])
def test_the_automatic_loss(name, loss):
    """train.loss: auto takes Ritz where a jumps or oscillates (roughness above 11), else the residual;
    where a jumps across an interface the problem states, the residual with interface conditions."""
    problem, _ = load_problem(Path(__file__).resolve().parents[1] / "problems" / f"{name}.yaml")
    chosen, why = chosen_loss(TrainConfig(), problem)
    assert chosen == loss, why
    assert chosen_loss(TrainConfig(loss="residual"), problem) == ("residual", "set")
    if problem.operator.a is not None and not problem.operator.jumps:
        rough = float(why.split("roughness of a ")[1].split(" ")[0])
        assert (rough > 16) == (loss == "ritz")


def annulus(exact: str = "exp(-sum(x**2)) + 0.1*sin(3*x[0] + 2*x[1])") -> PoissonProblem:
    e = lambda text: parse_expression(text, 2)  # noqa: E731
    return PoissonProblem.on(Shell((0.0, 0.0), 0.5, 1.0), e(exact), operator=Operator(a=e("1 + 0.3*x[0]")),
                             conditions=(("inner", Condition("neumann")), ("outer", Condition("robin", alpha=e("2")))))


def test_each_boundary_condition_holds_for_the_exact_solution():
    """Neumann on the inner circle, Robin on the outer one: the derived data are du*/dn and
    2 u* + du*/dn with n the outward normal (inward on the inner circle), and the residual
    loss's boundary term at u* is ~0."""
    problem = annulus()
    theta = torch.linspace(0, 2 * math.pi, 41, dtype=torch.float64)[:-1]
    ring = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    x = torch.cat([0.5 * ring, ring])
    data = problem.boundary_data(x)
    assert data.shape == (80, 6)
    u, grad = value_and_grad(problem.exact, x, create_graph=False)
    radial = (grad * ring.repeat(2, 1)).sum(1).detach()
    torch.testing.assert_close(data[:40, 0], -radial[:40], rtol=1e-12, atol=1e-12)  # du/dn, n = -x/|x|
    torch.testing.assert_close(data[40:, 0], 2 * u[40:].detach() + radial[40:], rtol=1e-12, atol=1e-12)
    assert data[:40, 1:3].tolist() == [[0.0, 1.0]] * 40 and data[40:, 1:3].tolist() == [[2.0, 1.0]] * 40
    torch.testing.assert_close(data[:, 3], 1 + 0.3 * x[:, 0])  # a, for the Ritz loss's natural terms
    penalty, natural = losses.boundary_terms(u.detach(), (grad * data[:, 4:]).sum(1).detach(), data, ritz=False)
    assert penalty.item() < 1e-28 and natural.item() == 0.0
    off, _ = losses.boundary_terms(u.detach() + 0.1, (grad * data[:, 4:]).sum(1).detach(), data, ritz=False)
    assert off.item() == pytest.approx(0.5 * 0.2 ** 2)  # Neumann points see no shift, Robin ones 2 x 0.1


def test_the_ritz_energy_with_natural_conditions_is_least_at_the_solution():
    """Energy + natural boundary terms (Neumann -a g u, Robin a (alpha u^2 / 2 - g u)) on the
    annulus, by quadrature (Gauss in r, trapezoid in theta): no linear term at u* for a
    perturbation that does not vanish on the boundary, so E(u* + t v) - E(u*) is even in t."""
    problem = annulus()
    r, w_r = np.polynomial.legendre.leggauss(40)
    r, w_r = 0.75 + 0.25 * r, 0.25 * w_r
    theta = np.linspace(0, 2 * np.pi, 128, endpoint=False)
    R, T = np.meshgrid(r, theta, indexing="ij")
    x = torch.as_tensor(np.stack([(R * np.cos(T)).ravel(), (R * np.sin(T)).ravel()], 1))
    w = torch.as_tensor((np.outer(w_r, np.full(128, 2 * np.pi / 128)) * R).ravel())
    data = problem.interior_data(x)
    ring = np.stack([np.cos(theta), np.sin(theta)], 1)
    x_b = torch.as_tensor(np.concatenate([0.5 * ring[::2], ring]))  # 64 + 128 points: counts in proportion to length
    data_b = problem.boundary_data(x_b)
    length = 2 * math.pi * 1.5

    def energy(t):
        fn = lambda y: problem.exact(y) + t * torch.cos(2 * y[:, 0] + y[:, 1])  # noqa: E731
        value, grad = value_and_grad(fn, x, create_graph=False)
        inner = float((w * problem.operator.energy(data, value.detach(), grad)).sum())
        _, natural = losses.boundary_terms(fn(x_b), None, data_b, ritz=True, weight=length)
        return inner + float(natural)

    e0, ep, em = energy(0.0), energy(0.1), energy(-0.1)
    assert ep > e0 and em > e0
    assert ep - e0 == pytest.approx(em - e0, rel=1e-6)


def test_a_problem_with_neumann_and_robin_parts_trains(tmp_path):
    """problems/annulus2d.yaml loads, and both losses lower the error of a small network in a few
    hundred steps (the residual with du/dn on the boundary, the Ritz loss with natural terms;
    measured: 1.05 -> 0.045 and 0.83 -> 0.05 in 900 steps)."""
    problem, _ = load_problem(Path(__file__).resolve().parents[1] / "problems" / "annulus2d.yaml")
    assert {n: c.kind for n, c in problem.conditions} == {"inner": "neumann", "outer": "robin"}
    small = annulus()
    for loss in ("residual", "ritz"):
        torch.manual_seed(0)
        result = solve(small, MLP(2, width=24, depth=2), TrainConfig(steps=900, loss=loss, lr=3e-3, progress=False,
                                                                     n_test=400, eval_every=900, dtype="float64",
                                                                     n_interior=256, n_boundary=128))
        assert result.history[1]["rel_l2"] > 10 * result.metrics["rel_l2"], loss
        assert result.metrics["rel_l2"] < 0.1, (loss, result.metrics["rel_l2"])


ANNULUS = "name: ring\ndim: 2\ndomain: {shell: {center: 0, inner: 0.4, outer: 1}}\nf: 'exp(x[0])'\ng: 0\n"


def _ring_reference(path: Path, n: int = 3000, gradients: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A file of 'reference' values: a known function (not the PDE's solution: the test checks
    what the errors are measured against, not the solve) at n points of the annulus."""
    x = Shell((0.0, 0.0), 0.4, 1.0).sample_interior(n, np.random.default_rng(8))
    u = np.sin(x[:, 0]) + x[:, 1] ** 2
    arrays = {"x": x, "u": u}
    if gradients:
        arrays["grad_u"] = np.stack([np.cos(x[:, 0]), 2 * x[:, 1]], axis=1)
    np.savez(path, **arrays)
    return x, u


@pytest.mark.parametrize("gradients", [True, False])
def test_a_reference_file_is_what_the_errors_are_measured_against(tmp_path, gradients):
    """reference: FILE.npz (relative to the problem file) on a domain no grid covers: the errors in
    metrics.json are the network's errors at the file's own points against its values, computed
    here again from the saved model; without grad_u there is no H1 error (null), and the run says
    so instead of failing."""
    x, u = _ring_reference(tmp_path / "sol.npz", gradients=gradients)
    path = tmp_path / "ring.yaml"
    path.write_text(ANNULUS + "reference: {file: sol.npz, error: 1e-5}\n")
    problem, _ = load_problem(path)
    assert isinstance(problem.reference, PointReference) and problem.reference_kind == "file"
    out = tmp_path / "run"
    rc = main(["solve", str(path), "--out", str(out), "--model", str(Path(__file__).parents[1] / "configs/vanilla.yaml"),
               "--set", "train.steps=20", "--set", "train.progress=false", "--set", "train.n_test=5000"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["reference"] == "file" and m["reference_error"] == 1e-5
    from mscalednn import load_model
    model = load_model(out / "model.pt").double()
    err = predict(model, x) - u
    assert m["rel_l2"] == pytest.approx(float(np.linalg.norm(err) / np.linalg.norm(u)), rel=1e-5)
    assert m["rel_max"] == pytest.approx(float(np.abs(err).max() / np.abs(u).max()), rel=1e-5)
    assert (m["rel_h1"] is not None) == gradients


def test_a_reference_file_interpolates_between_its_points(tmp_path):
    """Away from its points (the plots) a file's values come from linear interpolation: a linear
    function comes back exactly inside the points' hull, a smooth one to O(h^2)."""
    x = np.random.default_rng(2).random((4000, 2))
    ref = PointReference(x=x, u=2 * x[:, 0] - x[:, 1] + 1, grad=np.tile([2.0, -1.0], (4000, 1)))
    y = torch.as_tensor(np.random.default_rng(3).uniform(0.2, 0.8, (500, 2)))
    torch.testing.assert_close(ref.values(y), 2 * y[:, 0] - y[:, 1] + 1, rtol=0, atol=1e-12)
    torch.testing.assert_close(ref.gradient(y), torch.tensor([[2.0, -1.0]], dtype=torch.float64).expand(500, 2))
    smooth = PointReference(x=x, u=np.sin(3 * x[:, 0]) * x[:, 1])
    assert float((smooth.values(y) - torch.sin(3 * y[:, 0]) * y[:, 1]).abs().max()) < 5e-3
    assert smooth.gradient(y) is None and not smooth.has_gradient
    ref.save(tmp_path)
    back = Reference.load(tmp_path)
    assert isinstance(back, PointReference) and np.array_equal(back.x, x) and np.array_equal(back.grad, ref.grad)


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((5, 2))}, r"u missing"),
    ({"x": np.zeros((5, 3)), "u": np.zeros(5)}, r"expected x \[M, 2\], u \[M\]"),
    ({"x": np.full((5, 2), 0.7), "u": np.zeros(4)}, r"u \[4\]"),
    ({"x": np.full((5, 2), 0.7), "u": np.array([0, 1, np.nan, 0, 0])}, r"u is not finite at 1 points"),
    ({"x": np.array([[0.7, 0.0], [0.1, 0.1], [0.0, 0.8]]), "u": np.zeros(3)}, r"1 of 3 points lie outside the domain, "
                                                                             r"e.g. x = \(0.1, 0.1\)"),
])
def test_a_bad_reference_file_is_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "sol.npz", **arrays)
    path = tmp_path / "ring.yaml"
    path.write_text(ANNULUS + "reference: sol.npz\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_problem(path)
    assert "\n" not in str(info.value)
