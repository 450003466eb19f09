"""Derivatives of a network u(x) with respect to its input.

``nested autograd``: grad u by one reverse pass, then one more reverse pass per input dimension
for the diagonal of the Hessian (the peers' method); exact, and kept as the reference and the
fallback. ``forward``: the forward Laplacian (:mod:`mscalednn.forward_laplacian`), exact, one
pass. :func:`laplacian_operator` picks one by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from .forward_laplacian import forward_laplacian, supports

Field = Callable[[torch.Tensor], torch.Tensor]


def _scalar(fn: Field, x: torch.Tensor) -> torch.Tensor:
    u = fn(x)
    return u.squeeze(-1) if u.dim() == 2 else u


def value_and_grad(fn: Field, x: torch.Tensor, create_graph: bool = True):
    """u(x) [N] and grad u(x) [N, d]."""
    x = x.detach().requires_grad_(True)
    u = _scalar(fn, x)
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=create_graph)
    return u, g


def value_grad_laplacian(fn: Field, x: torch.Tensor, create_graph: bool = True):
    """u(x) [N], grad u(x) [N, d] and Laplace u(x) = sum_i d^2u/dx_i^2 [N], by nested autograd."""
    x = x.detach().requires_grad_(True)
    u = _scalar(fn, x)
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    lap = torch.zeros_like(u)
    for i in range(x.shape[1]):
        (h,) = torch.autograd.grad(g[:, i].sum(), x, create_graph=create_graph, retain_graph=True,
                                   allow_unused=True, materialize_grads=True)  # linear u: h = 0
        lap = lap + h[:, i]
    return u, g, lap


def laplacian_operator(name: str, model: torch.nn.Module) -> Callable:
    """The function (model, x) -> (u, grad u, Laplace u) for ``name`` in auto | forward | autograd.

    ``auto`` is ``forward`` where every part of the model is supported, else ``autograd``;
    ``forward`` on an unsupported model warns once, naming it, and falls back to autograd.
    """
    if name == "autograd":
        return value_grad_laplacian
    if supports(model):
        return forward_laplacian
    if name == "forward":
        warnings.warn(f"forward Laplacian does not support {type(model).__name__}; using nested autograd",
                      stacklevel=2)
    return value_grad_laplacian
