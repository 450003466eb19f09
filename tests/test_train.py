"""Training-loop pieces: schedules, seeding, divergence."""

import copy
import io
import math
import sys

import pytest
import torch
from torch import nn

from mscalednn import MLP, ConfigError, PoissonProblem, TrainConfig, losses, parse_expression, solve
from mscalednn import train as train_module
from mscalednn.config import build_run_config
from mscalednn.derivatives import value_grad_laplacian
from mscalednn.progress import BudgetBar, budget_fraction
from mscalednn.train import BETA_STAGES, boundary_weight, learning_rate


def test_learning_rate_schedules():
    c = TrainConfig(lr=1e-2, lr_final=0.01, lr_schedule="exponential")
    assert learning_rate(c, 0.0) == pytest.approx(1e-2)
    assert learning_rate(c, 0.5) == pytest.approx(1e-3)
    assert learning_rate(c, 1.0) == pytest.approx(1e-4)
    step = TrainConfig(lr=1.0, lr_final=0.001, lr_schedule="step", lr_drops=3)
    # three drops, at 1/4, 1/2 and 3/4 of the budget: the last quarter runs at lr * lr_final
    assert [learning_rate(step, t) for t in (0.0, 0.24, 0.26, 0.51, 0.76, 0.99)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001, 0.001])
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


class FakeClock:
    """time.perf_counter for the training loop: every call advances ``tick`` seconds, so a time
    budget is exercised exactly, on any machine."""

    def __init__(self, tick=0.125):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


SQUARES = PoissonProblem(parse_expression("sum(x**2)", 2), (0.0, 0.0), (1.0, 1.0))


def tiny_net():
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def test_time_limit_stops_training_at_the_first_step_past_it(monkeypatch):
    monkeypatch.setattr(train_module.time, "perf_counter", FakeClock(0.125))  # each step takes 0.125 s
    result = solve(SQUARES, tiny_net(), TrainConfig(steps=10**7, time_limit=1.0, n_test=100, eval_every=10**6,
                                                    progress=False))
    m = result.metrics
    assert m["status"] == "completed" and m["steps"] == 8 and m["train_time_s"] == 1.0
    assert math.isfinite(m["rel_l2"])


def test_progress_bar_follows_the_budget_that_ends_the_run(monkeypatch):
    """A time budget with a huge step cap: the bar counts the time budget (it ends at 100%), not
    10^9 steps (which showed 0% and an ETA of thousands of hours)."""
    assert budget_fraction(100, None, 25, 99.0) == 0.25
    assert budget_fraction(10**9, 60.0, 25, 15.0) == 0.25 and budget_fraction(100, 60.0, 50, 15.0) == 0.5
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert BudgetBar(10**9, 2.0).bar.disable  # stderr not a terminal: no bar (a log file stays clean)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = BudgetBar(10**9, 2.0)
    bar.update(8, 1.0, loss=0.5)
    text = str(bar.bar)
    bar.close()
    assert text.startswith("budget 2 s or 1,000,000,000 steps:  50%|") and "step 8, loss=5.00e-01" in text
    seen = []

    class Recording(BudgetBar):
        def close(self):
            seen.append((self.bar.n, self.bar.total, self.values))
            super().close()

    monkeypatch.setattr(train_module, "BudgetBar", Recording)
    monkeypatch.setattr(train_module.time, "perf_counter", FakeClock(0.125))
    result = solve(SQUARES, tiny_net(), TrainConfig(steps=10**9, time_limit=2.0, n_test=100, eval_every=10**6))
    assert result.metrics["steps"] == 16
    assert seen[0][:2] == (pytest.approx(100.0), 100.0) and "rel_l2" in seen[0][2]


def test_loss_is_logged_every_few_steps_and_rows_are_measured_at_one_set_of_parameters():
    """Every history row's numbers belong to the parameters after ``step`` updates: the loss
    rows (every log_every steps) and the evaluation rows, whose loss is recomputed after the
    update (it was the loss before the update, beside errors after it)."""
    checked = []

    def hook(state):
        if state.evaluated:  # recompute the loss of the row's parameters on the row's batch
            x_in, x_bd, f, g = state.batch
            _, _, lap = value_grad_laplacian(state.model, x_in)
            interior = losses.residual_interior(lap, f).item()
            boundary = losses.boundary_penalty(state.model(x_bd).squeeze(-1), g).item()
            row = state.history[-1]
            assert row["step"] == state.step and "rel_l2" in row
            assert row["loss_interior"] == pytest.approx(interior, rel=1e-10)
            assert row["loss_boundary"] == pytest.approx(boundary, rel=1e-10)
            checked.append(state.step)

    initial, first_batch = None, []

    def keep_first_batch(state):
        if state.step == 1:
            first_batch.append(state.batch)

    config = TrainConfig(steps=60, eval_every=25, log_every=5, n_test=100, n_interior=64, n_boundary=16,
                         dtype="float64", progress=False, lr=1e-2, derivatives="autograd")
    net = tiny_net().double()
    initial = copy.deepcopy(net)
    result = solve(SQUARES, net, config, hooks=[hook, keep_first_batch])
    assert checked == [1, 25, 50, 60]
    # the step-0 row: the loss of the initial parameters, on the batch step 1 trained on
    x_in, x_bd, f, g = first_batch[0]
    assert result.history[0]["step"] == 0 and result.history[0]["loss_interior"] == pytest.approx(
        losses.residual_interior(value_grad_laplacian(initial, x_in)[2], f).item(), rel=1e-10)
    assert [r["step"] for r in result.history if "rel_l2" in r] == [1, 25, 50, 60]
    assert [r["step"] for r in result.history if "rel_l2" not in r] == [0, 5, 10, 15, 20, 30, 35, 40, 45, 55]
    losses_logged = [r["loss"] for r in result.history]
    assert losses_logged[-1] < 0.5 * losses_logged[0]  # and it trains


