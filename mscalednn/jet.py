"""Value, gradient and Laplacian of a problem expression in one pass (Taylor mode, sparse).

The source f = -Laplace u* is needed at every collocation point of every step. Nested autograd
takes d backward passes through u*'s graph; in high dimension that is a large share of the
training step (measured, 2,000 points, 2 cores: 0.10 s at d = 50 and 0.28 s at d = 100, where
the default network's whole step took 0.35 s and 0.83 s; this pass: 8 and 9 ms).

An expression (:mod:`mscalednn.expr`) builds its vectors from x elementwise, by ``roll`` and by
slices, so the Jacobian of a vector node v [N, n] is sparse and cheap to carry:

* gather terms (idx, c): dv_j / dx_{idx[j]} += c[:, j], with idx [n] fixed per node;
* rank-one dense terms (a, G): dv_j / dx_i += a[:, j] G[:, i], where a scalar (a reduction such
  as ``sum(x)``) enters a vector.

With these and the per-component Laplacian, every operation is O(N d): an elementwise function
h(v) has Laplace h(v)_j = h'(v_j) Laplace v_j + h''(v_j) |grad v_j|^2, a product has
Laplace(v w) = w Laplace v + v Laplace w + 2 grad v . grad w, and the dot products of gradients
come from the terms pairwise. Scalars are size-1 vectors with one dense term (their gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Jet:
    """A node's value v [N, n], gradient (gather and dense terms) and Laplacian [N, n]."""

    v: Tensor
    sparse: list[tuple[Tensor, Tensor]]
    dense: list[tuple[Tensor, Tensor]]
    lap: Tensor
    d: int

    @property
    def n(self) -> int:
        return self.v.shape[1]


def constant(value: float | Tensor, x: Tensor) -> Jet:
    """A constant: a number, or a tensor [N, n] that does not depend on x."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    v = v.expand(x.shape[0], 1) if v.dim() == 0 else v
    return Jet(v, [], [], torch.zeros_like(v), x.shape[1])


def variable(x: Tensor) -> Jet:
    """x itself: dx_j/dx_j = 1."""
    idx = torch.arange(x.shape[1], device=x.device)
    return Jet(x, [(idx, torch.ones_like(x))], [], torch.zeros_like(x), x.shape[1])


def broadcast(a: Jet, n: int) -> Jet:
    """A size-1 jet as a vector of length n (a scalar entering a vector)."""
    if a.n == n:
        return a
    N = a.v.shape[0]
    return Jet(a.v.expand(N, n), [(i.expand(n), c.expand(N, n)) for i, c in a.sparse],
               [(s.expand(N, n), G) for s, G in a.dense], a.lap.expand(N, n), a.d)


def _scaled(a: Jet, s: Tensor | float) -> tuple[list, list]:
    return [(i, c * s) for i, c in a.sparse], [(w * s, G) for w, G in a.dense]


def _merge(sparse: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    """Gather terms with equal index maps added up (keeps the term count small)."""
    out: list[tuple[Tensor, Tensor]] = []
    for i, c in sparse:
        for k, (j, d) in enumerate(out):
            if j is i or torch.equal(j, i):
                out[k] = (j, d + c)
                break
        else:
            out.append((i, c))
    return out


def inner(a: Jet, b: Jet) -> Tensor:
    """grad a_j . grad b_j for every component j, [N, n]."""
    N = a.v.shape[0]
    total = torch.zeros_like(a.v * b.v)
    for i, c in a.sparse:
        for j, e in b.sparse:
            same = i is j or torch.equal(i, j)
            total = total + (c * e if same else (i == j).to(c.dtype) * c * e)
        for s, G in b.dense:
            total = total + c * s * G.gather(1, i.expand(N, -1))
    for s, G in a.dense:
        for j, e in b.sparse:
            total = total + e * s * G.gather(1, j.expand(N, -1))
        for t, H in b.dense:
            total = total + s * t * (G * H).sum(1, keepdim=True)
    return total


def scale(a: Jet, k: float) -> Jet:
    sparse, dense = _scaled(a, k)
    return Jet(a.v * k, sparse, dense, a.lap * k, a.d)


def _compact(a: Jet) -> Jet:
    """A scalar's terms as one dense term (its gradient), so that sums of many scalars, such as
    a directional coordinate 0.3 x[0] - 0.2 x[1] + ..., keep one term instead of d."""
    if a.n == 1 and len(a.sparse) + len(a.dense) > 1:
        return Jet(a.v, [], [(torch.ones_like(a.v), gradient(a))], a.lap, a.d)
    return a


def add(a: Jet, b: Jet, sign: float = 1.0) -> Jet:
    n = max(a.n, b.n)
    a, b = broadcast(a, n), broadcast(b, n)
    sb, db = _scaled(b, sign) if sign != 1.0 else (b.sparse, b.dense)
    return _compact(Jet(a.v + sign * b.v, _merge(a.sparse + sb), a.dense + db, a.lap + sign * b.lap, a.d))


def mul(a: Jet, b: Jet) -> Jet:
    n = max(a.n, b.n)
    a, b = broadcast(a, n), broadcast(b, n)
    sa, da = _scaled(a, b.v)
    sb, db = _scaled(b, a.v)
    lap = a.lap * b.v + b.lap * a.v + 2 * inner(a, b)
    return _compact(Jet(a.v * b.v, _merge(sa + sb), da + db, lap, a.d))


def apply(a: Jet, value: Tensor, d1: Tensor, d2: Tensor | float) -> Jet:
    """h(a) given value = h(a.v), d1 = h'(a.v), d2 = h''(a.v) (chain rule to second order)."""
    sparse, dense = _scaled(a, d1)
    lap = d1 * a.lap
    if not (isinstance(d2, float) and d2 == 0.0):
        lap = lap + d2 * inner(a, a)
    return Jet(value, sparse, dense, lap, a.d)


