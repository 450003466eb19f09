"""Finite-element reference solutions on 2D and 3D domains that are not boxes.

The box version is :func:`mscalednn.reference.finite_difference`; this module does the same
for the domains of :mod:`mscalednn.geometry` (a shell, a box with holes, any CSG of boxes,
balls and shells) in 2 and 3 dimensions:

* the mesh (:func:`mesh`): the CSG tree rebuilt in gmsh's OpenCASCADE kernel (a box as a
  rectangle or a box, a ball as a disk or a sphere, a shell as the outer one minus the inner
  one, a difference / union / intersection as OCC's cut / fuse / intersect), meshed with
  triangles (tetrahedra in 3D) of size h, and read into a scikit-fem ``MeshTri`` (``MeshTet``).
  The mesh is polygonal (polyhedral): a curved boundary is replaced by chords of length ~h,
  which costs O(h^2) in the domain and bounds the method's L2 order by 2 there.
* the discretisation (:func:`solve_mesh`): continuous P2 (quadratic Lagrange) elements and the
  weak form

      int a grad u . grad v + c u v + kappa^2 sinh(u) v
        = int f v + sum_neumann int_part a g v ds + sum_robin int_part a (g - alpha u) v ds

  (the conditions are on du/dn, the flux is a du/dn). a, c, kappa^2 and f
  (:meth:`mscalednn.operator.Operator.coefficients`, ``problem.f``) are evaluated at the P2
  degrees of freedom and interpolated to the quadrature points (an O(h^3) change, and ~10x
  fewer evaluations of f: at the quadrature points they took 5.5 s of a 7 s 3D assembly); g
  and alpha at the facets' quadrature points (the boundary facets assigned to the named parts
  by ``geometry.part_of`` at their midpoints; g as the condition gives it, else from u* with
  the part's normal); u = g at the Dirichlet degrees of freedom (vertices and edge midpoints
  of the Dirichlet facets; g of the facet's part, as for the problem's boundary data). Damped Newton for the sinh
  term, as in the finite-difference reference. Linear systems: a sparse direct solve
  (SuperLU, COLAMD ordering) in 2D; conjugate gradients with a Jacobi preconditioner in 3D
  (measured on 10^4 degrees of freedom: 0.09 s, 122 iterations, against 2 s for SuperLU,
  whose fill grows fast in 3D; scipy's incomplete LU is not symmetric, and CG stalls with it).
  The default h aims at :data:`DOFS` degrees of freedom by dimension (a solve in well under a
  minute on two cores).
* the error estimate (:func:`finite_element`): the problem is solved on two gmsh meshes, of
  size h and 2h, and the reference's relative L2 error is estimated as
  ||u_2h - u_h|| / 3 / ||u_h|| at 20,000 random points of the domain (Richardson, assuming
  order 2: right where the polygonal boundary limits the order, as with Neumann or Robin
  conditions on a curve; conservative where the rate is higher, as P2's order 3 with
  Dirichlet conditions, where the estimate measured ~3x the true error).

Values at arbitrary points (:class:`MeshReference`) come from the P2 function on the element
that contains the point; a point of the true domain just outside the polygonal mesh (between a
chord and its arc) gets the polynomial of the element it is nearest to, extended (an error of
the order of the geometry's, never a NaN). Gradients are the P2 function's exact gradient on that
element (discontinuous across elements, second order). scikit-fem and gmsh are optional:
``pip install 'mscalednn[fem]'``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from threadpoolctl import threadpool_limits

from .errors import ProblemError
from .reference import CHUNK, NEWTON_MAX, NEWTON_TOL, Reference, field_values, register

# default h: from the number of P2 degrees of freedom aimed at on the fine mesh
DOFS = {2: 120_000, 3: 100_000}
DOFS_PER_VOLUME = {2: 4.7, 3: 7.1}  # P2 dofs per h^d of volume, measured on gmsh meshes (about)
CG_TOL, CG_MAX = 1e-12, 5000
POINTS = 20000  # random points of the error estimate


def _modules():
    """(skfem, gmsh), or a ProblemError saying how to install them."""
    try:
        import gmsh
        import skfem
    except ImportError as exc:
        raise ProblemError(f"a finite-element reference needs scikit-fem and gmsh ({exc.name} is missing): "
                           "pip install 'mscalednn[fem]'") from None
    return skfem, gmsh


# -- the mesh ----------------------------------------------------------------------------------

def _occ(geometry, occ, d: int) -> list[tuple[int, int]]:
    """The OCC entities (dim, tag) of a geometry (a CSG tree of boxes, balls and shells)."""
    from .geometry import Ball, Box, Difference, Intersection, Shell, Union

    def ball(center, r):
        c = tuple(center) + (0.0,) * (3 - d)
        return [(d, occ.addDisk(c[0], c[1], 0.0, r, r) if d == 2 else occ.addSphere(*c, r))]

    if isinstance(geometry, Box):
        lo, size = geometry.lo, [b - a for a, b in zip(geometry.lo, geometry.hi)]
        return [(2, occ.addRectangle(lo[0], lo[1], 0.0, *size))] if d == 2 else [(3, occ.addBox(*lo, *size))]
    if isinstance(geometry, Ball):
        return ball(geometry.center, geometry.radius)
    if isinstance(geometry, Shell):
        return occ.cut(ball(geometry.center, geometry.outer), ball(geometry.center, geometry.inner))[0]
    if isinstance(geometry, (Difference, Union, Intersection)):
        a, b = _occ(geometry.a, occ, d), _occ(geometry.b, occ, d)
        op = occ.cut if isinstance(geometry, Difference) else occ.fuse if isinstance(geometry, Union) \
            else occ.intersect
        return op(a, b)[0]
    raise ProblemError(f"a finite-element mesh cannot be built for {type(geometry).__name__} (boxes, balls, shells "
                       "and their differences, unions and intersections can)")


def mesh(geometry, h: float):
    """The geometry meshed by gmsh (OpenCASCADE) with elements of size ``h``: a scikit-fem
    ``MeshTri`` in 2D, ``MeshTet`` in 3D (gmsh's nodes that no element uses dropped)."""
    d = geometry.dim
    if d not in (2, 3):
        raise ProblemError(f"a finite-element reference needs a domain in 2 or 3 dimensions, not {d}")
    if not h > 0:
        raise ProblemError(f"the finite-element mesh size h must be positive, got {h}")
    skfem, gmsh = _modules()
    own = not gmsh.isInitialized()
    if own:
        gmsh.initialize(readConfigFiles=False, interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)  # deterministic meshes
        gmsh.model.add("mscalednn-fem")
        _occ(geometry, gmsh.model.occ, d)
        gmsh.model.occ.synchronize()
        for key, value in (("Mesh.MeshSizeMin", h), ("Mesh.MeshSizeMax", h), ("Mesh.MeshSizeFromPoints", 0),
                           ("Mesh.MeshSizeFromCurvature", 0), ("Mesh.MeshSizeExtendFromBoundary", 0),
                           ("Mesh.ElementOrder", 1)):
            gmsh.option.setNumber(key, value)
        gmsh.model.mesh.generate(d)
        tags, coords, _ = gmsh.model.mesh.getNodes()
        kind = 2 if d == 2 else 4  # gmsh's 3-node triangle, 4-node tetrahedron
        _, node_tags = gmsh.model.mesh.getElementsByType(kind)
    finally:
        if own:
            gmsh.finalize()
        else:  # gmsh was in use before: leave it as it was
            gmsh.model.remove()
    if len(node_tags) == 0:
        raise ProblemError("gmsh made no elements of the domain (is it empty?)")
    p = np.asarray(coords, dtype=np.float64).reshape(-1, 3)[:, :d]
    index = np.full(int(np.max(tags)) + 1, -1, dtype=np.int64)
    index[np.asarray(tags, dtype=np.int64)] = np.arange(len(tags))
    t = index[np.asarray(node_tags, dtype=np.int64)].reshape(-1, d + 1)
    used, t = np.unique(t, return_inverse=True)  # keep the nodes the elements use, renumbered
    t = t.reshape(-1, d + 1)
    cls = skfem.MeshTri if d == 2 else skfem.MeshTet
    return cls(np.ascontiguousarray(p[used].T), np.ascontiguousarray(t.T))


def default_h(geometry, dofs: int | None = None) -> float:
    """h for about ``dofs`` P2 degrees of freedom (default: :data:`DOFS` by dimension)."""
    d = geometry.dim
    return (DOFS_PER_VOLUME[d] * geometry.volume.value / (dofs or DOFS[d])) ** (1.0 / d)


def volume(m) -> float:
    """The area (volume) of a scikit-fem mesh."""
    d = m.p.shape[0]
    edges = m.p[:, m.t[1:]] - m.p[:, m.t[:1]]  # [d, d, M]
    return float(np.abs(np.linalg.det(np.moveaxis(edges, -1, 0))).sum() / math.factorial(d))


def boundary_parts(geometry, m) -> dict[str, np.ndarray]:
    """The boundary facets of mesh m by the geometry's part names (each facet by its midpoint)."""
    facets = m.boundary_facets()
    mid = m.p[:, m.facets[:, facets]].mean(axis=1).T
    which = geometry.part_of(mid)
    return {name: facets[which == i] for i, name in enumerate(geometry.parts)}


# -- the solve ---------------------------------------------------------------------------------

def _at(basis) -> np.ndarray:
    """The quadrature points of a basis [nelems * nqp, d], and the shape (nelems, nqp)."""
    x = np.asarray(basis.global_coordinates())  # [d, nelems, nqp]
    return x.reshape(x.shape[0], -1).T, x.shape[1:]


def _element(skfem, d: int, order: int):
    if order == 1:
        return skfem.ElementTriP1() if d == 2 else skfem.ElementTetP1()
    if order == 2:
        return skfem.ElementTriP2() if d == 2 else skfem.ElementTetP2()
    raise ProblemError(f"finite elements of order {order} are not supported (1 or 2)")


def _linear_solve(J: sp.csr_matrix, b: np.ndarray, d: int) -> np.ndarray:
    # one BLAS thread: the solves' vector operations are too small to share, and a busy machine
    # makes OpenBLAS's threads wait for each other (a dot product 100x slower, measured)
    with threadpool_limits(limits=1, user_api="blas"):
        return _solve(J, b, d)


def _solve(J: sp.csr_matrix, b: np.ndarray, d: int) -> np.ndarray:
    if d == 2:
        return spla.splu(J.tocsc(), permc_spec="COLAMD").solve(b)
    M = sp.diags(1.0 / J.diagonal())  # Jacobi (scipy's incomplete LU is not symmetric: CG stalls with it)
    x, info = spla.cg(J, b, M=M, rtol=CG_TOL, atol=0.0, maxiter=CG_MAX)
    if info != 0:
        raise ProblemError(f"the finite-element reference's conjugate gradients did not converge ({info})")
    return x


def solve_mesh(problem, m, order: int = 2) -> np.ndarray:
    """The finite-element solution of ``problem`` on the scikit-fem mesh m (P``order``
    elements): its degrees of freedom (scikit-fem's numbering of the basis on m)."""
    skfem, _ = _modules()
    from skfem.helpers import dot, grad

    d, op, geometry = problem.dim, problem.operator, problem.geometry
    basis = skfem.Basis(m, _element(skfem, d, order))
    # a, c, kappa^2 and f at the quadrature points: interpolated from their values at the degrees
    # of freedom (an O(h^(order+1)) change; f's Taylor-mode evaluation costs ~10x less this way)
    x = basis.doflocs.T
    a, _, c, kappa2 = (t.detach().double().numpy() for t in
                       (torch.cat(z) for z in zip(*(op.coefficients(torch.as_tensor(x[i:i + CHUNK]))
                                                    for i in range(0, len(x), CHUNK)))))
    a, c, kappa2, f = (np.asarray(basis.interpolate(v)) for v in (a, c, kappa2, field_values(problem.f, x)))

    @skfem.BilinearForm
    def stiffness(u, v, w):
        return w.a * dot(grad(u), grad(v)) + w.c * u * v

    @skfem.BilinearForm
    def mass(u, v, w):
        return w.r * u * v

    @skfem.LinearForm
    def load(v, w):
        return w.f * v

    K = stiffness.assemble(basis, a=a, c=c)
    b = load.assemble(basis, f=f)
    parts = boundary_parts(geometry, m)
    conditions = dict(problem.conditions)
    u = np.zeros(basis.N)
    dirichlet = []
    for name, facets in parts.items():
        condition = conditions.get(name)
        if len(facets) == 0:
            continue
        if condition is None or condition.kind == "dirichlet":
            # u = g at the part's degrees of freedom (g of this part: a point where parts meet
            # is not asked which part it is on)
            D = basis.get_dofs(facets).all()
            u[D] = field_values(lambda z, name=name: problem.part_g(name, z), basis.doflocs[:, D].T)
            dirichlet.append(D)
            continue
        fb = skfem.FacetBasis(m, basis.elem, facets=facets)
        y, fshape = _at(fb)
        n = torch.as_tensor(problem.geometry.parts[name].normal(y))  # g derived from u* needs the part's normal
        g = problem.part_g(name, torch.as_tensor(y), n).detach().double().numpy().reshape(fshape)
        a_s = field_values(lambda z: op.coefficients(z)[0], y).reshape(fshape)
        b = b + load.assemble(fb, f=a_s * g)
        if condition.kind == "robin":
            alpha = condition.coefficients(torch.as_tensor(y))[0].detach().double().numpy().reshape(fshape)
            K = K + mass.assemble(fb, r=a_s * alpha)
    D = np.unique(np.concatenate(dirichlet)) if dirichlet else np.zeros(0, dtype=np.int64)
    inner = np.ones(basis.N, dtype=bool)
    inner[D] = False
    K = K.tocsr()
    K_ii, rhs = K[inner][:, inner], b[inner] - K[inner][:, ~inner] @ u[~inner]
    nonlinear = op.kappa is not None and bool(np.any(kappa2 != 0))

    def sinh_term(v):  # (int kappa^2 sinh(u) phi_i, the Jacobian's mass matrix) at u with u[inner] = v
        u[inner] = v
        uq = np.asarray(basis.interpolate(u))
        s = load.assemble(basis, f=kappa2 * np.sinh(uq))[inner]
        return s, uq

    v = u[inner].copy()
    scale = max(float(np.abs(rhs).max()), 1e-300)
    diagonal = float(np.abs(K_ii.diagonal()).max())
    F = None
    for _ in range(NEWTON_MAX if nonlinear else 1):
        if not nonlinear:
            v = _linear_solve(K_ii, rhs, d)
            break
        s, uq = sinh_term(v)
        F = K_ii @ v + s - rhs
        norm = float(np.abs(F).max())
        if norm <= NEWTON_TOL * (scale + diagonal * float(np.abs(v).max())):
            break
        J = K_ii + mass.assemble(basis, r=kappa2 * np.cosh(uq)).tocsr()[inner][:, inner]
        step = _linear_solve(J, -F, d)
        t = 1.0
        while t > 1e-4:  # damped Newton: the residual must fall
            trial = v + t * step
            if float(np.abs(K_ii @ trial + sinh_term(trial)[0] - rhs).max()) < norm:
                break
            t /= 2
        v = v + t * step
    else:
        raise ProblemError(f"{problem.name}: the finite-element reference's Newton iteration did not converge in "
                           f"{NEWTON_MAX} steps (residual {float(np.abs(F).max()):.3g})")
    u[inner] = v
    return u


# -- the reference -----------------------------------------------------------------------------

@register
@dataclass(frozen=True, kw_only=True)
class MeshReference(Reference):
    """A finite-element function on a triangle (tetrahedron) mesh: vertices p [d, Np], elements
    t [d + 1, M], Lagrange elements of ``order`` (2: P2) with the degrees of freedom u in
    scikit-fem's numbering (rebuilt from p, t and the order). Values and gradients at any point
    from the element containing it, or the nearest one for a point just outside the mesh
    (extended: see the module docstring)."""

    p: np.ndarray
    t: np.ndarray
    u: np.ndarray
    order: int = 2
    kind: str = "finite-element"
    FORM: ClassVar[str] = "mesh"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return self.p.shape[0]

    def _basis(self):
        if "basis" not in self._cache:
            skfem, _ = _modules()
            cls = skfem.MeshTri if self.dim == 2 else skfem.MeshTet
            m = cls(np.ascontiguousarray(self.p, dtype=np.float64), np.ascontiguousarray(self.t, dtype=np.int64))
            basis = skfem.Basis(m, _element(skfem, self.dim, self.order), intorder=1)
            if basis.N != len(self.u):
                raise ProblemError(f"the saved finite-element reference has {len(self.u)} values for {basis.N} "
                                   "degrees of freedom")
            from scipy.spatial import cKDTree

            self._cache["basis"] = basis
            self._cache["tree"] = cKDTree(m.p[:, m.t].mean(axis=1).T)
        return self._cache["basis"], self._cache["tree"]

    def _locate(self, x: np.ndarray) -> np.ndarray:
        """The element of each point: one that contains it, else the one it is least outside of
        (of those with the nearest centroids)."""
        basis, tree = self._basis()
        mapping = basis.mapping
        invA, b = mapping.invA, mapping.b  # x -> reference coordinates X = invA (x - b)
        best = np.zeros(len(x), dtype=np.int64)
        score = np.full(len(x), -np.inf)
        for k in (8 * self.dim, 64 * self.dim):
            todo = score < -1e-12
            if not todo.any():
                break
            k = min(k, self.t.shape[1])
            _, cand = tree.query(x[todo], k)
            cand = cand.reshape(int(todo.sum()), k)
            y = x[todo].T[:, :, None] - b[:, cand]  # [d, n, k]
            X = np.einsum("ijnk,jnk->ink", invA[:, :, cand], y)  # reference coordinates
            lam = np.concatenate([X, 1 - X.sum(axis=0, keepdims=True)], axis=0).min(axis=0)  # [n, k]
            pick = lam.argmax(axis=1)
            s = lam[np.arange(len(pick)), pick]
            rows = np.flatnonzero(todo)
            better = s > score[rows]
            best[rows[better]], score[rows[better]] = cand[np.arange(len(pick)), pick][better], s[better]
        return best

    def _evaluate(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        points = x.detach().cpu().double().numpy().reshape(-1, self.dim)
        basis, _ = self._basis()
        value, gradient = np.zeros(len(points)), np.zeros((len(points), self.dim))
        for i in range(0, len(points), CHUNK):
            xs = points[i:i + CHUNK]
            cells = self._locate(xs)
            X = basis.mapping.invF(xs.T[:, :, None], tind=cells)  # [d, n, 1]
            dofs = self.u[basis.element_dofs[:, cells]]  # [Nbfun, n]
            for k in range(basis.Nbfun):
                phi = basis.elem.gbasis(basis.mapping, X, k, tind=cells)[0]
                value[i:i + CHUNK] += dofs[k] * np.asarray(phi)[:, 0]
                gradient[i:i + CHUNK] += (dofs[k] * phi.grad[:, :, 0]).T
        return value, gradient

    def values(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._evaluate(x)[0])

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self._evaluate(x)[1])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"p": self.p, "t": self.t, "u": self.u, "order": np.array(self.order)}

    @classmethod
    def from_arrays(cls, arrays, **common) -> "MeshReference":
        return cls(p=arrays["p"], t=arrays["t"], u=arrays["u"], order=int(arrays["order"]), **common)

    def where(self) -> str:
        what = "triangles" if self.dim == 2 else "tetrahedra"
        return f" on {self.t.shape[1]:,} {what} (P{self.order})"


