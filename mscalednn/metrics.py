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

    @property
    def absolute(self) -> list[str]:
        """The errors reported as absolute values, because their reference is zero (see
        :func:`relative_errors`)."""
        return absolute_errors(self.u, self.grad_u)


def _norms(u_star: np.ndarray, grad_star: np.ndarray | None) -> dict[str, float]:
    """The denominators of the relative errors: ||u*||, max|u*|, ||grad u*||."""
    out = {"rel_l2": float(np.linalg.norm(u_star)), "rel_max": float(np.abs(u_star).max())}
    if grad_star is not None:
        out["rel_h1"] = float(np.linalg.norm(grad_star))
    return out


def absolute_errors(u_star: np.ndarray, grad_star: np.ndarray | None = None) -> list[str]:
    """The error names whose reference is zero on these points (u* = 0: all; u* constant:
    rel_h1): :func:`relative_errors` reports them as absolute errors."""
    return [k for k, norm in _norms(u_star, grad_star).items() if norm == 0.0]


def relative_errors(u: np.ndarray, u_star: np.ndarray, grad_u: np.ndarray | None = None,
                    grad_star: np.ndarray | None = None) -> dict[str, float]:
    """rel_l2 = ||u - u*|| / ||u*||, rel_max = max|u - u*| / max|u*|,
    rel_h1 = ||grad u - grad u*|| / ||grad u*|| (the H1 seminorm), all over the n test points.

    Where the reference is zero (u* = 0, a Laplace problem with zero data; grad u* = 0 for a
    constant u*) the relative error is not defined: that entry is then the absolute error,
    the root mean square ||.|| / sqrt(n) (max|u - u*| for rel_max); :func:`absolute_errors`
    names them.
    """
    err = u - u_star
    n = err.shape[0]
    norms = _norms(u_star, grad_star if grad_u is not None else None)
    values = {"rel_l2": float(np.linalg.norm(err)), "rel_max": float(np.abs(err).max())}
    if grad_u is not None:
        values["rel_h1"] = float(np.linalg.norm(grad_u - grad_star))
    rms = {"rel_l2": np.sqrt(n), "rel_max": 1.0, "rel_h1": np.sqrt(n)}
    return {k: float(v / (norms[k] if norms[k] > 0 else rms[k])) for k, v in values.items()}


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
