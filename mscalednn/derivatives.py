"""Derivatives of a network u(x) with respect to its input, and the operators that pick a method.

* ``autograd``: grad u by one reverse pass, then one more reverse pass per input dimension for
  the diagonal of the Hessian (nested autograd, the peers' method); exact, for any module; the
  reference and the fallback.
* ``forward``: the forward Laplacian (:mod:`mscalednn.forward_laplacian`); exact, one pass.
* ``hutchinson``: an unbiased estimate, Laplace u ~ (1/K) sum_k v_k^T (Hess u) v_k over K
  Rademacher probes v_k (fresh at every call), by the forward pass with K input directions
  instead of d: for very high dimension, where K << d. Its variance is 2 sum_{i != j} H_ij^2 / K:
  none where the Hessian is diagonal (a sum of one-dimensional terms).
* ``sampled``: an unbiased estimate from K of the d coordinates, drawn without replacement
  at every point and call, Laplace u ~ (d/K) sum_{i in S} d^2u/dx_i^2 (stochastic dimension
  gradient descent, SDGD: Hu et al. 2023); its variance comes from the spread of the diagonal
  of the Hessian, none where all d^2u/dx_i^2 are equal. Exact for K >= d.
* ``auto``: ``forward`` where every part of the model is supported, else ``autograd``; with
  the residual loss in high dimension (d > ``ESTIMATE_FACTOR`` x ``probes``), ``hutchinson``
  (:func:`chosen_operator`).

Each operator is a function (x) -> (u [N], grad u [N, d] or None, Laplace u [N]).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from .errors import ProblemError
from .forward_laplacian import Axes, forward_laplacian, supports, unsupported_part

Field = Callable[[torch.Tensor], torch.Tensor]
OPERATORS = ("auto", "forward", "autograd", "hutchinson", "sampled")
RANDOM = ("hutchinson", "sampled")  # the estimators: fresh directions at every call
ESTIMATE_FACTOR = 2  # auto estimates the Laplacian where d > this many times the probes


def chosen_operator(name: str, loss: str, dim: int, probes: int, one_pass: bool = False) -> str:
    """The operator a run uses: ``auto`` with the residual loss becomes ``hutchinson`` where the
    exact forward Laplacian's d tangents are more than ``ESTIMATE_FACTOR`` times the estimator's
    ``probes`` directions (d > 32 with the default 16 probes), unless the exact Laplacian costs one
    forward pass anyway (``one_pass``: a network with one hidden layer,
    :func:`mscalednn.forward_laplacian.one_pass`). Measured (benchmarks/RESULTS.md, "High
    dimension: estimated Laplacians"): for deep networks, at d = 50 the estimate trains to a lower
    error in 10 minutes than the exact Laplacian, at d = 100 to the same, and at d = 1000 an exact
    step takes minutes; every other choice is kept."""
    if name == "auto" and loss == "residual" and dim > ESTIMATE_FACTOR * probes and not one_pass:
        return "hutchinson"
    return name


def _scalar(fn: Field, x: torch.Tensor) -> torch.Tensor:
    """fn(x) as [N]; an error if it is not computed from x by torch operations (through NumPy,
    say), where every derivative would silently read 0."""
    u = fn(x)
    if not u.requires_grad:
        raise ProblemError("the function is not computed from x by torch operations (did it go through NumPy "
                           "or .detach()?): its derivatives cannot be taken; a constant c can be written "
                           "c + 0 * x[:, 0]")
    return u.squeeze(-1) if u.dim() == 2 else u


def _grad(y: torch.Tensor, x: torch.Tensor, create_graph: bool, retain_graph: bool | None = None) -> torch.Tensor:
    """d(sum y)/dx; zero where y, a derivative, no longer depends on x (the gradient of a linear
    or constant u)."""
    if not y.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=create_graph, retain_graph=retain_graph,
                               allow_unused=True, materialize_grads=True)
    return g


@torch.enable_grad()  # derivatives are taken even when called under torch.no_grad()
def value_and_grad(fn: Field, x: torch.Tensor, create_graph: bool = True):
    """u(x) [N] and grad u(x) [N, d]."""
    x = x.detach().requires_grad_(True)
    u = _scalar(fn, x)
    return u, _grad(u, x, create_graph)


@torch.enable_grad()
def value_grad_laplacian(fn: Field, x: torch.Tensor, create_graph: bool = True):
    """u(x) [N], grad u(x) [N, d] and Laplace u(x) = sum_i d^2u/dx_i^2 [N], by nested autograd
    (differentiable in x too when x requires grad and ``create_graph``)."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    u = _scalar(fn, x)
    g = _grad(u, x, create_graph=True)
    lap = torch.zeros_like(u)
    for i in range(x.shape[1]):
        lap = lap + _grad(g[:, i], x, create_graph, retain_graph=True)[:, i]  # linear u: 0
    return u, g, lap


def rademacher(n: int, probes: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """Probe directions [n, probes, d] with entries +-1/sqrt(probes): E[sum_k v_k v_k^T] = I."""
    signs = torch.randint(0, 2, (n, probes, d), device=like.device).to(like.dtype)
    return (2 * signs - 1) / math.sqrt(probes)


def coordinates(n: int, probes: int, d: int, like: torch.Tensor) -> Axes:
    """Directions (:class:`~mscalednn.forward_laplacian.Axes`, [n, K, d] as indices),
    K = min(probes, d): at each point K distinct coordinate axes, drawn uniformly without
    replacement, scaled by sqrt(d / K): E[sum_k v_k v_k^T] = I, and the sum is I itself for K = d."""
    K = min(probes, d)
    return Axes(torch.rand(n, d, device=like.device).argsort(dim=1)[:, :K], math.sqrt(d / K), d)


DIRECTIONS = {"hutchinson": rademacher, "sampled": coordinates}


def hutchinson_autograd(fn: Field, x: torch.Tensor, P: torch.Tensor, create_graph: bool = True):
    """u [N] and sum_k p_k^T (Hess u) p_k [N] for directions P [N, K, d], by autograd
    Hessian-vector products (one double backward per direction): the fallback estimator."""
    x = x.detach().requires_grad_(True)
    u = _scalar(fn, x)
    g = _grad(u, x, create_graph=True)
    est = torch.zeros_like(u)
    for k in range(P.shape[1]):
        hv = _grad(g * P[:, k], x, create_graph, retain_graph=True)
        est = est + (hv * P[:, k]).sum(dim=1)
    return u, est


_warned: set[str] = set()


def _fallback_warning(model: torch.nn.Module, name: str) -> None:
    part = unsupported_part(model)
    if part not in _warned:
        _warned.add(part)
        warnings.warn(f"operator '{name}': the forward Laplacian does not know {part}; "
                      "using nested autograd for this model", stacklevel=3)


def laplacian_operator(name: str, model: torch.nn.Module, probes: int = 16) -> Callable:
    """The function x -> (u, grad u or None, Laplace u) of ``model`` for operator ``name``.

    ``forward``, ``hutchinson`` or ``sampled`` on a model the forward pass does not know warns once, naming
    the module, and falls back to autograd (nested, or Hessian-vector products).
    """
    if name not in OPERATORS:
        raise ValueError(f"operator must be one of {', '.join(OPERATORS)}, got {name!r}")
    fast = supports(model)
    if not fast and name in ("forward", *RANDOM):
        _fallback_warning(model, name)
    if name in RANDOM:
        draw = DIRECTIONS[name]

        def estimate(x):
            P = draw(x.shape[0], probes, x.shape[1], x)
            if fast:
                return forward_laplacian(model, x, directions=P)
            u, est = hutchinson_autograd(model, x, P.dense(x.dtype) if isinstance(P, Axes) else P)
            return u, None, est
        return estimate
    if name == "autograd" or not fast:
        return lambda x: value_grad_laplacian(model, x)
    return lambda x: forward_laplacian(model, x)
