"""Domains in any dimension: boxes, balls, spherical shells, and their unions, intersections and
differences, with named boundary parts.

    domain = Box((0, 0), (1, 1), name="outer") - Ball((0.3, 0.3), 0.1, name="holes") - Ball((0.7, 0.6), 0.15, name="holes")

A domain answers what a solver asks of it, all in float64 NumPy:

* ``contains(x)``: membership of points x [N, d] (the closed set);
* ``sample_interior(n, rng)``: n points uniform in the domain by volume;
* ``parts``: the boundary, as named parts (the names the primitives were given; primitives with
  the same name make one part), each with ``sample(n, rng)`` uniform by surface measure,
  ``normal(x)`` the outward unit normal of the domain there, and ``area``;
* ``volume`` and each part's ``area``: :class:`Measure`, exact where a closed form exists (the
  primitives), estimated by Monte Carlo otherwise (a CSG), with the estimate's standard error.

A primitive samples exactly: a box uniformly, a ball with radius r U^(1/d) times a uniform
direction, a shell with radius (r0^d + U (r1^d - r0^d))^(1/d); a sphere's surface by normalised
Gaussian vectors. A CSG samples by rejection from one of its operands (a difference from the
first operand, rejecting the points in the second), so a ball in 10 dimensions with holes does
not pay the ball's 0.25% share of its bounding box. The boundary of a CSG is made of pieces of
its operands' boundaries (A - B: the part of A's boundary outside B and the part of B's inside
A, whose normal turns around), sampled by rejection on the primitive surfaces.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MC_POINTS = 200_000  # Monte Carlo points per estimated measure (standard error ~ 0.2% at share 1/2)
MC_SEED = 20261203
TOL = 1e-9  # membership of the closed set allows this much (times the shape's size) of rounding


@dataclass(frozen=True)
class Measure:
    """A volume or an area: ``value``, and ``stderr`` (0 where ``exact``)."""

    value: float
    exact: bool = True
    stderr: float = 0.0


def _rows(x) -> np.ndarray:
    return np.atleast_2d(np.asarray(x, dtype=np.float64))


def _directions(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors uniform on the sphere S^(d-1)."""
    v = rng.standard_normal((n, d))
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def box_face_areas(lo, hi) -> tuple[float, ...]:
    """The area of the face x_k = lo_k of the box [lo, hi] (equal to that of x_k = hi_k), for
    each k (1 for each end point in 1D)."""
    sides = [b - a for a, b in zip(lo, hi)]
    return tuple(math.prod(sides[:k] + sides[k + 1:]) for k in range(len(sides)))


def unit_box_boundary(u: np.ndarray, face_cdf: np.ndarray) -> np.ndarray:
    """Points on the boundary of the unit box from uniform numbers u [n, d] (random or
    quasi-random): u[:, 0] chooses a face by the cumulative face shares ``face_cdf`` (faces lo_0,
    hi_0, lo_1, ...), u[:, 1:] fill its d - 1 free coordinates in order."""
    n, d = u.shape
    face = np.searchsorted(face_cdf, u[:, 0] * (1 - 1e-12), side="right")
    axis, side = face // 2, (face % 2).astype(float)
    rows, m = np.arange(n)[:, None], np.arange(d - 1)[None, :]
    point = np.empty_like(u)
    point[rows, m + (m >= axis[:, None])] = u[:, 1:]
    point[np.arange(n), axis] = side
    return point


def _total(measures) -> Measure:
    """The sum of measures (exact if all are; standard errors added in quadrature)."""
    measures = list(measures)
    return Measure(sum(m.value for m in measures), all(m.exact for m in measures),
                   math.sqrt(sum(m.stderr ** 2 for m in measures)))


def ball_volume(d: int, r: float) -> float:
    """pi^(d/2) / Gamma(d/2 + 1) r^d."""
    return math.exp(0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)) * r ** d


def sphere_area(d: int, r: float) -> float:
    """The surface measure of the sphere of radius r in R^d: d / r times the ball's volume."""
    return d * ball_volume(d, r) / r


