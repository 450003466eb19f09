"""Training-loop pieces: schedules, seeding, divergence."""

import math

import pytest
import torch
from torch import nn

from mscalednn import PoissonProblem, TrainConfig, parse_expression, solve
from mscalednn.train import BETA_STAGES, boundary_weight, learning_rate


def test_learning_rate_schedules():
    c = TrainConfig(lr=1e-2, lr_final=0.01, lr_schedule="exponential")
    assert learning_rate(c, 0.0) == pytest.approx(1e-2)
    assert learning_rate(c, 0.5) == pytest.approx(1e-3)
    assert learning_rate(c, 1.0) == pytest.approx(1e-4)
    step = TrainConfig(lr=1.0, lr_final=0.001, lr_schedule="step", lr_drops=3)
    assert [learning_rate(step, t) for t in (0.0, 0.34, 0.67, 0.99)] == pytest.approx([1, 0.1, 0.01, 0.01])
    cos = TrainConfig(lr=1.0, lr_final=0.1, lr_schedule="cosine")
    assert [learning_rate(cos, t) for t in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.55, 0.1])
    assert learning_rate(TrainConfig(lr=0.3, lr_schedule="constant"), 0.9) == 0.3


def test_staged_boundary_weight():
    c = TrainConfig(beta=2.0, beta_schedule="staged")
    assert [boundary_weight(c, t) for t, _ in BETA_STAGES] == [2.0 * m for _, m in BETA_STAGES]
    assert boundary_weight(c, 0.05) == 2.0 and boundary_weight(c, 0.99) == 1000.0
    assert boundary_weight(TrainConfig(beta=7.0), 0.99) == 7.0


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.w * x.sum(dim=1, keepdim=True) * float("nan")


def test_divergence_is_never_reported_as_result():
    problem = PoissonProblem(parse_expression("sum(x**2)", 2), (0.0, 0.0), (1.0, 1.0))
    result = solve(problem, NaNNet(), TrainConfig(steps=50, n_test=100, progress=False))
    assert result.metrics["status"] == "diverged"
    assert result.metrics["steps"] == 0
    assert result.metrics["rel_l2"] is None


def test_time_limit_stops_training():
    problem = PoissonProblem(parse_expression("sum(x**2)", 2), (0.0, 0.0), (1.0, 1.0))
    result = solve(problem, nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)),
                   TrainConfig(steps=10**7, time_limit=1.0, n_test=100, eval_every=10**6, progress=False))
    m = result.metrics
    assert m["status"] == "completed" and 1.0 <= m["train_time_s"] < 2.0 and 1 < m["steps"] < 10**7
    assert math.isfinite(m["rel_l2"])
