"""Reference solutions for problems without a closed-form solution.

A problem file may give the source f and the boundary data g instead of an exact solution
(:class:`mscalednn.problem.PoissonProblem` with ``exact=None``). Its errors are then measured
against a :class:`Reference`: the solution computed by another method, with that method's own
estimated error, so that a reported network error is read against what the reference can
resolve.

* ``finite-difference`` (:func:`finite_difference`): boxes in 1, 2 and 3 dimensions. The
  conservative five-point (seven-point in 3D) stencil of -div(a grad u),

      sum_k [a_{k+} (u - u_{k+}) + a_{k-} (u - u_{k-})] / h_k^2 + c u + kappa^2 sinh(u) = f,

  with a at the cell faces the harmonic mean of its values at the two nodes (the right average
  where a jumps), Dirichlet data at the boundary nodes, and Newton's method for the sinh term
  (direct sparse solves in 1D and 2D, conjugate gradients with a Jacobi preconditioner in 3D).
  Second order in h for smooth a (tested: fitted rate 2 on a manufactured variable-coefficient
  problem). The grid is solved twice, at h and 2h; the reference's error is estimated from
  the two by Richardson (||u_2h - u_h|| / 3 at random points, interpolation included).
* With an exact solution no reference is computed: ``metrics.json`` says ``reference: exact``.

Values between the nodes come from multilinear interpolation (second order), gradients from
central differences on the grid, interpolated the same way. :meth:`Reference.save` and
:meth:`Reference.load` keep a computed reference in a run directory, so that a resumed run does
not compute it again.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from .errors import ProblemError

FILE = "reference.npz"
CELLS = {1: 4096, 2: 512, 3: 64}  # cells per axis of the fine grid
NEWTON_TOL, NEWTON_MAX = 1e-12, 50


@dataclass(frozen=True, kw_only=True)
class Reference:
    """A computed solution to measure a network against: u and grad u at any point of the domain.

    ``kind``: how it was computed (``finite-difference``, ``finite-element``, ``file``);
    ``error``: its own estimated relative L2 error (None where unknown); ``seconds``: the time it
    took. The forms: :class:`GridReference` (node values on a regular grid),
    ``mscalednn.fem.MeshReference`` (a finite-element function on a mesh) and
    :class:`PointReference` (values at given points). :meth:`save` and :meth:`load` keep any of
    them in a run directory (``reference.npz``)."""

    kind: str
    error: float | None = None
    seconds: float = 0.0
    FORM: ClassVar[str] = ""

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """u at points x [N, d] [N] (float64)."""
        raise NotImplementedError

    def gradient(self, x: torch.Tensor) -> torch.Tensor | None:
        """grad u at points x [N, d] [N, d] (float64), or None where the reference has none."""
        raise NotImplementedError

    @property
    def points(self) -> np.ndarray | None:
        """The points the reference is known at exactly, where errors are best measured (None:
        anywhere in the domain)."""
        return None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define this form (saved by :meth:`save`)."""
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], **common) -> "Reference":
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILE
        np.savez(path, form=self.FORM, kind=self.kind, error=np.nan if self.error is None else self.error,
                 seconds=self.seconds, **self.arrays())
        return path

    @staticmethod
    def load(directory: str | Path) -> "Reference | None":
        """The reference saved in ``directory``, or None if there is none."""
        path = Path(directory) / FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        form, error = str(arrays.pop("form")), float(arrays.pop("error"))
        common = {"kind": str(arrays.pop("kind")), "error": None if math.isnan(error) else error,
                  "seconds": float(arrays.pop("seconds"))}
        if form not in FORMS and form == "mesh":
            from . import fem  # noqa: F401  (registers the mesh form; needs scikit-fem)
        return FORMS[form].from_arrays(arrays, **common)

    def describe(self) -> str:
        error = "" if self.error is None else f", estimated error {self.error:.1e}"
        return f"{self.kind} reference{self.where()}{error}, {self.seconds:.1f} s"

    def where(self) -> str:
        return ""


