"""Finite-element references (mscalednn.fem) on domains that are not boxes: the gmsh mesh of a
CSG geometry, P2 solves against exact solutions (mixed conditions, variable coefficients and the
sinh term, 3D), the Richardson estimate, and the saved form. Coarse meshes: the whole file runs
in seconds."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

skfem = pytest.importorskip("skfem")
pytest.importorskip("gmsh")

from mscalednn import fem  # noqa: E402
from mscalednn.config import load_problem  # noqa: E402
from mscalednn.errors import ProblemError  # noqa: E402
from mscalednn.geometry import Ball, Box, Shell  # noqa: E402
from mscalednn.reference import Reference  # noqa: E402

PROBLEMS = Path(__file__).resolve().parent.parent / "problems"

VARIABLE = """
name: variable_sinh
dim: 2
domain:
  difference:
    - box: {lo: 0, hi: 1, name: outer}
    - ball: {center: [0.5, 0.45], radius: 0.2, name: hole}
boundary:
  outer: dirichlet
  hole: {robin: {alpha: 2}}
operator:
  a: "1 + 0.5*x[0]*x[1]"
  c: "1 + x[0]"
  kappa: "1.5"
exact: "sin(2*x[0])*cos(x[1]) + 0.5 + 0.1*sin(8*x[1])"
"""


def problem(name):
    return load_problem(PROBLEMS / f"{name}.yaml")[0]


def rel_l2(ref, p, n=4000, seed=1):
    x = torch.as_tensor(p.geometry.sample_interior(n, np.random.default_rng(seed)))
    exact = p.exact(x).detach().double()
    return float((ref.values(x) - exact).norm() / exact.norm())


def solved(p, h):
    m = fem.mesh(p.geometry, h)
    return fem.MeshReference(p=m.p, t=m.t, u=fem.solve_mesh(p, m))


@pytest.mark.parametrize("geometry, h, tol", [
    (Shell((0.0, 0.0), 0.5, 1.0), 0.1, 0.01),
    (Box((0, 0), (1, 1), name="outer") - Ball((0.25, 0.25), 0.1, name="holes") - Ball((0.6, 0.6), 0.2, name="holes"),
     0.05, 0.01),
    (Box((0, 0, 0), (1, 1, 1), name="outer") - Ball((0.3, 0.3, 0.3), 0.2, name="holes")
     - Ball((0.7, 0.6, 0.4), 0.15, name="holes"), 0.15, 0.03),
])
def test_mesh_volume_is_the_geometry_s(geometry, h, tol):
    m = fem.mesh(geometry, h)
    exact = geometry.volume.value if geometry.volume.exact else None
    if exact is None:  # a box minus disjoint balls inside it: the volume in closed form
        from mscalednn.geometry import ball_volume
        balls = [geometry.b, geometry.a.b]
        exact = 1.0 - sum(ball_volume(geometry.dim, b.radius) for b in balls)
    assert fem.volume(m) == pytest.approx(exact, rel=tol)
    assert np.unique(m.t).size == m.p.shape[1]  # no unused nodes
    assert isinstance(m, skfem.MeshTri if geometry.dim == 2 else skfem.MeshTet)


def test_boundary_facets_are_assigned_to_their_parts():
    shell = Shell((0.0, 0.0), 0.5, 1.0)
    m = fem.mesh(shell, 0.1)
    parts = fem.boundary_parts(shell, m)
    assert list(parts) == ["outer", "inner"]
    for name, radius in (("inner", 0.5), ("outer", 1.0)):
        mid = m.p[:, m.facets[:, parts[name]]].mean(axis=1)
        assert np.abs(np.linalg.norm(mid, axis=0) - radius).max() < 0.01
    assert sum(len(f) for f in parts.values()) == len(m.boundary_facets())
    box = Box((0, 0), (1, 1), name="outer") - Ball((0.5, 0.5), 0.2, name="holes")
    m = fem.mesh(box, 0.05)
    parts = fem.boundary_parts(box, m)
    mid = m.p[:, m.facets[:, parts["outer"]]].mean(axis=1)
    assert np.minimum(mid, 1 - mid).min(axis=0).max() < 1e-12  # every one on a side of the square
    mid = m.p[:, m.facets[:, parts["holes"]]].mean(axis=1)
    assert np.abs(np.linalg.norm(mid - 0.5, axis=0) - 0.2).max() < 0.01


@pytest.mark.parametrize("name", ["annulus2d", "holes3d"])
def test_default_h_aims_at_a_number_of_degrees_of_freedom(name):
    geometry = problem(name).geometry
    m = fem.mesh(geometry, fem.default_h(geometry, dofs=5000))
    element = skfem.ElementTriP2() if geometry.dim == 2 else skfem.ElementTetP2()
    assert 3500 < skfem.Basis(m, element).N < 7500


def test_dimensions_other_than_2_and_3_are_refused():
    with pytest.raises(ProblemError, match="2 or 3 dimensions"):
        fem.mesh(Ball((0.0,) * 4, 1.0), 0.1)
    with pytest.raises(ProblemError, match="2 or 3 dimensions"):
        fem.finite_element(problem("ball10d"))


def test_annulus_converges_at_order_two_and_the_estimate_is_honest():
    """Neumann on the inner circle, Robin on the outer: the error against the exact solution falls
    by 4 (order 2, the polygonal boundary's) when h halves, and the h / 2h estimate is within a
    factor 3 of the true error."""
    p = problem("annulus2d")
    ref = fem.finite_element(p, h=0.05)
    fine = rel_l2(ref, p)
    coarse = rel_l2(solved(p, 0.1), p)
    assert fine < 1e-3
    assert math.log2(coarse / fine) > 1.7
    assert 0.3 * fine < ref.error < 3 * fine
    assert ref.kind == "finite-element" and ref.seconds > 0
    assert ref.where().endswith("triangles (P2)")


def test_variable_coefficients_robin_hole_and_sinh(tmp_path):
    """-div(a grad u) + c u + kappa^2 sinh(u) = f with a, c varying, u = g on the square and
    Robin on a hole: Newton's solution matches the manufactured one, and its gradient too."""
    (tmp_path / "p.yaml").write_text(VARIABLE)
    p, _ = load_problem(tmp_path / "p.yaml")
    ref = solved(p, 0.05)
    assert rel_l2(ref, p) < 2e-4
    x = torch.as_tensor(p.geometry.sample_interior(4000, np.random.default_rng(2)))
    grad = p.grad_u(x).detach().double()
    assert float((ref.gradient(x) - grad).norm() / grad.norm()) < 1e-2


def test_holes3d():
    p = problem("holes3d")
    ref = solved(p, 0.12)
    assert rel_l2(ref, p, n=2000) < 1e-2  # 5.0e-3 measured
    assert ref.where().endswith("tetrahedra (P2)")


def test_save_load_round_trip_and_points_outside_the_mesh(tmp_path):
    p = problem("annulus2d")
    ref = fem.finite_element(p, h=0.1)
    ref.save(tmp_path)
    back = Reference.load(tmp_path)
    assert isinstance(back, fem.MeshReference)
    assert (back.kind, back.error, back.seconds, back.order) == (ref.kind, ref.error, ref.seconds, 2)
    x = torch.as_tensor(p.geometry.sample_interior(500, np.random.default_rng(3)))
    assert torch.equal(back.values(x), ref.values(x))
    assert torch.equal(back.gradient(x), ref.gradient(x))
    # the true domain's boundary (outside the polygon between the outer circle's chords) and a
    # little beyond: finite values, close to the exact ones
    angle = np.linspace(0, 2 * np.pi, 200)
    ring = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    for r in (1.0, 1.001, 0.5, 0.499):
        y = torch.as_tensor(r * ring)
        v, g = back.values(y), back.gradient(y)
        assert torch.isfinite(v).all() and torch.isfinite(g).all()
        assert float((v - p.exact(y).detach()).abs().max()) < 0.01  # 1.9e-3 measured


def test_a_missing_gmsh_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gmsh", None)
    with pytest.raises(ProblemError, match=r"pip install 'mscalednn\[fem\]'"):
        fem.mesh(Shell((0.0, 0.0), 0.5, 1.0), 0.1)


def test_dirichlet_and_neumann_parts_that_meet(tmp_path):
    """A half-disk bitten out of the square's side: the Dirichlet sides meet the Neumann arc at
    two corners, whose degrees of freedom take the Dirichlet data (not du/dn)."""
    (tmp_path / "p.yaml").write_text("""
name: bitten
dim: 2
domain:
  difference:
    - box: {lo: 0, hi: 1, name: outer}
    - ball: {center: [0.5, 0.0], radius: 0.3, name: bite}
boundary:
  outer: dirichlet
  bite: neumann
exact: "exp(x[0])*cos(2*x[1]) + 3"
""")
    p, _ = load_problem(tmp_path / "p.yaml")
    ref = solved(p, 0.05)
    assert rel_l2(ref, p) < 1e-4
    corners = torch.tensor([[0.2, 0.0], [0.8, 0.0]], dtype=torch.float64)
    assert torch.allclose(ref.values(corners), p.exact(corners).detach(), atol=1e-6)