def _sec2(t: Tensor) -> Tensor:
    return 1 + t * t


# h -> (h(v), h'(v), h''(v)) for the expression language's elementwise functions (every name in
# mscalednn.expr.ELEMENTWISE has a rule; tests/test_jet.py checks it).
RULES: dict[str, Callable[[Tensor], tuple[Tensor, Tensor, Tensor | float]]] = {
    "sin": lambda v: (torch.sin(v), torch.cos(v), -torch.sin(v)),
    "cos": lambda v: (torch.cos(v), -torch.sin(v), -torch.cos(v)),
    "tan": lambda v: (torch.tan(v), _sec2(torch.tan(v)), 2 * torch.tan(v) * _sec2(torch.tan(v))),
    "exp": lambda v: (torch.exp(v),) * 3,
    "log": lambda v: (torch.log(v), 1 / v, -1 / (v * v)),
    "sqrt": lambda v: (torch.sqrt(v), 0.5 / torch.sqrt(v), -0.25 / (torch.sqrt(v) * v)),
    "tanh": lambda v: (torch.tanh(v), 1 - torch.tanh(v) ** 2, -2 * torch.tanh(v) * (1 - torch.tanh(v) ** 2)),
    "sinh": lambda v: (torch.sinh(v), torch.cosh(v), torch.sinh(v)),
    "cosh": lambda v: (torch.cosh(v), torch.sinh(v), torch.cosh(v)),
    "abs": lambda v: (torch.abs(v), torch.sign(v), 0.0),
    "atan": lambda v: (torch.atan(v), 1 / (1 + v * v), -2 * v / (1 + v * v) ** 2),
}


def elementwise(name: str, a: Jet) -> Jet:
    """h(a) for the elementwise function ``name`` (a key of :data:`RULES`)."""
    return apply(a, *RULES[name](a.v))


def power(a: Jet, p: float) -> Jet:
    if p == 0:
        return Jet(torch.ones_like(a.v), [], [], torch.zeros_like(a.v), a.d)
    if p == 1:
        return a
    v = a.v
    return apply(a, v ** p, p * v ** (p - 1), p * (p - 1) * v ** (p - 2))  # v ** 0 = 1, also at v = 0


def divide(a: Jet, b: Jet) -> Jet:
    w = b.v
    return mul(a, apply(b, 1 / w, -1 / (w * w), 2 / (w * w * w)))


def roll(a: Jet, shift: int) -> Jet:
    return Jet(a.v.roll(shift, 1), [(i.roll(shift, 0), c.roll(shift, 1)) for i, c in a.sparse],
               [(s.roll(shift, 1), G) for s, G in a.dense], a.lap.roll(shift, 1), a.d)


