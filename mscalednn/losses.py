"""Loss functions for -Laplace u = f in Omega, u = g on the boundary.

* residual (least squares, strong form):
      L = mean_interior (-Laplace u - f)^2 + beta * mean_boundary (u - g)^2
* ritz (Deep Ritz, variational):
      L = |Omega| mean_interior (1/2 |grad u|^2 - f u) + beta * |boundary| mean_boundary (u - g)^2
"""

from __future__ import annotations

import torch


def residual_interior(lap_u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """mean (-Laplace u - f)^2."""
    return (-lap_u - f).square().mean()


def residual_interior_unbiased(lap_a: torch.Tensor, lap_b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """mean (-L_a - f)(-L_b - f) for two independent unbiased estimates L_a, L_b of Laplace u at
    the same points: an unbiased estimate of mean (-Laplace u - f)^2, and its gradient
    one of that loss's gradient, where the square of one estimate would add the estimator's variance to the loss
    (and pull the network towards a Hessian the estimator sees with less variance, away from the
    solution). It can be negative on a batch."""
    return ((-lap_a - f) * (-lap_b - f)).mean()


def ritz_interior(u: torch.Tensor, grad_u: torch.Tensor, f: torch.Tensor, volume: float) -> torch.Tensor:
    """|Omega| mean (1/2 |grad u|^2 - f u): the Dirichlet energy, minimised by the solution."""
    return volume * (0.5 * grad_u.square().sum(dim=1) - f * u).mean()


def boundary_penalty(u_b: torch.Tensor, g: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * mean (u - g)^2 on boundary points (weight = |boundary| for the Ritz loss)."""
    return weight * (u_b - g).square().mean()
