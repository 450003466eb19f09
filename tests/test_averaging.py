"""train.ema: the run's result is the exponential moving average of Adam's iterates, restarted
where the parameters jump (new wave units, a new optimizer phase), and it survives resume
(tests/test_reliability.py runs the stop-and-resume check with it)."""

from pathlib import Path

import torch

from mscalednn import PoissonProblem, load_problem, load_run_config, parse_expression, solve
from mscalednn.metrics import EvalSet, evaluate
from mscalednn.train import seed_everything

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.dtype=float64", "train.device=cpu", "train.time_limit=null", "model.width=24",
         "model.hidden_width=12", "train.n_interior=128", "train.n_boundary=64", "train.progress=false",
         "train.n_test=400"]


def run(overrides, problem=None, config="mscale.yaml", hooks=()):
    problem = problem or load_problem(ROOT / "problems" / "poisson1d_multiscale.yaml")[0]
    cfg = load_run_config(ROOT / "configs" / config, SMALL + overrides)
    seed_everything(cfg.train.seed)
    model = cfg.model.build(problem.dim)
    return solve(problem, model, cfg.train, hooks=hooks), problem


def test_the_result_is_the_moving_average_of_the_adam_iterates():
    iterates = []

    def record(state):  # without averaging the hooks see the raw iterates
        iterates.append([p.detach().clone() for p in state.model.parameters()])

    steps = ["train.steps=45", "train.eval_every=15"]
    plain, problem = run(steps + ["train.ema=null"], hooks=[record])  # the shipped configs average
    averaged, _ = run(steps + ["train.ema=0.8"])
    first, _ = run(["train.steps=1", "train.eval_every=1", "train.lr=1e-300", "train.ema=null"])  # the start
    avg = [p.detach().clone() for p in first.model.parameters()]
    for n, theta in enumerate(iterates, start=1):  # n iterates averaged so far (the first: the start)
        w = min(0.8, (1 + n) / (10 + n))  # the warm-up: w = 0.8 from n = 35 on
        avg = [w * a + (1 - w) * t for a, t in zip(avg, theta)]
    for a, p in zip(avg, averaged.model.parameters()):
        assert torch.allclose(a, p, atol=1e-13, rtol=0)
    assert not all(torch.allclose(a, p) for a, p in zip(iterates[-1], averaged.model.parameters()))
    # averaging does not change training: the last evaluation's loss of the raw iterate is the
    # plain run's; the errors reported are those of the average (what the run returns)
    assert averaged.metrics["rel_l2"] == evaluate(averaged.model, EvalSet.build(problem, 400))["rel_l2"]
    assert averaged.metrics["rel_l2"] != plain.metrics["rel_l2"]


def test_no_average_in_a_second_order_phase():
    phases = ["train.steps=12", "train.eval_every=4", "train.ema=0.9",
              "train.optimizer=[{name: adam, until: 0.5}, {name: lbfgs}]", "train.lbfgs_iterations=3"]
    with_ema, problem = run(phases)
    without, _ = run([p for p in phases if not p.startswith("train.ema")])
    for a, b in zip(with_ema.model.parameters(), without.model.parameters()):
        assert torch.equal(a, b)  # the L-BFGS phase's last iterate, in both


def test_the_average_restarts_when_wave_units_are_placed():
    problem = PoissonProblem(parse_expression("sin(pi*x[0])*sin(pi*x[1]) + 0.1*sin(8*pi*(0.6*x[0] + 0.8*x[1]))", 2),
                             (0.0, 0.0), (1.0, 1.0), name="dense wave 2d")
    result, _ = run(["train.steps=20", "train.eval_every=10", "model.adapt_at=[0.5]", "train.ema=0.99"],
                    problem=problem, config="adaptive.yaml")
    (adaptation,) = result.metrics["adaptations"]
    slot = adaptation["placed_slots"][0]
    placed = torch.tensor(adaptation["placed"][0], dtype=torch.float64)
    k = result.model.waves.k.detach()[slot]
    # averaged from the empty slot (k = 0) it would lie 10 updates' weight short of k: 40% of |k|
    # with the warm-up
    assert (k - placed).norm() < 0.01 * placed.norm()
