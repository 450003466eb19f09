"""One rank of the data-parallel checks in test_distributed.py, started by torchrun:

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT

It writes OUT/rank{r}.pt: its collocation batch and the gradient averaged over the ranks for
one backward pass, and the parameters after every step of a short adaptive training run
(float64, CPU, gloo). The assertions are in the test, which reads both files."""

import sys
from pathlib import Path

import torch

from mscalednn import distributed, load_problem, load_run_config, seed_everything, solve
from mscalednn.optimizers import Objective
from mscalednn.sampling import Sampler
from mscalednn.train import _interior_loss

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["train.dtype=float64", "train.device=cpu", "train.time_limit=null", "train.progress=false",
            "model.width=24", "model.hidden_width=12", "model.depth=2", "model.wave_slots=8",
            "model.adapt_at=[0.0, 0.5]", "train.n_interior=64", "train.n_boundary=16", "train.n_test=300",
            "train.steps=6", "train.eval_every=2"]


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def main(out: Path) -> None:
    world = distributed.init_from_environment("cpu")
    problem, _ = load_problem(ROOT / "problems" / "poisson2d_multiscale.yaml")
    run = load_run_config(ROOT / "configs" / "adaptive.yaml", SETTINGS)
    seed_everything(run.train.seed)
    model = run.model.build(problem.dim).double()
    sampler = Sampler(problem, "uniform", 7, dtype=torch.float64, rank=world.rank)
    x_in, x_bd = sampler.interior(64), sampler.boundary(16)
    batch = (x_in, x_bd, problem.f(x_in), problem.g(x_bd))
    interior, bc_weight = _interior_loss(problem, model, run.train)
    objective = Objective(model, interior, interior, bc_weight, chunk=24, world=world)
    loss, loss_in, loss_bd = objective.backward(batch, beta=10.0)
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    model.zero_grad(set_to_none=True)

    seed_everything(run.train.seed)
    model = run.model.build(problem.dim)
    steps = []
    result = solve(problem, model, run.train, hooks=[lambda s: steps.append(flat(s.model))])
    torch.save({"batch": batch, "grad": grad, "loss": [float(loss), float(loss_in), float(loss_bd)],
                "steps": steps, "metrics": result.metrics, "history": result.history,
                "model": result.model.state_dict()},
               out / f"rank{world.rank}.pt")
    world.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