FORMS: dict[str, type[Reference]] = {}


def register(cls: type[Reference]) -> type[Reference]:
    """Class decorator: a form :meth:`Reference.load` can read back."""
    FORMS[cls.FORM] = cls
    return cls


@register
@dataclass(frozen=True, kw_only=True)
class GridReference(Reference):
    """A solution on the nodes of a regular grid over the box [lo, hi]: u [n_1 + 1, ..., n_d + 1].
    Values between the nodes by multilinear interpolation; gradients by central differences on
    the grid, interpolated the same way."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    u: np.ndarray
    kind: str = "finite-difference"
    FORM: ClassVar[str] = "grid"

    @property
    def dim(self) -> int:
        return len(self.lo)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple((b - a) / (n - 1) for a, b, n in zip(self.lo, self.hi, self.u.shape))

    def values(self, x: torch.Tensor) -> torch.Tensor:
        return _interpolate(torch.as_tensor(self.u), self.lo, self.spacing, x)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        grids = np.gradient(self.u, *self.spacing, edge_order=2) if self.dim > 1 else \
            [np.gradient(self.u, self.spacing[0], edge_order=2)]
        return torch.stack([_interpolate(torch.as_tensor(g), self.lo, self.spacing, x) for g in grids], dim=1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lo": np.array(self.lo), "hi": np.array(self.hi), "u": self.u}

    @classmethod
    def from_arrays(cls, arrays, **common) -> "GridReference":
        return cls(lo=tuple(arrays["lo"].tolist()), hi=tuple(arrays["hi"].tolist()), u=arrays["u"], **common)

    def where(self) -> str:
        return " on " + " x ".join(str(n - 1) for n in self.u.shape) + " cells"


def _interpolate(grid: torch.Tensor, lo, spacing, x: torch.Tensor) -> torch.Tensor:
    """Multilinear interpolation of node values ``grid`` [n_1, ..., n_d] at x [N, d]."""
    x = x.detach().to(torch.float64).cpu()
    shape = torch.tensor(grid.shape)
    t = (x - torch.tensor(lo, dtype=torch.float64)) / torch.tensor(spacing, dtype=torch.float64)
    base = t.floor().long().clamp(torch.zeros_like(shape), shape - 2)
    w = (t - base).clamp(0.0, 1.0)
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for corner in itertools.product((0, 1), repeat=x.shape[1]):
        c = torch.tensor(corner)
        weight = torch.prod(torch.where(c.bool(), w, 1 - w), dim=1)
        out = out + weight * grid[tuple((base + c).T)]
    return out


def _nodes(lo, hi, cells: int) -> tuple[np.ndarray, list[np.ndarray]]:
    axes = [np.linspace(a, b, cells + 1) for a, b in zip(lo, hi)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1), axes


def _field(fn, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return fn(torch.as_tensor(x, dtype=torch.float64)).detach().double().numpy()


def solve_grid(problem, cells: int) -> np.ndarray:
    """The finite-difference solution of ``problem`` (a box, d <= 3) on ``cells`` cells per axis:
    the node values [cells + 1] * d."""
    d = problem.dim
    x, axes = _nodes(problem.lo, problem.hi, cells)
    shape = (cells + 1,) * d
    h = [(b - a) / cells for a, b in zip(problem.lo, problem.hi)]
    op = problem.operator
    a, _, c, kappa2 = (t.detach().numpy() for t in op.coefficients(torch.as_tensor(x, dtype=torch.float64)))
    # -div(a grad u): sum over axes of D_k^T diag(a at faces) D_k / h_k^2, D_k the difference along k
    n = cells + 1
    eye = sp.identity(n, format="csr")
    diff = sp.diags([-np.ones(cells), np.ones(cells)], [0, 1], shape=(cells, n), format="csr")
    left = sp.diags([np.ones(cells)], [0], shape=(cells, n), format="csr")
    right = sp.diags([np.ones(cells)], [1], shape=(cells, n), format="csr")
    A = sp.csr_matrix((n ** d, n ** d))
    for k in range(d):
        def along(m):
            out = sp.identity(1, format="csr")
            for j in range(d):
                out = sp.kron(out, m if j == k else eye, format="csr")
            return out
        a_l, a_r = along(left) @ a, along(right) @ a
        face = 2 * a_l * a_r / (a_l + a_r)  # harmonic mean: the flux across a jump
        D = along(diff)
        A = A + D.T @ sp.diags(face) @ D / h[k] ** 2
    index = np.indices(shape).reshape(d, -1).T
    boundary = ((index == 0) | (index == cells)).any(axis=1)
    inner = ~boundary
    u = np.zeros(n ** d)
    u[boundary] = _field(problem.g, x[boundary])
    f = _field(problem.f, x[inner])
    A = A.tocsr()
    A_ii, rhs = A[inner][:, inner].tocsc(), f - A[inner][:, boundary] @ u[boundary]
    c, kappa2 = c[inner], kappa2[inner]
    nonlinear = op.kappa is not None and bool(np.any(kappa2 != 0))
    v = np.zeros(inner.sum())
    scale = max(float(np.abs(rhs).max()), 1e-300)
    diagonal = float(np.abs(A_ii.diagonal()).max())
    for _ in range(NEWTON_MAX if nonlinear else 1):
        F = A_ii @ v + c * v + kappa2 * np.sinh(v) - rhs
        # converged: the residual at the level of rounding in A v (entries ~ 1/h^2)
        if nonlinear and float(np.abs(F).max()) <= NEWTON_TOL * (scale + diagonal * float(np.abs(v).max())):
            break
        J = A_ii + sp.diags(c + kappa2 * np.cosh(v))
        step = _linear_solve(J.tocsc(), -F, d)
        t = 1.0
        while nonlinear and t > 1e-4:  # damped Newton: the residual must fall
            trial = v + t * step
            if float(np.abs(A_ii @ trial + c * trial + kappa2 * np.sinh(trial) - rhs).max()) < float(np.abs(F).max()):
                break
            t /= 2
        v = v + t * step
    else:
        if nonlinear:
            raise ProblemError(f"{problem.name}: the finite-difference reference's Newton iteration did not converge "
                               f"in {NEWTON_MAX} steps (residual {float(np.abs(F).max()):.3g})")
    u[inner] = v
    return u.reshape(shape)


def _linear_solve(J: sp.csc_matrix, b: np.ndarray, d: int) -> np.ndarray:
    if d <= 2:
        return spla.spsolve(J, b)
    M = sp.diags(1.0 / J.diagonal())
    x, info = spla.cg(J, b, M=M, rtol=1e-12, maxiter=20000)
    if info != 0:
        raise ProblemError(f"the finite-difference reference's conjugate gradients did not converge ({info})")
    return x


def finite_difference(problem, cells: int | None = None, seed: int = 0) -> GridReference:
    """The finite-difference reference of ``problem`` on ``cells`` cells per axis (default:
    :data:`CELLS` by dimension), with its error estimated from the solution on half as many."""
    if not problem.is_box or problem.dim > 3:
        raise ProblemError(f"{problem.name}: a finite-difference reference needs a box in 1, 2 or 3 dimensions (this "
                           f"problem is on {'a box' if problem.is_box else 'a domain that is not a box'} in "
                           f"{problem.dim}); give an exact solution")
    cells = cells or CELLS[problem.dim]
    start = time.perf_counter()
    fine, coarse = solve_grid(problem, cells), solve_grid(problem, cells // 2)
    lo, hi = tuple(problem.lo), tuple(problem.hi)
    x = torch.as_tensor(np.random.default_rng(seed).uniform(lo, hi, size=(20000, problem.dim)))
    u_fine, u_coarse = (GridReference(lo=lo, hi=hi, u=grid).values(x) for grid in (fine, coarse))
    error = float((u_coarse - u_fine).norm() / 3 / max(float(u_fine.norm()), 1e-300))
    return GridReference(lo=lo, hi=hi, u=fine, error=error, seconds=time.perf_counter() - start)
