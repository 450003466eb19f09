"""Boundary conditions per named part of the boundary:

    dirichlet:  u = g
    neumann:    du/dn = g
    robin:      alpha u + du/dn = g

each one ``alpha u + beta du/dn = g`` with (alpha, beta) = (1, 0), (0, 1) or (alpha(x), 1); n
is the domain's outward unit normal. g is an expression, or derived from the exact solution
(g = u*, du*/dn, alpha u* + du*/dn).

In the losses (:mod:`mscalednn.losses`): the residual loss penalises (alpha u + beta du/dn - g)^2
at every boundary point. The Ritz loss keeps the penalty for Dirichlet parts only: Neumann and
Robin conditions are natural for the energy, which gains the boundary terms

    neumann:  -a g u        robin:  a (alpha u^2 / 2 - g u)

integrated over their parts (with the flux a du/dn = a (g - alpha u) that makes the energy's first
variation the weak form of the problem).

Like the interior data (:mod:`mscalednn.operator`), the boundary data of a batch is g [N] alone
where every part is Dirichlet (the batches of such problems are as before), else the columns
(g, alpha, beta, a, n) [N, 4 + d], evaluated once per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

Field = Callable[[torch.Tensor], torch.Tensor]
Kind = Literal["dirichlet", "neumann", "robin"]
KINDS = ("dirichlet", "neumann", "robin")


@dataclass(frozen=True)
class Condition:
    """alpha u + beta du/dn = g on one boundary part. ``g``: a field, or None (from the exact
    solution, or for Dirichlet the problem's g); ``alpha``: Robin's coefficient (a field)."""

    kind: Kind = "dirichlet"
    g: Field | None = None
    alpha: Field | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == "robin") != (self.alpha is not None):
            raise ValueError("alpha is given for a robin condition, and only there")

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, beta) at x [N] each."""
        one, zero = torch.ones(x.shape[0], dtype=x.dtype, device=x.device), torch.zeros(x.shape[0], dtype=x.dtype,
                                                                                         device=x.device)
        if self.kind == "dirichlet":
            return one, zero
        if self.kind == "neumann":
            return zero, one
        return self.alpha(x).detach().to(x.dtype), one

    def derived_g(self, x: torch.Tensor, n: torch.Tensor, u: torch.Tensor, grad_u: torch.Tensor) -> torch.Tensor:
        """g = alpha u* + beta du*/dn from the exact solution's value and gradient at x."""
        alpha, beta = self.coefficients(x)
        return alpha * u + beta * (grad_u * n).sum(dim=1)
