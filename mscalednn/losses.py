"""Loss functions for L u = f in Omega, u = g on the boundary (L: :mod:`mscalednn.operator`,
-Laplace by default; ``f`` below is the batch's interior data, :meth:`Operator.data`):

* residual (least squares, strong form):
      L = mean_interior (L u - f)^2 + beta * mean_boundary (u - g)^2
* ritz (Deep Ritz, variational):
      L = |Omega| mean_interior e(u) + beta * |boundary| mean_boundary (u - g)^2,
  e(u) = 1/2 a |grad u|^2 + 1/2 c u^2 + kappa^2 (cosh u - 1) - f u (1/2 |grad u|^2 - f u for -Laplace)
* residual with interface conditions (a coefficient that jumps across an interface S, one
  network on each side, :class:`mscalednn.nn.Piecewise`): the residual loss, each network's
  residual on its own side, plus
      w_u mean_S (u_in - u_out)^2 + w_f mean_S (a_in du_in/dn - a_out du_out/dn)^2
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


def boundary_terms(u_b: torch.Tensor, du_dn: torch.Tensor, data: torch.Tensor, ritz: bool,
                   weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty, natural) on boundary points with mixed conditions (``data``: the columns (g,
    alpha, beta, a, n), :mod:`mscalednn.conditions`): the residual loss penalises
    weight * mean (alpha u + beta du/dn - g)^2 everywhere and has no natural term; the Ritz loss
    penalises the Dirichlet points only and adds weight * mean of the natural energy
    a (alpha u^2 / 2 - g u) at the others (weight = |boundary|: means become integrals)."""
    g, alpha, beta, a = data[:, 0], data[:, 1], data[:, 2], data[:, 3]
    if not ritz:
        r = alpha * u_b + beta * du_dn - g
        return weight * r.square().mean(), torch.zeros((), dtype=u_b.dtype, device=u_b.device)
    r = u_b - g  # where beta = 0: u - g (du/dn not needed: ``du_dn`` may be None)
    dirichlet = beta == 0
    penalty = torch.where(dirichlet, r.square(), torch.zeros_like(r)).mean()
    natural = torch.where(dirichlet, torch.zeros_like(r), a * (0.5 * alpha * u_b.square() - g * u_b)).mean()
    return weight * penalty, weight * natural


def interface_terms(u_in: torch.Tensor, grad_in: torch.Tensor, u_out: torch.Tensor, grad_out: torch.Tensor,
                    normal: torch.Tensor, a_in: torch.Tensor, a_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (u_in - u_out)^2, mean (a_in du_in/dn - a_out du_out/dn)^2) on interface points: the
    continuity of u and of the flux a du/dn that the strong form needs across a jump of a."""
    flux_in, flux_out = a_in * (grad_in * normal).sum(dim=1), a_out * (grad_out * normal).sum(dim=1)
    return (u_in - u_out).square().mean(), (flux_in - flux_out).square().mean()
