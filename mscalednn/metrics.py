"""Error measures against the exact solution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .derivatives import value_and_grad
from .problem import PoissonProblem
from .sampling import test_points


@dataclass
class EvalSet:
    """Fixed test points with u* and grad u* precomputed (float64 on the CPU for accuracy)."""

    x: torch.Tensor
    u: np.ndarray
    grad_u: np.ndarray

    @classmethod
    def build(cls, problem: PoissonProblem, n: int = 10000, seed: int = 12345) -> "EvalSet":
        x = torch.as_tensor(test_points(problem, n, seed), dtype=torch.float64)
        u, g = value_and_grad(problem.exact, x, create_graph=False)
        return cls(x, u.detach().numpy(), g.detach().numpy())


def relative_errors(u: np.ndarray, u_star: np.ndarray, grad_u: np.ndarray | None = None,
                    grad_star: np.ndarray | None = None) -> dict[str, float]:
    """rel_l2 = ||u - u*|| / ||u*||, rel_max = max|u - u*| / max|u*|,
    rel_h1 = ||grad u - grad u*|| / ||grad u*|| (the H1 seminorm), all over the test points."""
    err = u - u_star
    out = {"rel_l2": float(np.linalg.norm(err) / np.linalg.norm(u_star)),
           "rel_max": float(np.abs(err).max() / np.abs(u_star).max())}
    if grad_u is not None:
        out["rel_h1"] = float(np.linalg.norm(grad_u - grad_star) / np.linalg.norm(grad_star))
    return out


def evaluate(model: torch.nn.Module, test: EvalSet, batch: int = 4096) -> dict[str, float]:
    """Relative L2, max and H1-seminorm errors of ``model`` on the test set."""
    p = next(model.parameters())
    us, gs = [], []
    for xb in torch.split(test.x, batch):
        u, g = value_and_grad(model, xb.to(device=p.device, dtype=p.dtype), create_graph=False)
        us.append(u.detach().cpu().double().numpy())
        gs.append(g.detach().cpu().double().numpy())
    return relative_errors(np.concatenate(us), test.u, np.concatenate(gs), test.grad_u)


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray | torch.Tensor, batch: int = 8192) -> np.ndarray:
    """The network's values u(x) [N] at points x [N, d], as float64 NumPy, in batches."""
    p = next(model.parameters())
    x = torch.as_tensor(x)
    out = [model(xb.to(device=p.device, dtype=p.dtype)).reshape(-1).double().cpu() for xb in torch.split(x, batch)]
    return torch.cat(out).numpy()
