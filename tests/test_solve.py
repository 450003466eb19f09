"""End-to-end accuracy: the solver reaches small errors against exact solutions."""

import math

import torch

from mscalednn import MLP, PoissonProblem, TrainConfig, parse_expression, seed_everything, solve


def test_1d_poisson_solved_to_1e_minus_3():
    """-u'' = pi^2 sin(pi x) on [-1, 1], u(+-1) = 0; exact u* = sin(pi x)."""
    problem = PoissonProblem(parse_expression("sin(pi*x[0])", 1), (-1.0,), (1.0,), "sin1d")
    seed_everything(0)
    model = MLP(1, width=40, depth=3, activation="tanh")
    config = TrainConfig(loss="residual", beta=10.0, steps=3000, n_interior=256, n_boundary=2, sampler="sobol",
                         eval_every=1000, n_test=1001, dtype="float64", progress=False)
    result = solve(problem, model, config)
    errors = [row["rel_l2"] for row in result.history if "rel_l2" in row]  # the evaluation rows
    assert result.metrics["rel_l2"] < 1e-3, errors
    assert errors[-1] < errors[1] < errors[0]  # it converges, not just lands there
    assert result.metrics["rel_h1"] < 1e-2


def test_ritz_loss_learns_smooth_2d_solution():
    """-Laplace u = 2 pi^2 sin(pi x) sin(pi y) on [0,1]^2, zero boundary data, Ritz loss.

    The Ritz energy's minimum is -1/2 int |grad u*|^2 = -pi^2/4; the boundary penalty
    (beta = 100) leaves an O(1/beta) error, about 2.5% here.
    """
    problem = PoissonProblem(parse_expression("prod(sin(pi*x))", 2), (0.0, 0.0), (1.0, 1.0))
    seed_everything(1)
    model = MLP(2, width=32, depth=2)
    config = TrainConfig(loss="ritz", beta=100.0, lr=1e-2, steps=3000, n_interior=1024, n_boundary=256,
                         sampler="sobol", eval_every=500, n_test=2500, dtype="float64", progress=False)
    result = solve(problem, model, config)
    assert result.metrics["rel_l2"] < 4e-2, result.history
    energy = result.history[-1]["loss_interior"]
    assert abs(energy - (-math.pi**2 / 4)) < 0.06 * math.pi**2 / 4
