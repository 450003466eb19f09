"""Loss functions for L u = f in Omega, u = g on the boundary (L: :mod:`mscalednn.operator`,
-Laplace by default; ``f`` below is the batch's interior data, :meth:`Operator.data`):

* residual (least squares, strong form):
      L = mean_interior (L u - f)^2 + beta * mean_boundary (u - g)^2
* ritz (Deep Ritz, variational):
      L = |Omega| mean_interior e(u) + beta * |boundary| mean_boundary (u - g)^2,
  e(u) = 1/2 a |grad u|^2 + 1/2 c u^2 + kappa^2 (cosh u - 1) - f u (1/2 |grad u|^2 - f u for -Laplace)
"""

from __future__ import annotations

import torch

from .operator import LAPLACE, Operator


def residual_interior(lap_u: torch.Tensor, f: torch.Tensor, u: torch.Tensor | None = None,
                      grad_u: torch.Tensor | None = None, operator: Operator = LAPLACE) -> torch.Tensor:
    """mean (L u - f)^2 (for -Laplace: mean (-Laplace u - f)^2)."""
    return operator.residual(f, u, grad_u, lap_u).square().mean()


def residual_interior_unbiased(lap_a: torch.Tensor, lap_b: torch.Tensor, f: torch.Tensor,
                               u: torch.Tensor | None = None, operator: Operator = LAPLACE) -> torch.Tensor:
    """mean (L_a u - f)(L_b u - f) for two independent unbiased estimates L_a, L_b of Laplace u at
    the same points (L u - f is affine in Laplace u for an operator whose a does not vary): an
    unbiased estimate of mean (L u - f)^2, and its gradient
    one of that loss's gradient, where the square of one estimate would add the estimator's variance to the loss
    (and pull the network towards a Hessian the estimator sees with less variance, away from the
    solution). It can be negative on a batch."""
    return (operator.residual(f, u, None, lap_a) * operator.residual(f, u, None, lap_b)).mean()


def ritz_interior(u: torch.Tensor, grad_u: torch.Tensor, f: torch.Tensor, volume: float,
                  operator: Operator = LAPLACE) -> torch.Tensor:
    """|Omega| mean e(u): the energy, minimised by the solution (for -Laplace the Dirichlet
    energy |Omega| mean (1/2 |grad u|^2 - f u))."""
    return volume * operator.energy(f, u, grad_u).mean()


def boundary_penalty(u_b: torch.Tensor, g: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """weight * mean (u - g)^2 on boundary points (weight = |boundary| for the Ritz loss)."""
    return weight * (u_b - g).square().mean()
