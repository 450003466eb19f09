"""A coefficient that jumps across an interface: the residual loss with interface conditions and
a network per side (problem key ``interface:``, mscalednn.nn.Piecewise)."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mscalednn import Ball, TrainConfig, load_model, load_problem
from mscalednn.cli import main
from mscalednn.metrics import EvalSet, evaluate
from mscalednn.nn import Piecewise
from mscalednn.train import _interface_loss, interface_weights

ROOT = Path(__file__).resolve().parents[1]
PB3D = ROOT / "problems" / "poisson_boltzmann3d.yaml"
FAST = ["--set", "train.eval_every=10", "--set", "train.n_test=400", "--set", "train.n_interior=256",
        "--set", "train.n_boundary=128", "--set", "train.progress=false"]


class Radial(nn.Module):
    """u(x) = phi(|x|) for a function phi of r (a torch function), output [N, 1]."""

    def __init__(self, phi):
        super().__init__()
        self.phi = phi

    def forward(self, x):
        return self.phi(x.norm(dim=1, keepdim=True))


# the tutorial problem's solution (problems/poisson_boltzmann3d.yaml), each side's formula
# continued across the sphere r = 0.7: smooth on its own side, as a network per side is
INNER = Radial(lambda r: torch.where(r < 0.5, 13 / 168 - r ** 2 / 6, 1 / (24 * r) - 1 / 21))
OUTER = Radial(lambda r: 1 / (120 * r))


def loss_of(model, problem, n=4000, seed=0, **train):
    config = TrainConfig(n_boundary=500, seed=seed, **train)
    x = problem.points(n, torch.Generator().manual_seed(seed))
    return float(_interface_loss(problem, model, config)(x, problem.interior_data(x)).detach())


def test_the_exact_solution_has_zero_residual_and_satisfies_the_interface_conditions():
    problem, _ = load_problem(PB3D)
    shape = problem.interface
    w_u, w_f = interface_weights(TrainConfig())
    assert (w_u, w_f) == (1000.0, pytest.approx(math.sqrt(1000.0)))
    assert loss_of(Piecewise(INNER, OUTER, shape).double(), problem) < 1e-24
    # a jump of u of 0.01 across the sphere costs w_u * 1e-4 and nothing else (1/r is harmonic)
    shifted = Radial(lambda r: 1 / (120 * r) + 0.01)
    assert loss_of(Piecewise(INNER, shifted, shape), problem) == pytest.approx(w_u * 1e-4, rel=1e-9)
    # continuous u whose outer slope is 5x too steep: eps_out du/dn = -25 / (120 r^2) against the
    # inner -1 / (24 r^2): the flux jumps by 4 / (24 r^2) at r = 0.7, and nothing else changes
    steep = Radial(lambda r: 5 / (120 * r) - 4 / 84)
    assert abs(5 / (120 * 0.7) - 4 / 84 - (1 / (24 * 0.7) - 1 / 21)) < 1e-15
    expected = w_f * (4 / (24 * 0.7 ** 2)) ** 2
    assert loss_of(Piecewise(INNER, steep, shape), problem) == pytest.approx(expected, rel=1e-9)


def test_interface_points_are_on_the_sphere_inside_the_domain_with_outward_normals():
    problem, _ = load_problem(PB3D)
    x, n = problem.interface_points(2000, seed=3)
    assert x.shape == n.shape == (2000, 3)
    assert torch.allclose(x.norm(dim=1), torch.full((2000,), 0.7, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(n, x / 0.7, atol=1e-12)
    assert torch.equal(x, problem.interface_points(2000, seed=3)[0])  # drawn from the seed alone
    # uniform on the sphere: each coordinate of a uniform point on the unit sphere is U(-1, 1)
    from scipy import stats
    for k in range(3):
        assert stats.kstest(x[:, k].numpy() / 0.7, "uniform", args=(-1, 2)).pvalue > 1e-3
    # a sphere that leaves the box keeps only its part inside
    cut = dataclasses.replace(problem, interface=Ball((0.0, 0.0, 0.0), 1.2))
    y, _ = cut.interface_points(500, seed=0)
    assert (y.abs() < 1).all() and torch.allclose(y.norm(dim=1), torch.full((500,), 1.2, dtype=torch.float64))


def test_solve_with_the_interface_trains_a_network_per_side_and_reloads(tmp_path):
    out = tmp_path / "run"
    assert main(["solve", str(PB3D), "--set", "train.loss=residual", "--set", "train.steps=120", "--out", str(out),
                 *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["loss_kind"] == "residual" and m["status"] == "completed"
    net = load_model(out)
    assert isinstance(net, Piecewise) and net.shape.radius == 0.7
    assert sum(p.numel() for p in net.parameters()) == m["params"]
    problem, _ = load_problem(PB3D)
    assert math.isclose(evaluate(net, EvalSet.build(problem, 400))["rel_l2"], m["rel_l2"], rel_tol=1e-5)
    errors = [float(r["rel_l2"]) for r in csv.DictReader((out / "history.csv").open()) if r["rel_l2"]]
    assert len(errors) == 13 and errors[-1] < 0.95 * errors[0]  # it trains (0.71 against 0.76 at step 1)


def test_resume_with_the_interface_is_the_uninterrupted_run(tmp_path):
    from mscalednn import Checkpointing, ModelConfig, seed_everything, solve
    from mscalednn.train import build_network
    problem, _ = load_problem(PB3D)
    config = TrainConfig(steps=30, eval_every=10, checkpoint_every=10, dtype="float64", n_test=400, n_interior=256,
                         n_boundary=128, progress=False, lr=3e-3, ema=0.9)
    model_config = ModelConfig("mscale", {"width": 24, "depth": 2, "activation": "tanh", "scales": [1, 2, 4]})

    def run(**kwargs):
        seed_everything(0)
        model = build_network(model_config, config, problem)
        assert isinstance(model, Piecewise)
        return solve(problem, model, config, **kwargs)

    full = run()
    calls = {"n": 0}

    def stop():  # a request to stop after step 17: between two checkpoints
        calls["n"] += 1
        return calls["n"] == 17

    part = run(checkpoint=Checkpointing(tmp_path / "ck.pt"), stop=stop)
    assert part.metrics["status"] == "interrupted" and part.metrics["steps"] == 17
    resumed = run(resume=torch.load(tmp_path / "ck.pt", weights_only=True))
    assert resumed.metrics["steps"] == 30
    assert [r["rel_l2"] for r in resumed.history if "rel_l2" in r] == [r["rel_l2"] for r in full.history if "rel_l2" in r]
    assert resumed.metrics["rel_l2"] == full.metrics["rel_l2"]


@pytest.mark.parametrize("extra, key", [
    (["train.derivatives=hutchinson"], "train.derivatives"),
    (["train.optimizer=gauss_newton"], "train.optimizer"),
])
def test_what_the_interface_cannot_train_with_is_one_line_and_writes_nothing(extra, key, tmp_path, capsys):
    out = tmp_path / "run"
    sets = [a for e in extra for a in ("--set", e)]
    assert main(["solve", str(PB3D), "--set", "train.loss=residual", *sets, "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mscale: error: ") and key in err[0], err
    assert not out.exists()


def test_the_default_loss_uses_the_interface_where_one_is_stated_and_ritz_where_not(tmp_path):
    from mscalednn.train import chosen_loss
    problem, _ = load_problem(PB3D)
    assert chosen_loss(TrainConfig(), problem)[0] == "residual"
    assert chosen_loss(TrainConfig(), dataclasses.replace(problem, interface=None))[0] == "ritz"
    out = tmp_path / "run"
    assert main(["solve", str(PB3D), "--set", "train.steps=4", "--out", str(out), *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["loss_kind"] == "residual" and np.isfinite(m["rel_l2"])
    assert isinstance(load_model(out), Piecewise)