def _reference(m, u: np.ndarray, order: int, **common) -> MeshReference:
    return MeshReference(p=np.asarray(m.p), t=np.asarray(m.t), u=u, order=order, **common)


def finite_element(problem, h: float | None = None, seed: int = 0, order: int = 2) -> MeshReference:
    """The finite-element reference of ``problem`` (a domain in 2 or 3 dimensions) on a gmsh
    mesh of size ``h`` (default: :func:`default_h`, about :data:`DOFS` degrees of freedom), with
    its relative L2 error estimated from the solution on a mesh of size 2h: ||u_2h - u_h|| / 3 /
    ||u_h|| at 20,000 random points of the domain (Richardson for order 2, the order the
    polygonal boundary allows; conservative where the observed order is higher)."""
    d = problem.dim
    if d not in (2, 3):
        raise ProblemError(f"{problem.name}: a finite-element reference needs a domain in 2 or 3 dimensions (this "
                           f"problem is in {d}); give an exact solution")
    _modules()
    geometry = problem.geometry
    h = h or default_h(geometry)
    start = time.perf_counter()
    fine_mesh, coarse_mesh = mesh(geometry, h), mesh(geometry, 2 * h)
    fine = _reference(fine_mesh, solve_mesh(problem, fine_mesh, order), order)
    coarse = _reference(coarse_mesh, solve_mesh(problem, coarse_mesh, order), order)
    x = torch.as_tensor(geometry.sample_interior(POINTS, np.random.default_rng(seed)))
    u_fine, u_coarse = fine.values(x), coarse.values(x)
    error = float((u_coarse - u_fine).norm() / 3 / max(float(u_fine.norm()), 1e-300))
    return _reference(fine_mesh, fine.u, order, error=error, seconds=time.perf_counter() - start)