# -- surfaces: the primitive pieces of a boundary ---------------------------------------------

@dataclass(frozen=True)
class Sphere:
    """The sphere |x - center| = radius; ``inward``: its normal points to the center."""

    center: tuple[float, ...]
    radius: float
    inward: bool = False

    @property
    def area(self) -> float:
        return sphere_area(len(self.center), self.radius)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.center) + self.radius * _directions(n, len(self.center), rng)

    def normal(self, x: np.ndarray) -> np.ndarray:
        v = x - np.asarray(self.center)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        return -v if self.inward else v


@dataclass(frozen=True)
class BoxFaces:
    """Faces of the box [lo, hi] (outward normals), chosen in proportion to their areas: all 2d,
    or those listed in ``faces`` (face 2k is x_k = lo_k, face 2k + 1 is x_k = hi_k)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    faces: tuple[int, ...] | None = None

    def _areas(self) -> np.ndarray:
        """The area of each of the 2d faces (lo_0, hi_0, lo_1, ...), 0 for a face not in this set."""
        areas = np.repeat(box_face_areas(self.lo, self.hi), 2)
        if self.faces is not None:
            areas[[i for i in range(len(areas)) if i not in self.faces]] = 0.0
        return areas

    @property
    def area(self) -> float:
        return float(self._areas().sum())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        areas = self._areas()
        return lo + unit_box_boundary(rng.random((n, len(lo))), np.cumsum(areas) / areas.sum()) * (hi - lo)

    def gaps(self, x: np.ndarray) -> np.ndarray:
        """The distance of each point to the plane of each face [n, 2d] (faces lo_0, hi_0, lo_1, ...;
        infinite for a face not in this set)."""
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        gap = np.stack([np.abs(x - lo), np.abs(x - hi)], axis=2).reshape(len(x), -1)
        return np.where(self._areas() > 0, gap, np.inf) if self.faces is not None else gap

    def normal(self, x: np.ndarray) -> np.ndarray:
        """+-e_k for the face the point is nearest to."""
        which = self.gaps(x).argmin(axis=1)
        n = np.zeros_like(x)
        n[np.arange(len(x)), which // 2] = np.where(which % 2 == 1, 1.0, -1.0)
        return n


@dataclass(frozen=True)
class Piece:
    """Part of a primitive surface: the points of ``surface`` where every ``(geometry, inside)``
    condition holds (the point is inside, or outside, that geometry's interior), with the normal
    turned around where ``flip``."""

    surface: Sphere | BoxFaces
    conditions: tuple[tuple["Geometry", bool], ...] = ()
    flip: bool = False

    def keep(self, x: np.ndarray) -> np.ndarray:
        ok = np.ones(len(x), dtype=bool)
        for geometry, inside in self.conditions:
            ok &= geometry.interior(x) == inside
        return ok

    def restricted(self, geometry: "Geometry", inside: bool, flip: bool = False) -> "Piece":
        return Piece(self.surface, self.conditions + ((geometry, inside),), self.flip ^ flip)


@dataclass(frozen=True)
class Part:
    """A named part of a domain's boundary: one or more pieces of primitive surfaces."""

    name: str
    pieces: tuple[Piece, ...]

    def piece_areas(self) -> list[Measure]:
        return [_piece_area(p) for p in self.pieces]

    @property
    def area(self) -> Measure:
        return _total(self.piece_areas())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points uniform on the part by surface measure."""
        weights = np.array([a.value for a in self.piece_areas()])
        if weights.sum() <= 0:
            raise ValueError(f"boundary part {self.name!r} is empty")
        counts = rng.multinomial(n, weights / weights.sum())
        out = [_rejection(lambda m, p=p: p.surface.sample(m, rng), p.keep, c) for p, c in zip(self.pieces, counts)]
        x = np.concatenate(out) if out else np.zeros((0, 0))
        return x[rng.permutation(len(x))]

    def normal(self, x: np.ndarray) -> np.ndarray:
        """The domain's outward unit normal at points of this part (each from the nearest piece)."""
        return _nearest_normal(self.pieces, _rows(x))


def _nearest_normal(pieces, x: np.ndarray) -> np.ndarray:
    """At each point of x, the normal of the piece whose surface is nearest."""
    if len(pieces) == 1:
        return _piece_normal(pieces[0], x)
    which = _nearest_piece(pieces, x)
    out = np.empty_like(x)
    for i, p in enumerate(pieces):
        rows = which == i
        if rows.any():
            out[rows] = _piece_normal(p, x[rows])
    return out


def _nearest_piece(pieces, x: np.ndarray) -> np.ndarray:
    """At each point of x, the index of the piece whose surface is nearest."""
    return np.stack([_surface_distance(p.surface, x) for p in pieces], axis=1).argmin(axis=1)


def _piece_normal(piece: Piece, x: np.ndarray) -> np.ndarray:
    n = piece.surface.normal(x)
    return -n if piece.flip else n


def _surface_distance(surface, x: np.ndarray) -> np.ndarray:
    if isinstance(surface, Sphere):
        return np.abs(np.linalg.norm(x - np.asarray(surface.center), axis=1) - surface.radius)
    return surface.gaps(x).min(axis=1)


def _rejection(draw: Callable[[int], np.ndarray], keep: Callable[[np.ndarray], np.ndarray], n: int,
               what: str = "the boundary part") -> np.ndarray:
    """n draws that ``keep`` accepts, drawing in batches sized by the acceptance rate so far."""
    if n == 0:
        return draw(0)
    got, total, kept = [], 0, 0
    while kept < n:
        m = max(64, int(1.2 * (n - kept) * (total + 1) / (kept + 1)))
        x = draw(min(m, 1_000_000))
        ok = keep(x)
        got.append(x[ok])
        total, kept = total + len(x), kept + int(ok.sum())
        if kept == 0 and total >= 1_000_000:
            raise ValueError(f"{what} appears to be empty: none of {total} sampled points lie in it")
    return np.concatenate(got)[:n]


@functools.lru_cache(maxsize=1024)
def _piece_area(piece: Piece) -> Measure:
    """The area of a piece: exact for a whole surface, else the surface's area times the share
    of ``MC_POINTS`` uniform points on it that the conditions keep (a fixed seed: the same
    estimate every time)."""
    full = piece.surface.area
    if not piece.conditions:
        return Measure(full)
    x = piece.surface.sample(MC_POINTS, np.random.default_rng(MC_SEED))
    share = float(piece.keep(x).mean())
    return Measure(full * share, False, full * math.sqrt(share * (1 - share) / MC_POINTS))


# -- geometries --------------------------------------------------------------------------------

class Geometry:
    """A closed domain in R^d (see the module docstring). Subclasses define ``dim``, ``lo`` /
    ``hi`` (a bounding box), ``contains``, ``interior`` (the open set), ``sample_interior``,
    ``volume``, ``pieces`` (boundary pieces with their part names) and ``spec`` (the shape as a
    problem file writes it: ``{"ball": {...}}``, ``{"difference": [...]}``, ...)."""

    dim: int

    def __sub__(self, other: "Geometry") -> "Difference":
        return Difference(self, other)

    def __or__(self, other: "Geometry") -> "Union":
        return Union(self, other)

    def __and__(self, other: "Geometry") -> "Intersection":
        return Intersection(self, other)

    @property
    def parts(self) -> dict[str, Part]:
        """The boundary's named parts, in the order their names first appear."""
        named: dict[str, list[Piece]] = {}
        for name, piece in self.pieces():
            named.setdefault(name, []).append(piece)
        return {name: Part(name, tuple(pieces)) for name, pieces in named.items()}

    @property
    def boundary_area(self) -> Measure:
        return _total(p.area for p in self.parts.values())

    def sample_boundary(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points uniform on the whole boundary by surface measure."""
        parts = list(self.parts.values())
        weights = np.array([p.area.value for p in parts])
        counts = rng.multinomial(n, weights / weights.sum())
        x = np.concatenate([p.sample(c, rng) for p, c in zip(parts, counts)])
        return x[rng.permutation(len(x))]

    def boundary_normal(self, x: np.ndarray) -> np.ndarray:
        """The outward unit normal at boundary points x (from the nearest piece of any part)."""
        return _nearest_normal([piece for _, piece in self.pieces()], _rows(x))

    def part_of(self, x: np.ndarray) -> np.ndarray:
        """The index, in :attr:`parts`, of the part each boundary point of x lies on (that of the
        nearest piece)."""
        names, pieces = list(self.parts), list(self.pieces())
        if len(names) == 1:
            return np.zeros(len(_rows(x)), dtype=int)
        which = _nearest_piece([p for _, p in pieces], _rows(x))
        return np.array([names.index(name) for name, _ in pieces])[which]


@dataclass(frozen=True)
class Box(Geometry):
    """The box [lo, hi]; its boundary is one part, ``name``, except the faces named in ``faces``:
    pairs (face, part name), face 2k being x_k = lo_k and 2k + 1 being x_k = hi_k."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    name: str = "boundary"
    faces: tuple[tuple[int, str], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "lo", tuple(float(v) for v in self.lo))
        object.__setattr__(self, "hi", tuple(float(v) for v in self.hi))
        if len(self.lo) != len(self.hi) or not self.lo:
            raise ValueError(f"a box needs lo and hi of the same positive length, got {self.lo} and {self.hi}")
        if any(a >= b for a, b in zip(self.lo, self.hi)):
            raise ValueError(f"a box needs lo < hi in every coordinate, got lo={self.lo}, hi={self.hi}")

    @property
    def dim(self) -> int:
        return len(self.lo)

    def spec(self) -> dict:
        faces = {f"x{k // 2}_{'hi' if k % 2 else 'lo'}": name for k, name in self.faces}
        return {"box": {"lo": list(self.lo), "hi": list(self.hi), "name": self.name, **({"faces": faces} if faces else {})}}

    def _tol(self) -> np.ndarray:
        return TOL * (np.asarray(self.hi) - np.asarray(self.lo))

    def contains(self, x) -> np.ndarray:
        x = _rows(x)
        return ((x >= np.asarray(self.lo) - self._tol()) & (x <= np.asarray(self.hi) + self._tol())).all(axis=1)

    def interior(self, x) -> np.ndarray:
        x = _rows(x)
        return ((x > np.asarray(self.lo) + self._tol()) & (x < np.asarray(self.hi) - self._tol())).all(axis=1)

    def sample_interior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return lo + rng.random((n, self.dim)) * (hi - lo)

    @property
    def volume(self) -> Measure:
        return Measure(math.prod(b - a for a, b in zip(self.lo, self.hi)))

    def pieces(self):
        if not self.faces:
            return [(self.name, Piece(BoxFaces(self.lo, self.hi)))]
        named = dict(self.faces)
        names = ([self.name] if len(named) < 2 * self.dim else []) + list(dict.fromkeys(named.values()))
        return [(name, Piece(BoxFaces(self.lo, self.hi, tuple(i for i in range(2 * self.dim)
                                                              if named.get(i, self.name) == name))))
                for name in names]


class _Round(Geometry):
    """A shape around ``center`` within the distance ``reach``: its dimension, bounding box and
    the distance of points to the center."""

    center: tuple[float, ...]
    reach: float

    @property
    def dim(self) -> int:
        return len(self.center)

    @property
    def lo(self) -> tuple[float, ...]:
        return tuple(c - self.reach for c in self.center)

    @property
    def hi(self) -> tuple[float, ...]:
        return tuple(c + self.reach for c in self.center)

    def _r(self, x) -> np.ndarray:
        return np.linalg.norm(_rows(x) - np.asarray(self.center), axis=1)


@dataclass(frozen=True)
class Ball(_Round):
    """The ball |x - center| <= radius; its sphere is one part, ``name``."""

    center: tuple[float, ...]
    radius: float
    name: str = "boundary"

    def __post_init__(self):
        object.__setattr__(self, "center", tuple(float(v) for v in self.center))
        if not self.center:
            raise ValueError("a ball needs a center with at least one coordinate")
        if not self.radius > 0:
            raise ValueError(f"a ball needs a positive radius, got {self.radius}")

    @property
    def reach(self) -> float:
        return self.radius

    def spec(self) -> dict:
        return {"ball": {"center": list(self.center), "radius": self.radius, "name": self.name}}

    def contains(self, x) -> np.ndarray:
        return self._r(x) <= self.radius * (1 + TOL)

    def interior(self, x) -> np.ndarray:
        return self._r(x) < self.radius * (1 - TOL)

    def sample_interior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        r = self.radius * rng.random(n) ** (1.0 / self.dim)
        return np.asarray(self.center) + r[:, None] * _directions(n, self.dim, rng)

    @property
    def volume(self) -> Measure:
        return Measure(ball_volume(self.dim, self.radius))

    def pieces(self):
        return [(self.name, Piece(Sphere(self.center, self.radius)))]


@dataclass(frozen=True)
class Shell(_Round):
    """The spherical shell inner <= |x - center| <= outer (an annulus in 2D); two parts, the
    outer sphere ``outer_name`` and the inner one ``inner_name`` (its outward normal points to
    the center)."""

    center: tuple[float, ...]
    inner: float
    outer: float
    inner_name: str = "inner"
    outer_name: str = "outer"

    def __post_init__(self):
        object.__setattr__(self, "center", tuple(float(v) for v in self.center))
        if not 0 < self.inner < self.outer:
            raise ValueError(f"a shell needs 0 < inner < outer radius, got {self.inner} and {self.outer}")

    @property
    def reach(self) -> float:
        return self.outer

    def spec(self) -> dict:
        return {"shell": {"center": list(self.center), "inner": self.inner, "outer": self.outer,
                          "inner_name": self.inner_name, "outer_name": self.outer_name}}

    def contains(self, x) -> np.ndarray:
        r = self._r(x)
        return (r >= self.inner * (1 - TOL)) & (r <= self.outer * (1 + TOL))

    def interior(self, x) -> np.ndarray:
        r = self._r(x)
        return (r > self.inner * (1 + TOL)) & (r < self.outer * (1 - TOL))

    def sample_interior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        d = self.dim
        r = (self.inner ** d + rng.random(n) * (self.outer ** d - self.inner ** d)) ** (1.0 / d)
        return np.asarray(self.center) + r[:, None] * _directions(n, d, rng)

    @property
    def volume(self) -> Measure:
        return Measure(ball_volume(self.dim, self.outer) - ball_volume(self.dim, self.inner))

    def pieces(self):
        return [(self.outer_name, Piece(Sphere(self.center, self.outer))),
                (self.inner_name, Piece(Sphere(self.center, self.inner, inward=True)))]


@dataclass(frozen=True)
class _Combination(Geometry):
    a: Geometry
    b: Geometry

    def __post_init__(self):
        if self.a.dim != self.b.dim:
            raise ValueError(f"cannot combine geometries of dimensions {self.a.dim} and {self.b.dim}")

    @property
    def dim(self) -> int:
        return self.a.dim

    def spec(self) -> dict:
        return {type(self).__name__.lower(): [self.a.spec(), self.b.spec()]}

    def _estimate(self, share_of: Geometry, keep: Callable, scale: float) -> Measure:
        """scale x the share of MC_POINTS uniform points of ``share_of`` that ``keep`` accepts."""
        x = share_of.sample_interior(MC_POINTS, np.random.default_rng(MC_SEED))
        share = float(keep(x).mean())
        return Measure(scale * share, False, scale * math.sqrt(share * (1 - share) / MC_POINTS))


@dataclass(frozen=True)
class Difference(_Combination):
    """a minus b (the closure of a without b): drawn from a, rejecting points inside b."""

    @property
    def lo(self):
        return self.a.lo

    @property
    def hi(self):
        return self.a.hi

    def contains(self, x) -> np.ndarray:
        return self.a.contains(x) & ~self.b.interior(x)

    def interior(self, x) -> np.ndarray:
        return self.a.interior(x) & ~self.b.contains(x)

    def sample_interior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _rejection(lambda m: self.a.sample_interior(m, rng), lambda x: ~self.b.contains(x), n,
                          "the domain (a difference)")

    @functools.cached_property
    def volume(self) -> Measure:
        va = self.a.volume
        m = self._estimate(self.a, lambda x: ~self.b.contains(x), va.value)
        return Measure(m.value, False, math.hypot(m.stderr, va.stderr))

    def pieces(self):
        return ([(name, p.restricted(self.b, inside=False)) for name, p in self.a.pieces()]
                + [(name, p.restricted(self.a, inside=True, flip=True)) for name, p in self.b.pieces()])


@dataclass(frozen=True)
class Intersection(_Combination):
    """a and b: drawn from a, rejecting points outside b."""

    @property
    def lo(self):
        return tuple(max(p, q) for p, q in zip(self.a.lo, self.b.lo))

    @property
    def hi(self):
        return tuple(min(p, q) for p, q in zip(self.a.hi, self.b.hi))

    def contains(self, x) -> np.ndarray:
        return self.a.contains(x) & self.b.contains(x)

    def interior(self, x) -> np.ndarray:
        return self.a.interior(x) & self.b.interior(x)

    def sample_interior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _rejection(lambda m: self.a.sample_interior(m, rng), self.b.contains, n,
                          "the domain (an intersection)")

    @functools.cached_property
    def volume(self) -> Measure:
        va = self.a.volume
        m = self._estimate(self.a, self.b.contains, va.value)
        return Measure(m.value, False, math.hypot(m.stderr, va.stderr))

    def pieces(self):
        return ([(name, p.restricted(self.b, inside=True)) for name, p in self.a.pieces()]
                + [(name, p.restricted(self.a, inside=True)) for name, p in self.b.pieces()])


@dataclass(frozen=True)
class Union(_Combination):
    """a or b: drawn from a with probability |a| / (|a| + |b|), else from b rejecting points in
    a (uniform on the union)."""

    @property
    def lo(self):
        return tuple(min(p, q) for p, q in zip(self.a.lo, self.b.lo))

    @property
    def hi(self):
        return tuple(max(p, q) for p, q in zip(self.a.hi, self.b.hi))

    def contains(self, x) -> np.ndarray:
        return self.a.contains(x) | self.b.contains(x)

    def interior(self, x) -> np.ndarray:
        return self.a.interior(x) | self.b.interior(x)

    def sample_interior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        va, vb = self.a.volume.value, self.b.volume.value
        out = []
        for _ in range(1000):
            if sum(len(o) for o in out) >= n:
                break
            m = n - sum(len(o) for o in out)
            from_a = rng.random(m) < va / (va + vb)
            xa = self.a.sample_interior(int(from_a.sum()), rng)
            xb = self.b.sample_interior(int((~from_a).sum()), rng)
            out += [xa, xb[~self.a.contains(xb)]]
        x = np.concatenate(out)[:n]
        return x[rng.permutation(len(x))]

    @functools.cached_property
    def volume(self) -> Measure:
        va, vb = self.a.volume, self.b.volume
        m = self._estimate(self.b, lambda x: ~self.a.contains(x), vb.value)
        return Measure(va.value + m.value, False, math.sqrt(m.stderr ** 2 + va.stderr ** 2))

    def pieces(self):
        return ([(name, p.restricted(self.b, inside=False)) for name, p in self.a.pieces()]
                + [(name, p.restricted(self.a, inside=False)) for name, p in self.b.pieces()])
