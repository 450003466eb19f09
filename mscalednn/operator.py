"""The PDE operator of a problem, written once for the residual and once for the energy:

    L u = -div(a grad u) + c u + kappa^2 sinh(u) = f

with coefficients a(x) > 0 (a diffusion coefficient, or the permittivity eps of the
Poisson-Boltzmann equation), c(x) and kappa(x) given as functions of x (expressions in a
problem file). Unset, a = 1, c = 0 and kappa = 0: the plain -Laplace u = f.

* residual (strong form), from the network's jets (u, grad u, Laplace u):
      L u - f = -a Laplace u - grad a . grad u + c u + kappa^2 sinh(u) - f
  (grad u is needed only where a varies; a coefficient that jumps has grad a = 0 on both sides,
  and the strong form says nothing about the jump itself: use the Ritz form there);
* energy density (Ritz), minimised by the solution with Dirichlet data:
      e(u) = 1/2 a |grad u|^2 + 1/2 c u^2 + kappa^2 (cosh(u) - 1) - f u
  (its first variation is the weak form of L u = f; cosh(u) - 1 is the energy of sinh).

The coefficients do not depend on the network, so they are evaluated once per batch of
collocation points and travel with f as the batch's interior data (:meth:`Operator.data`): the
column f alone for the plain Laplacian (the batch and checkpoints of the Laplace problems are
unchanged), else the columns (f, a, c, kappa^2, grad a) [N, 4 + d].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .derivatives import value_and_grad

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Operator:
    """L u = -div(a grad u) + c u + kappa^2 sinh(u); a field that is None is a = 1, c = 0,
    kappa = 0. Fields map x [N, d] to [N] (an :class:`mscalednn.expr.Expression`, or any torch
    function: grad a then comes from autograd)."""

    a: Field | None = None
    c: Field | None = None
    kappa: Field | None = None

    @property
    def is_laplace(self) -> bool:
        """Whether L is -Laplace (no coefficients)."""
        return self.a is None and self.c is None and self.kappa is None

    @property
    def needs_grad(self) -> bool:
        """Whether the residual needs grad u (a varies: the term grad a . grad u)."""
        return self.a is not None

    @property
    def jumps(self) -> bool:
        """Whether a is piecewise (an expression with ``where``): the strong residual then misses
        the interface condition (continuity of a du/dn)."""
        return bool(getattr(self.a, "piecewise", False))

    def describe(self) -> str:
        terms = ["-Laplace u" if self.a is None else "-div(a grad u)"]
        terms += [t for t, field in (("c u", self.c), ("kappa^2 sinh(u)", self.kappa)) if field is not None]
        return " + ".join(terms)

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a [N], grad a [N, d], c [N], kappa^2 [N]) at x (differentiable in x where x requires
        grad and a is an expression)."""
        zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if self.a is None:
            a, grad_a = zero + 1.0, torch.zeros_like(x)
        elif hasattr(self.a, "value_grad_laplacian"):  # an expression: exact, Taylor mode
            a, grad_a, _ = self.a.value_grad_laplacian(x)
        else:
            a, grad_a = value_and_grad(self.a, x.detach(), create_graph=False)
        c = zero if self.c is None else self.c(x)
        kappa2 = zero if self.kappa is None else self.kappa(x).square()
        return a, grad_a, c, kappa2

    def data(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """The interior data of a batch: f [N] for the plain Laplacian, else the columns
        (f, a, c, kappa^2, grad a) [N, 4 + d]."""
        if self.is_laplace:
            return f
        return self._columns(x.detach(), f.detach()).detach()

    def _columns(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """(f, a, c, kappa^2, grad a) at x [N, 4 + d]."""
        a, grad_a, c, kappa2 = self.coefficients(x)
        return torch.cat([torch.stack([f, a, c, kappa2], dim=1), grad_a], dim=1)

    def apply(self, x: torch.Tensor, u: torch.Tensor, grad_u: torch.Tensor | None, lap_u: torch.Tensor) -> torch.Tensor:
        """L u at x [N], from u, grad u (None allowed unless a varies) and Laplace u."""
        return self.residual(self._columns(x, torch.zeros_like(u)), u, grad_u, lap_u)

    def residual(self, data: torch.Tensor, u: torch.Tensor, grad_u: torch.Tensor | None,
                 lap_u: torch.Tensor) -> torch.Tensor:
        """L u - f [N] from the batch's interior data (:meth:`data`)."""
        if data.dim() == 1:
            return -lap_u - data
        f, a, c, kappa2, grad_a = data[:, 0], data[:, 1], data[:, 2], data[:, 3], data[:, 4:]
        r = -a * lap_u - f
        if grad_u is not None:
            r = r - (grad_a * grad_u).sum(dim=1)
        if self.c is not None:
            r = r + c * u
        if self.kappa is not None:
            r = r + kappa2 * torch.sinh(u)
        return r

    def energy(self, data: torch.Tensor, u: torch.Tensor, grad_u: torch.Tensor) -> torch.Tensor:
        """The energy density e(u) [N] from the batch's interior data (:meth:`data`)."""
        if data.dim() == 1:
            return 0.5 * grad_u.square().sum(dim=1) - data * u
        f, a, c, kappa2 = data[:, 0], data[:, 1], data[:, 2], data[:, 3]
        e = 0.5 * a * grad_u.square().sum(dim=1) - f * u
        if self.c is not None:
            e = e + 0.5 * c * u.square()
        if self.kappa is not None:
            e = e + kappa2 * (torch.cosh(u) - 1.0)
        return e


LAPLACE = Operator()
