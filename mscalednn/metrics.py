"""Error measures against the exact solution (or the problem's reference solution)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .derivatives import value_and_grad
from .distributed import SINGLE, World
from .problem import PoissonProblem
from .sampling import test_points


@dataclass
class EvalSet:
    """Fixed test points with u* and grad u* precomputed (float64 on the CPU for accuracy). A
    reference known at its own points (a user's file) gives those points (n of them at most), and
    grad u* only where the file has it (None: no H1 error)."""

    x: torch.Tensor
    u: np.ndarray
    grad_u: np.ndarray | None

    @classmethod
    def build(cls, problem: PoissonProblem, n: int = 10000, seed: int = 12345) -> "EvalSet":
        known = None if problem.has_exact or problem.reference is None else problem.reference.subset(n, seed)
        if known is not None:
            return cls(*known)
        x = torch.as_tensor(test_points(problem, n, seed), dtype=torch.float64)
        if problem.has_exact:  # one reverse pass for any torch function
            u, g = value_and_grad(problem.exact, x, create_graph=False)
        else:
            u, g = problem.u(x), problem.grad_u(x)
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
    sums = {"rel_l2": float(np.square(err).sum()), "rel_max": float(np.abs(err).max())}
    if grad_u is not None:
        sums["rel_h1"] = float(np.square(grad_u - grad_star).sum())
    return _relative(sums, u_star, grad_star if grad_u is not None else None)


def _relative(sums: dict[str, float], u_star: np.ndarray, grad_star: np.ndarray | None) -> dict[str, float]:
    """The errors of :func:`relative_errors` from the sums of squared errors (``rel_l2``,
    ``rel_h1``) and the largest error (``rel_max``) over all of u*'s points."""
    n, norms = u_star.shape[0], _norms(u_star, grad_star)
    values = {k: (v if k == "rel_max" else float(np.sqrt(v))) for k, v in sums.items()}
    rms = {"rel_l2": np.sqrt(n), "rel_max": 1.0, "rel_h1": np.sqrt(n)}
    return {k: float(v / (norms[k] if norms[k] > 0 else rms[k])) for k, v in values.items()}


def evaluate(model: torch.nn.Module, test: EvalSet, batch: int = 4096, world: World = SINGLE) -> dict[str, float]:
    """Relative L2, max and H1-seminorm errors of ``model`` on the test set. In a data-parallel
    run (``world``) each rank evaluates every ``world.size``-th point and the sums are reduced."""
    p = next(model.parameters())
    part = slice(world.rank, None, world.size)
    us, gs = [], []
    for xb in torch.split(test.x[part], batch):
        u, g = value_and_grad(model, xb.to(device=p.device, dtype=p.dtype), create_graph=False)
        us.append(u.detach().cpu().double().numpy())
        gs.append(g.detach().cpu().double().numpy())
    err = np.concatenate(us) - test.u[part]
    grad_err = np.zeros(1) if test.grad_u is None else np.concatenate(gs) - test.grad_u[part]
    l2, h1 = world.sum(float(np.square(err).sum()), float(np.square(grad_err).sum()))
    largest, = world.max(float(np.abs(err).max()) if err.size else 0.0)
    sums = {"rel_l2": l2, "rel_max": largest, **({} if test.grad_u is None else {"rel_h1": h1})}
    return _relative(sums, test.u, test.grad_u)


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray | torch.Tensor, batch: int = 8192) -> np.ndarray:
    """The network's values u(x) [N] at points x [N, d], as float64 NumPy, in batches."""
    p = next(model.parameters())
    x = torch.as_tensor(x)
    out = [model(xb.to(device=p.device, dtype=p.dtype)).reshape(-1).double().cpu() for xb in torch.split(x, batch)]
    return torch.cat(out).numpy()