def test_the_ritz_loss_is_compiled_when_asked(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or fn)
    net = tiny_net()
    solve(SQUARES, net, TrainConfig(loss="ritz", compile=True, steps=3, n_test=100, progress=False))
    assert len(compiled) == 2 and compiled[1] is net  # the interior loss, and the network for the boundary term


def test_the_ritz_loss_refuses_the_hutchinson_estimator():
    with pytest.raises(ConfigError, match="train.derivatives: expected auto, forward or autograd with the Ritz loss"):
        build_run_config({"train": {"loss": "ritz", "derivatives": "hutchinson"}})


def test_recording_the_loss_does_not_change_training_with_random_probes():
    """Hutchinson's probes come from torch's generator: the loss recorded at an evaluation must
    not draw from it, or how often one evaluates would change the trained network."""
    finals = []
    for eval_every in (2, 1000):
        torch.manual_seed(0)
        net = MLP(2, width=8, depth=2).double()  # the forward pass draws the probes
        solve(SQUARES, net, TrainConfig(steps=6, eval_every=eval_every, derivatives="hutchinson", probes=2, n_test=100,
                                        n_interior=32, n_boundary=8, dtype="float64", progress=False))
        finals.append(torch.cat([p.detach().reshape(-1) for p in net.parameters()]))
    assert torch.equal(finals[0], finals[1])


def test_output_scaling_removes_the_plateau_at_the_mean():
    """u* = 25 + sum sin(pi x_i) in 5D: with the output set from g and f the first evaluation is
    already near the mean (rel L2 well under 0.1); without it the network starts near 0 (rel L2
    about 1) and Adam needs thousands of steps to move its output to 25."""
    from mscalednn.train import output_scaling
    problem = PoissonProblem(parse_expression("25 + sum(sin(pi*x))", 5), (0.0,) * 5, (1.0,) * 5)
    shift, scale = output_scaling(problem, seed=0)
    assert 26 < shift < 29 and 0.3 < scale < 1.5    # g's mean and spread on the boundary
    zero_data = PoissonProblem(parse_expression("prod(sin(pi*x))", 3), (0.0,) * 3, (1.0,) * 3)
    shift, scale = output_scaling(zero_data, seed=0)                          # g = 0 (to rounding): as it was
    assert abs(shift) < 1e-12 and scale == 1.0
    first = {}
    for on in (True, False):
        torch.manual_seed(0)
        config = TrainConfig(steps=20, eval_every=10, n_test=500, n_interior=256, n_boundary=128, progress=False,
                             scale_output=on)
        result = solve(problem, MLP(5, width=32, depth=2), config)
        first[on] = [r["rel_l2"] for r in result.history if "rel_l2" in r]
        assert result.metrics["output_scaling"]["shift"] == (pytest.approx(27.7, abs=1.5) if on else 0.0)
    assert first[True][0] < 0.05 and first[False][0] > 0.9 and first[True][-1] < 0.1 * first[False][-1]


@pytest.mark.parametrize("enabled", [False, True])
def test_tf32_is_set_for_the_run_only(enabled):
    """train.tf32 sets PyTorch's TF32 switches while the run trains (the hooks see them) and puts
    the previous ones back after."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    seen = []
    problem = PoissonProblem(parse_expression("sin(pi*x[0])", 1), (0.0,), (1.0,))
    solve(problem, MLP(1, width=8, depth=1), TrainConfig(steps=2, n_test=100, progress=False, tf32=enabled),
          hooks=[lambda s: seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))])
    assert seen == [(enabled, enabled)] * 2
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_compile_auto_compiles_long_budgets_where_a_compiler_exists(monkeypatch):
    from mscalednn.train import compile_decision
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(train_module.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "g++" else None)
    monkeypatch.delenv("CXX", raising=False)
    assert compile_decision(TrainConfig(steps=20000, time_limit=600), cpu) == (True, "auto: C++ compiler g++")
    assert compile_decision(TrainConfig(steps=20000, time_limit=None), cpu)[0]
    for short in (TrainConfig(steps=4999), TrainConfig(steps=20000, time_limit=119)):
        on, why = compile_decision(short, cpu)
        assert not on and "does not amortise" in why
    assert compile_decision(TrainConfig(steps=100, compile=True), cpu) == (True, "train.compile: true")
    assert compile_decision(TrainConfig(steps=20000, compile=False), cpu) == (False, "train.compile: false")
    on, why = compile_decision(TrainConfig(steps=20000, loss="ritz"), cpu)  # its reverse pass fails to compile
    assert not on and "Ritz" in why
    monkeypatch.setattr(train_module.shutil, "which", lambda name: None)
    assert compile_decision(TrainConfig(steps=20000), cpu) == (False, "auto: no C++ compiler found")
    monkeypatch.setattr(train_module.importlib.util, "find_spec", lambda name: None)
    assert compile_decision(TrainConfig(steps=20000), cuda)[0] is False  # no Triton on this GPU


def test_metrics_say_whether_the_loss_was_compiled():
    problem = PoissonProblem(parse_expression("sin(pi*x[0])", 1), (0.0,), (1.0,))
    result = solve(problem, MLP(1, width=8, depth=1), TrainConfig(steps=2, n_test=100, progress=False))
    assert result.metrics["compiled"] is False  # auto, a budget of 2 steps
