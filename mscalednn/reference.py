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
  where a jumps), written as finite volumes on the nodes' cells (halved at the box's faces):
  Dirichlet data at the nodes of Dirichlet faces, the flux a g (Neumann) or a (g - alpha u)
  (Robin) through the outer side of the others' cells; Newton's method for the sinh term
  (direct sparse solves in 1D and 2D, conjugate gradients with a Jacobi preconditioner in 3D).
  Second order in h for smooth a (tested: fitted rate 2 on manufactured variable-coefficient
  problems, with Dirichlet, Neumann and Robin faces). The grid is solved twice, at h and 2h; the reference's error is estimated from
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
from threadpoolctl import threadpool_limits

from .errors import ProblemError

FILE = "reference.npz"
CELLS = {1: 4096, 2: 512, 3: 64}  # cells per axis of the fine grid
NEWTON_TOL, NEWTON_MAX = 1e-12, 50
CHUNK = 1 << 16  # points per evaluation of a field


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
    def has_gradient(self) -> bool:
        return True

    @property
    def points(self) -> np.ndarray | None:
        """The points the reference is known at exactly, where errors are best measured (None:
        anywhere in the domain)."""
        return None

    def subset(self, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None] | None:
        """(x, u, grad u or None) at up to n of :attr:`points` (a fixed random choice), or None
        where the reference has no points of its own."""
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