def select(a: Jet, index: slice | int) -> Jet:
    """Components ``index``: a slice gives a vector, an integer a scalar."""
    sl = slice(index, index + 1) if isinstance(index, int) else index
    part = Jet(a.v[:, sl], [(i[sl], c[:, sl]) for i, c in a.sparse], [(s[:, sl], G) for s, G in a.dense],
               a.lap[:, sl], a.d)
    return total(part) if isinstance(index, int) else part


def gradient(a: Jet) -> Tensor:
    """sum_j grad a_j [N, d]."""
    G = torch.zeros(a.v.shape[0], a.d, dtype=a.v.dtype, device=a.v.device)
    for i, c in a.sparse:
        G = G.scatter_add(1, i, c) if i.dim() == 2 else G.index_add(1, i, c)
    for s, H in a.dense:
        G = G + s.sum(1, keepdim=True) * H
    return G


def total(a: Jet) -> Jet:
    """sum_j a_j as a scalar jet (one dense term: its gradient)."""
    v = a.v.sum(1, keepdim=True)
    return Jet(v, [], [(torch.ones_like(v), gradient(a))], a.lap.sum(1, keepdim=True), a.d)


def choose(mask: Tensor, a: Jet, b: Jet) -> Jet:
    """a where ``mask`` [N, n] (bool, constant in x) holds, else b (``where(cond, a, b)``): value,
    gradient and Laplacian of the chosen branch, away from the set where the condition changes.
    The branch not taken never enters (an infinity there stays out)."""
    n = max(a.n, b.n, mask.shape[1])
    a, b, mask = broadcast(a, n), broadcast(b, n), mask.expand(-1, n)

    def keep(t: Tensor, m: Tensor) -> Tensor:
        return torch.where(m, t, torch.zeros((), dtype=t.dtype, device=t.device))

    sparse = [(i, keep(c, mask)) for i, c in a.sparse] + [(i, keep(c, ~mask)) for i, c in b.sparse]
    used_a, used_b = mask.any(1, keepdim=True), (~mask).any(1, keepdim=True)  # rows whose gradient enters
    dense = [(keep(s, mask), keep(G, used_a)) for s, G in a.dense] + [(keep(s, ~mask), keep(G, used_b))
                                                                      for s, G in b.dense]
    return _compact(Jet(torch.where(mask, a.v, b.v), _merge(sparse), dense, torch.where(mask, a.lap, b.lap), a.d))


def pick(a: Jet, k: Tensor) -> Jet:
    """Component k[r] of row r (k: LongTensor [N, 1]), as a scalar jet (for min and max)."""
    N = a.v.shape[0]
    part = Jet(a.v.gather(1, k), [(i.expand(N, -1).gather(1, k), c.gather(1, k)) for i, c in a.sparse],
               [(s.gather(1, k), G) for s, G in a.dense], a.lap.gather(1, k), a.d)
    return total(part)


def product(a: Jet) -> Jet:
    """prod_j a_j as a scalar jet. Where each component depends on its own coordinate alone (one
    gather term with distinct indices, the common case prod(sin(pi x))), gradients of different
    components are orthogonal and Laplace prod = sum_j P_{-j} Laplace a_j, with P_{-j} the product
    of the others (prefix and suffix products, no division); otherwise the product rule component
    by component."""
    v = a.v
    if len(a.sparse) == 1 and not a.dense and a.sparse[0][0].dim() == 1 \
            and a.sparse[0][0].unique().numel() == a.n:
        ones = torch.ones_like(v[:, :1])
        prefix = torch.cumprod(torch.cat([ones, v[:, :-1]], 1), 1)
        suffix = torch.cumprod(torch.cat([ones, v.flip(1)[:, :-1]], 1), 1).flip(1)
        others = prefix * suffix
        idx, c = a.sparse[0]
        out = (v[:, :1] * others[:, :1])
        G = torch.zeros(v.shape[0], a.d, dtype=v.dtype, device=v.device).index_add(1, idx, others * c)
        return Jet(out, [], [(torch.ones_like(out), G)], (others * a.lap).sum(1, keepdim=True), a.d)
    out = select(a, 0)
    for j in range(1, a.n):
        out = mul(out, select(a, j))
    return out
