"""The Poisson problem: a frozen description; solving is a function of it.

    L u = f   in Omega: the box [lo_1, hi_1] x ... x [lo_d, hi_d], or a domain of
              :mod:`mscalednn.geometry` (a ball, a shell, a box with holes, ...),
      u = g   on the boundary of Omega (or, per named part of it, du/dn = g or alpha u + du/dn = g:
              :mod:`mscalednn.conditions`),

with L = -Laplace, or -div(a grad u) + c u + kappa^2 sinh(u) (:mod:`mscalednn.operator`). With
the exact solution u* given, f = L u* and g = u*, both obtained by exact differentiation of u*,
never by finite differences: for an expression from a problem file by one Taylor-mode pass
(:meth:`mscalednn.expr.Expression.value_grad_laplacian`, O(N d)), for any other torch function by
nested automatic differentiation (O(N d^2)). Without u*, the source f and the boundary data g are
given (``source``, ``boundary``), and the errors are measured against a reference solution
(:mod:`mscalednn.reference`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .derivatives import value_and_grad, value_grad_laplacian
from .errors import ProblemError
from .expr import Expression
from .geometry import Box, Geometry, box_face_areas
from .conditions import Condition
from .operator import LAPLACE, Operator
from .reference import Reference
from .wavefinder import box_points

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PoissonProblem:
    """L u = f on the box [lo, hi] (or on ``domain``) in d dimensions, u = g on its boundary.

    Attributes:
        exact: u*(x), a function of x [N, d] returning [N] (differentiable by torch), or None
            where no closed form is known (then ``source`` and ``boundary`` are required).
        lo, hi: the box corners (length d); with a ``domain``, its bounding box
            (:meth:`on` sets them).
        name, description: for reports.
        domain: a :class:`mscalednn.geometry.Geometry` other than the box, or None (the box).
        operator: L (:class:`mscalednn.operator.Operator`; -Laplace by default).
        source: f(x), or None: f = L u*.
        boundary: g(x) on the boundary, or None: g = u*.
        conditions: (part name, :class:`mscalednn.conditions.Condition`) for every part of the
            boundary, or empty: u = g everywhere.
        reference: a computed solution (:class:`mscalednn.reference.Reference`) for a problem
            without ``exact``; the errors are measured against it (:meth:`with_reference`).
        interface: a shape whose boundary splits Omega where the coefficient a jumps, or None:
            the residual loss then trains one network inside it and one outside, with the
            interface conditions (:meth:`interface_points`, :mod:`mscalednn.nn.piecewise`).
    """

    exact: Field | None
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    name: str = "problem"
    description: str = ""
    domain: Geometry | None = None
    operator: Operator = LAPLACE
    source: Field | None = None
    boundary: Field | None = None
    conditions: tuple[tuple[str, Condition], ...] = ()
    reference: Reference | None = None
    interface: Geometry | None = None

    def __post_init__(self):
        if len(self.lo) != len(self.hi) or not self.lo:
            raise ValueError("lo and hi must have the same, positive length")
        if any(not (a < b) for a, b in zip(self.lo, self.hi)):
            raise ValueError(f"every lo must be below hi, got lo={self.lo}, hi={self.hi}")
        if self.domain is not None and self.domain.dim != len(self.lo):
            raise ValueError(f"the domain has dimension {self.domain.dim}, the box {len(self.lo)}")
        if self.interface is not None and self.interface.dim != len(self.lo):
            raise ValueError(f"the interface has dimension {self.interface.dim}, the domain {len(self.lo)}")
        if self.exact is None and (self.source is None or (self.boundary is None and not self.conditions)):
            raise ValueError("without an exact solution, give the source f and the boundary data g")
        if self.conditions:
            parts, named = list(self.geometry.parts), [name for name, _ in self.conditions]
            if sorted(parts) != sorted(named):
                raise ValueError(f"expected one condition for each boundary part ({', '.join(parts)}), got "
                                 f"{', '.join(named)}")
            if self.exact is None and any(c.g is None and (c.kind != "dirichlet" or self.boundary is None)
                                          for _, c in self.conditions):
                raise ValueError("without an exact solution, every condition needs its g")

    @classmethod
    def on(cls, domain: Geometry, exact: Field | None, name: str = "problem", description: str = "",
           **parts) -> "PoissonProblem":
        """The problem on ``domain`` (a box stays the plain box problem); ``parts``: operator,
        source, boundary, conditions."""
        if isinstance(domain, Box) and not domain.faces:
            return cls(exact, domain.lo, domain.hi, name, description, **parts)
        return cls(exact, tuple(domain.lo), tuple(domain.hi), name, description, domain, **parts)

    @property
    def has_exact(self) -> bool:
        return self.exact is not None

    @property
    def has_solution(self) -> bool:
        """Whether errors can be measured: an exact solution, or a reference."""
        return self.exact is not None or self.reference is not None

    def with_reference(self, reference: Reference) -> "PoissonProblem":
        """This problem with the errors measured against ``reference``."""
        return dataclasses.replace(self, reference=reference)

    @property
    def reference_kind(self) -> str:
        """``exact``, or the reference's kind (``finite-difference``, ...)."""
        return "exact" if self.exact is not None else self.reference.kind if self.reference else "none"

    @property
    def is_box(self) -> bool:
        """Whether Omega is the box [lo, hi] (grid spectra, Sobol points and the wave finder's
        box sampling need one)."""
        return self.domain is None or isinstance(self.domain, Box)

    @property
    def geometry(self) -> Geometry:
        """Omega as a :class:`mscalednn.geometry.Geometry`."""
        return Box(self.lo, self.hi) if self.domain is None else self.domain

    @property
    def dim(self) -> int:
        return len(self.lo)

    @property
    def volume(self) -> float:
        """|Omega| (a domain's Monte Carlo estimate where it has no closed form)."""
        return self.geometry.volume.value

    def points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n uniform points of Omega [n, d], float64, from a torch generator (the wave finder's
        and the adaptation's samples)."""
        if self.domain is None:
            return box_points(self.lo, self.hi, n, generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return torch.as_tensor(self.domain.sample_interior(n, np.random.default_rng(seed)))

    def interface_points(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n points of the interface (the part of the ``interface`` shape's boundary inside
        Omega), uniform by surface measure, and the unit normals there pointing out of the
        shape, both [n, d] float64; drawn from ``seed`` alone (the same points on every call).
        ValueError where the shape's boundary does not pass through Omega."""
        rng = np.random.default_rng([seed, 0x1F7E])
        shape, domain, batch = self.interface, self.geometry, max(n, 1024)
        kept, found, drawn = [], 0, 0
        while found < n:
            if drawn >= 64 * batch:
                raise ValueError("expected an interface shape whose boundary passes through the domain (of "
                                 f"{drawn} points drawn on it, {found} lie inside)")
            x = shape.sample_boundary(batch, rng)
            kept.append(x[domain.interior(x)])
            found, drawn = found + len(kept[-1]), drawn + batch
        x = np.concatenate(kept)[:n]
        return torch.as_tensor(x), torch.as_tensor(shape.boundary_normal(x))

    @property
    def face_areas(self) -> tuple[float, ...]:
        """Area of the face x_k = lo_k of the box (equal to that of x_k = hi_k), for each k."""
        return box_face_areas(self.lo, self.hi)

    @property
    def boundary_area(self) -> float:
        """|boundary of Omega| (for d = 1: the two end points count 1 each)."""
        return self.geometry.boundary_area.value

    @property
    def has_gradient(self) -> bool:
        """Whether grad u* is known: an exact solution, or a reference with gradients."""
        return self.exact is not None or (self.reference is not None and self.reference.has_gradient)

    def u(self, x: torch.Tensor) -> torch.Tensor:
        """u*(x) [N]: the exact solution, or the reference's values."""
        if self.exact is None:
            return self._reference().values(x).to(x.dtype)
        return self.exact(x)

    def _reference(self) -> Reference:
        if self.reference is None:
            raise ProblemError(f"{self.name}: no exact solution and no reference solution to measure errors against "
                               "(mscalednn.reference.finite_difference computes one on a box)")
        return self.reference

    @property
    def mixed(self) -> bool:
        """Whether some part of the boundary has a Neumann or Robin condition."""
        return any(c.kind != "dirichlet" for _, c in self.conditions)

    def g(self, x: torch.Tensor) -> torch.Tensor:
        """The boundary data g at boundary points x [N] (for u, du/dn or alpha u + du/dn, by the
        condition of each point's part): as given, else from u*."""
        data = self.boundary_data(x)
        return data if data.dim() == 1 else data[:, 0]

    def boundary_data(self, x: torch.Tensor) -> torch.Tensor:
        """What the boundary loss needs at boundary points x: g [N] where every part is Dirichlet,
        else the columns (g, alpha, beta, a, n) [N, 4 + d] (:mod:`mscalednn.conditions`)."""
        dirichlet = self.exact if self.boundary is None else self.boundary
        if not self.conditions:
            return dirichlet(x).detach()
        names, given = list(self.geometry.parts), dict(self.conditions)
        points = x.detach().cpu().double().numpy()
        part = torch.as_tensor(self.geometry.part_of(points), device=x.device)
        n = torch.as_tensor(self.geometry.boundary_normal(points), dtype=x.dtype, device=x.device)
        g, alpha, beta = (torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) for _ in range(3))
        for i, name in enumerate(names):
            rows = part == i
            if not bool(rows.any()):
                continue
            xs = x[rows].detach()
            alpha[rows], beta[rows] = given[name].coefficients(xs)
            g[rows] = self.part_g(name, xs, n[rows])
        if not self.mixed:
            return g
        a = self.operator.coefficients(x.detach())[0].detach().to(x.dtype)
        return torch.cat([torch.stack([g, alpha, beta, a], dim=1), n], dim=1)

    def part_g(self, name: str, x: torch.Tensor, n: torch.Tensor | None = None) -> torch.Tensor:
        """The data g of the boundary part ``name`` at points x [N] of it: the condition's g, else
        for a Dirichlet part the problem's g (or u*), else alpha u* + beta du*/dn with the part's
        outward normals n [N, d] (needed only there). The caller says the part: at a point where
        parts meet, :meth:`boundary_data` would pick one of them."""
        condition = dict(self.conditions).get(name, Condition())
        if condition.g is not None:
            return condition.g(x).detach().to(x.dtype)
        if condition.kind == "dirichlet":
            return (self.exact if self.boundary is None else self.boundary)(x).detach().to(x.dtype)
        u, grad = value_and_grad(self.exact, x, create_graph=False)
        return condition.derived_g(x, n, u.detach(), grad.detach())

    def grad_u(self, x: torch.Tensor) -> torch.Tensor:
        """grad u*(x) [N, d], exact (or the reference's)."""
        if self.exact is None:
            grad = self._reference().gradient(x)
            if grad is None:
                raise ProblemError(f"{self.name}: the reference has no gradients (a file without grad_u)")
            return grad.to(x.dtype)
        if isinstance(self.exact, Expression):
            return self.exact.value_grad_laplacian(x)[1]
        return value_and_grad(self.exact, x, create_graph=False)[1].detach()

    def f(self, x: torch.Tensor) -> torch.Tensor:
        """Source f(x) [N]: as given, else f = L u*, exact (for -Laplace: differentiable in x
        where x requires grad, e.g. for the Hessian of the source in wavefinder.py)."""
        if self.source is not None:
            return self.source(x) if x.requires_grad else self.source(x).detach()
        if isinstance(self.exact, Expression):
            jets = self.exact.value_grad_laplacian(x)
        elif x.requires_grad:
            jets = value_grad_laplacian(self.exact, x)
        else:
            jets = tuple(t.detach() for t in value_grad_laplacian(self.exact, x, create_graph=False))
        if self.operator.is_laplace:
            return -jets[2]
        f = self.operator.apply(x, *jets)
        return f if x.requires_grad else f.detach()

    def interior_data(self, x: torch.Tensor) -> torch.Tensor:
        """What the interior loss needs at collocation points x besides the network: f [N] for
        -Laplace, else f with the operator's coefficients (:meth:`mscalednn.operator.Operator.data`)."""
        return self.operator.data(x, self.f(x))


def check_finite(problem: PoissonProblem, **fields: tuple[torch.Tensor, torch.Tensor]) -> None:
    """ProblemError (one line) if a field (name -> (points x [N, d], values [N] or [N, d])) has a
    NaN or an infinity: a singular exact solution or source (e.g. 1/x[0] on a box that contains
    x[0] = 0) is the problem's fault, not the training's."""
    for name, (x, values) in fields.items():
        bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            point = ", ".join(f"{v:.4g}" for v in x[i].tolist()[:6]) + (", ..." if x.shape[1] > 6 else "")
            value = values[i].reshape(-1)[~torch.isfinite(values[i].reshape(-1))][0].item()
            raise ProblemError(
                f"{problem.name}: {name} is not finite at {int(bad.sum())} of {x.shape[0]} points, e.g. "
                f"{value} at x = ({point}); the exact solution and its derivatives must be finite on the "
                "closed domain (move the singularity outside it, or change the domain)")