@register
@dataclass(frozen=True, kw_only=True)
class PointReference(Reference):
    """A solution known at given points: u [M] at x [M, d], and grad u [M, d] where given (a
    user's own solve, :func:`read_points`). The errors are measured at these points
    (:attr:`points`); without gradients there is no H1 error. Elsewhere (the plots, the
    diagnostics) values come from linear interpolation over the points' Delaunay triangulation
    for d = 2, 3 (the nearest point outside it), np.interp for d = 1, the nearest point above."""

    x: np.ndarray
    u: np.ndarray
    grad: np.ndarray | None = None
    kind: str = "file"
    FORM: ClassVar[str] = "points"

    @property
    def points(self) -> np.ndarray:
        return self.x

    @property
    def has_gradient(self) -> bool:
        return self.grad is not None

    def subset(self, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
        pick = np.arange(len(self.u)) if len(self.u) <= n else \
            np.sort(np.random.default_rng(seed).choice(len(self.u), n, replace=False))
        return torch.as_tensor(self.x[pick]), self.u[pick], None if self.grad is None else self.grad[pick]

    def values(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._interpolate(self.u, x))

    def gradient(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self.grad is None else torch.as_tensor(self._interpolate(self.grad, x))

    def _interpolate(self, data: np.ndarray, x: torch.Tensor) -> np.ndarray:
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
        y = x.detach().cpu().double().numpy()
        d = self.x.shape[1]
        if d == 1:
            order = np.argsort(self.x[:, 0])
            columns = data[order].reshape(len(order), -1).T
            out = np.stack([np.interp(y[:, 0], self.x[order, 0], col) for col in columns], axis=1)
            return out.reshape((len(y),) + data.shape[1:])
        nearest = NearestNDInterpolator(self.x, data)(y)
        if d > 3:
            return nearest
        with threadpool_limits(limits=1, user_api="blas"):  # qhull's many 3 x 3 solves: threads only wait
            linear = LinearNDInterpolator(self.x, data)(y)
        return np.where(np.isnan(linear), nearest, linear)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"x": self.x, "u": self.u, **({} if self.grad is None else {"grad": self.grad})}

    @classmethod
    def from_arrays(cls, arrays, **common) -> "PointReference":
        return cls(x=arrays["x"], u=arrays["u"], grad=arrays.get("grad"), **common)

    def where(self) -> str:
        return f" at {len(self.u):,} points" + ("" if self.grad is not None else " (values only: no H1 error)")


def read_points(path: str | Path, geometry, error: float | None = None) -> PointReference:
    """The reference a user gives as a ``.npz`` file: ``x`` [M, d] points of the domain, ``u`` [M]
    values, optionally ``grad_u`` [M, d]. ProblemError (one line) for a missing file or array,
    wrong shapes, values that are not finite, or points outside the domain."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"expected a .npz file of points and values (x, u, optionally grad_u); {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    except (OSError, ValueError) as exc:
        raise ProblemError(f"reference file {path}: not a readable .npz file ({exc})") from None
    missing = [k for k in ("x", "u") if k not in arrays]
    if missing:
        raise ProblemError(f"reference file {path}: expected arrays x [M, d] and u [M] (and optionally grad_u "
                           f"[M, d]); {' and '.join(missing)} missing (it has {', '.join(sorted(arrays)) or 'none'})")
    x, u, grad = arrays["x"], arrays["u"], arrays.get("grad_u")
    d = geometry.dim
    x = x.reshape(-1, 1) if x.ndim == 1 and d == 1 else x
    if x.ndim != 2 or x.shape[1] != d or u.shape != (x.shape[0],) or (grad is not None and grad.shape != x.shape):
        raise ProblemError(f"reference file {path}: expected x [M, {d}], u [M] and grad_u [M, {d}]; got x "
                           f"{list(x.shape)}, u {list(u.shape)}" + ("" if grad is None else f", grad_u {list(grad.shape)}"))
    if len(u) < 2:
        raise ProblemError(f"reference file {path}: expected at least 2 points, got {len(u)}")
    for name, values in (("x", x), ("u", u), ("grad_u", grad)):
        if values is not None and not np.isfinite(values).all():
            raise ProblemError(f"reference file {path}: {name} is not finite at "
                               f"{int((~np.isfinite(values.reshape(len(u), -1))).any(axis=1).sum())} points")
    outside = ~geometry.contains(x)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ProblemError(f"reference file {path}: {int(outside.sum())} of {len(u)} points lie outside the domain, "
                           f"e.g. x = ({', '.join(f'{v:.4g}' for v in x[i][:6])})")
    return PointReference(x=x, u=u, grad=grad, error=error)


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


def field_values(fn, x: np.ndarray) -> np.ndarray:
    """fn at points x [N, d] (float64 NumPy in and out; in chunks of :data:`CHUNK` points)."""
    with torch.no_grad():
        out = [fn(torch.as_tensor(x[i:i + CHUNK], dtype=torch.float64)).detach().double().cpu().numpy()
               for i in range(0, len(x), CHUNK)]
    return np.concatenate(out) if out else np.zeros(0)


def solve_grid(problem, cells: int) -> np.ndarray:
    """The finite-difference solution of ``problem`` (a box, d <= 3) on ``cells`` cells per axis:
    the node values [cells + 1] * d.

    Written as finite volumes on the nodes' cells (halved at the faces of the box), which is the
    five-point stencil inside and the standard second-order treatment of Neumann and Robin faces:
    a face node's cell gains the flux a du/dn = a g (Neumann) or a (g - alpha u) (Robin) through its
    outer side. A node on a Dirichlet face takes g."""
    d, n = problem.dim, cells + 1
    x, _ = _nodes(problem.lo, problem.hi, cells)
    index = np.indices((n,) * d).reshape(d, -1).T
    h = np.array([(b - a) / cells for a, b in zip(problem.lo, problem.hi)])
    a, _, c, kappa2 = (t.detach().numpy() for t in problem.operator.coefficients(torch.as_tensor(x, dtype=torch.float64)))
    at_face = (index == 0) | (index == cells)  # [N, d]: on a face normal to axis k
    width = h * np.where(at_face, 0.5, 1.0)  # the node's cell along each axis
    volume = width.prod(axis=1)
    # -div(a grad u): for each axis, the flux between neighbours through the face of their cells
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
        area = along(left) @ (volume / width[:, k])  # the cells' common face (same across the line)
        D = along(diff)
        A = A + D.T @ sp.diags(face * area / h[k]) @ D
    fixed, u, robin, flux = _box_conditions(problem, x, index, cells, volume / width.T, a)
    free = ~fixed
    A = (A + sp.diags(robin)).tocsr()
    rhs = volume[free] * field_values(problem.f, x[free]) + flux[free] - A[free][:, fixed] @ u[fixed]
    A_ff = A[free][:, free].tocsc()
    c, kappa2 = volume[free] * c[free], volume[free] * kappa2[free]
    u[free] = _newton(problem, A_ff, c, kappa2, rhs, d)
    return u.reshape((n,) * d)


def _box_conditions(problem, x, index, cells, face_area, a):
    """Where the box's faces meet the boundary conditions: which nodes are Dirichlet (fixed
    [N]) and their values (u [N], 0 elsewhere), the Robin terms a alpha |face| on the diagonal
    [N], and the Neumann and Robin inflow a g |face| [N] (a node on several faces sums them; a
    node on any Dirichlet face is fixed, with that face's data)."""
    N, d = index.shape
    fixed, u, robin, flux = np.zeros(N, dtype=bool), np.zeros(N), np.zeros(N), np.zeros(N)
    if not problem.conditions:
        fixed[((index == 0) | (index == cells)).any(axis=1)] = True
        u[fixed] = field_values(problem.g, x[fixed])
        return fixed, u, robin, flux
    names, given = list(problem.geometry.parts), dict(problem.conditions)
    for k, side in itertools.product(range(d), (0, 1)):
        rows = index[:, k] == side * cells
        xs = x[rows]
        part = names[int(problem.geometry.part_of(xs.mean(axis=0, keepdims=True))[0])]
        condition = given[part]
        xt = torch.as_tensor(xs, dtype=torch.float64)
        normal = torch.zeros_like(xt)
        normal[:, k] = 1.0 if side else -1.0
        g = problem.part_g(part, xt, normal).numpy()
        if condition.kind == "dirichlet":
            fixed[rows] = True
            u[rows] = g
            continue
        alpha = condition.coefficients(xt)[0].numpy()
        robin[rows] += a[rows] * alpha * face_area[k][rows]
        flux[rows] += a[rows] * g * face_area[k][rows]
    return fixed, u, robin, flux


def _newton(problem, A, c, kappa2, rhs, d) -> np.ndarray:
    """v with A v + c v + kappa2 sinh(v) = rhs: one linear solve without the sinh term, else
    damped Newton."""
    nonlinear = problem.operator.kappa is not None and bool(np.any(kappa2 != 0))
    v = np.zeros(rhs.shape[0])
    scale = max(float(np.abs(rhs).max()), 1e-300)
    diagonal = float(np.abs(A.diagonal()).max())

    def residual(v):
        return A @ v + c * v + kappa2 * np.sinh(v) - rhs

    for _ in range(NEWTON_MAX if nonlinear else 1):
        F = residual(v)
        # converged: the residual at the level of rounding in A v
        if nonlinear and float(np.abs(F).max()) <= NEWTON_TOL * (scale + diagonal * float(np.abs(v).max())):
            break
        step = _linear_solve((A + sp.diags(c + kappa2 * np.cosh(v))).tocsc(), -F, d)
        t = 1.0
        while nonlinear and t > 1e-4:  # damped Newton: the residual must fall
            if float(np.abs(residual(v + t * step)).max()) < float(np.abs(F).max()):
                break
            t /= 2
        v = v + t * step
    else:
        if nonlinear:
            raise ProblemError(f"{problem.name}: the finite-difference reference's Newton iteration did not converge "
                               f"in {NEWTON_MAX} steps (residual {float(np.abs(F).max()):.3g})")
    return v


def _linear_solve(J: sp.csc_matrix, b: np.ndarray, d: int) -> np.ndarray:
    if d <= 2:
        return spla.spsolve(J, b)
    M = sp.diags(1.0 / J.diagonal())
    x, info = spla.cg(J, b, M=M, rtol=1e-12, maxiter=20000)
    if info != 0:
        raise ProblemError(f"the finite-difference reference's conjugate gradients did not converge ({info})")
    return x


def compute(problem) -> Reference:
    """The reference solution of a problem without an exact one: finite differences on a box in
    1, 2 or 3 dimensions, finite elements (:func:`mscalednn.fem.finite_element`) on other domains
    in 2 and 3."""
    if problem.is_box and problem.dim <= 3:
        return finite_difference(problem)
    if problem.dim in (2, 3):
        from .fem import finite_element
        return finite_element(problem)
    raise ProblemError(f"{problem.name}: no exact solution, and no reference can be computed in {problem.dim} "
                       "dimensions on this domain (finite differences: boxes in 1-3 dimensions; finite elements: "
                       "2 and 3); give exact, or a reference file")


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
