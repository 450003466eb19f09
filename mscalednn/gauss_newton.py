"""Gauss-Newton (energy natural gradient) steps for the least-squares residual loss.

The residual loss is a sum of squares, L(theta) = ||R(theta)||^2, with one residual per point:

    R = [ (-Laplace u(x_n) - f(x_n)) / sqrt(N_in)              n = 1 .. N_in   (interior)
          sqrt(beta w / N_b) (u(y_k) - g(y_k))                  k = 1 .. N_b   (boundary) ]

(w the boundary penalty's weight). With J = dR/dtheta [m, P] the damped Gauss-Newton
(Levenberg-Marquardt) step is

    delta = -(J^T J + lambda I)^-1 J^T R = -J^T (J J^T + lambda I)^-1 R,

solved in parameter space (P x P) when P <= m and in residual space (m x m) otherwise, in float64.
For a linear PDE operator this is the energy natural gradient of Mueller & Zeinhofer (ICML 2023):
Newton's method in function space, projected on the network's tangent space.

J comes from the forward Laplacian's jets: the per-point gradients of -Laplace u(x_n) and
u(y_k) with respect to the parameters, one vectorised ``torch.func`` pass
(:func:`residual_jacobian`). A line search over eta in {1, 1/2, ..., 2^-K} keeps the best
loss; lambda adapts (Levenberg-Marquardt) to the ratio of the actual to the predicted decrease.

The Ritz loss L = |Omega| mean (1/2 |grad u|^2 - f u) + beta w mean_boundary (u - g)^2 is not a
sum of squares, but its Hessian in function space is the energy inner product: the Gram matrix
G = J^T J of the rows sqrt(|Omega| / (2 N_in)) d(grad u(x_n))/dtheta (d rows per point) and
sqrt(beta w / N_b) du(y_k)/dtheta (:func:`energy_jacobian`) is half the Gauss-Newton Hessian, and
the energy natural gradient step (ENGD's Ritz form) is delta = -(G + lambda I)^-1 dL/dtheta / 2,
with the same damping, line search and quadratic model. Its solve is in parameter space only
(the gradient is not in the rows' span), so it is for networks of at most
:data:`MAX_ENERGY_PARAMETERS` parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from .forward_laplacian import forward_laplacian


class _PointValues(nn.Module):
    """u(x), -Laplace u(x) or grad u(x) of ``model`` at a batch of points, by the unfused forward
    Laplacian (plain torch operations, so that torch.func can take per-point parameter gradients)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, what: str) -> torch.Tensor:
        if what == "-laplace":
            return -forward_laplacian(self.model, x, need_grad=False, fused=False)[2]
        if what == "grad":
            return forward_laplacian(self.model, x, fused=False)[1]
        return self.model(x).reshape(-1)


MAX_ENERGY_PARAMETERS = 8000


def _rows(model: nn.Module, x: torch.Tensor, what: str, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The values [N] (or [N, d] for grad u) at the points x and their parameter Jacobian
    [N * (1 or d), P] (columns: the trainable parameters, in the order of ``model.parameters()``),
    per point by ``torch.func`` (vmap of grad, or of jacrev for grad u)."""
    wrapped = _PointValues(model)
    params = {k: v.detach() for k, v in wrapped.named_parameters() if v.requires_grad}
    buffers = {**dict(wrapped.named_buffers()),  # frozen parameters stay as they are
               **{k: v.detach() for k, v in wrapped.named_parameters() if not v.requires_grad}}

    def value(p, x1):
        return functional_call(wrapped, (p, buffers), (x1[None], what))[0]

    per_point = vmap((jacrev if what == "grad" else grad)(value), in_dims=(None, 0))
    outputs = x.shape[1] if what == "grad" else 1  # rows per point
    values, jac = [], []
    for xs in torch.split(x, chunk):
        grads = per_point(params, xs)  # {name: [n, (d,) *shape]}
        rows = torch.cat([grads[k].reshape(xs.shape[0], outputs, -1) for k in params], dim=2)
        jac.append(rows.flatten(0, 1))
        with torch.no_grad():
            values.append(wrapped(xs, what))
    return torch.cat(values), torch.cat(jac)


def residual_jacobian(model: nn.Module, x_in: torch.Tensor, f: torch.Tensor, x_bd: torch.Tensor,
                      g: torch.Tensor, bc_scale: float, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """R [m] and J = dR/dtheta [m, P] (columns: the trainable parameters, in the order of
    ``model.parameters()``), with
    R = [(-Laplace u - f) / sqrt(N_in), sqrt(bc_scale / N_b) (u - g)] (bc_scale = beta * w)."""
    s_in, s_bd = 1.0 / math.sqrt(x_in.shape[0]), math.sqrt(bc_scale / x_bd.shape[0])
    v_in, j_in = _rows(model, x_in, "-laplace", chunk)
    v_bd, j_bd = _rows(model, x_bd, "u", chunk)
    return torch.cat([(v_in - f) * s_in, (v_bd - g) * s_bd]), torch.cat([j_in * s_in, j_bd * s_bd])


def energy_jacobian(model: nn.Module, x_in: torch.Tensor, x_bd: torch.Tensor, volume: float, bc_scale: float,
                    chunk: int = 256) -> torch.Tensor:
    """Rows whose Gram matrix J^T J is half the Ritz loss's Gauss-Newton Hessian [N_in d + N_b, P]:
    sqrt(volume / (2 N_in)) d(grad u(x_n))/dtheta and sqrt(bc_scale / N_b) du(y_k)/dtheta
    (bc_scale = beta * w)."""
    j_in = _rows(model, x_in, "grad", chunk)[1] * math.sqrt(volume / (2 * x_in.shape[0]))
    j_bd = _rows(model, x_bd, "u", chunk)[1] * math.sqrt(bc_scale / x_bd.shape[0])
    return torch.cat([j_in, j_bd])


def damped_step(J: torch.Tensor, R: torch.Tensor | None, damping: float,
                gradient: torch.Tensor | None = None) -> torch.Tensor:
    """delta = -(J^T J + lambda I)^-1 J^T R with lambda = damping * mean eigenvalue of the Gram
    matrix, in float64, in the smaller of the parameter and residual spaces; or, given
    ``gradient`` instead of R, delta = -(J^T J + lambda I)^-1 gradient / 2 (parameter space)."""
    return DampedSolver(J, R, gradient)(damping)


class DampedSolver:
    """:func:`damped_step` for several dampings of one Jacobian: the Gram matrix is formed once
    (the costly part, m^2 P or m P^2 flops), each damping costs one Cholesky factorisation."""

    def __init__(self, J: torch.Tensor, R: torch.Tensor | None, gradient: torch.Tensor | None = None):
        self.J = J.double()
        self.R = None if R is None else R.double()
        self.gradient = None if gradient is None else gradient.double()
        m, P = self.J.shape
        self.parameter_space = P <= m or R is None
        self.gram = self.J.T @ self.J if self.parameter_space else self.J @ self.J.T
        self.scale = self.gram.diagonal().mean().clamp_min(1e-300)

    def __call__(self, damping: float) -> torch.Tensor:
        lam = damping * self.scale
        eye = torch.eye(self.gram.shape[0], dtype=self.gram.dtype, device=self.gram.device)
        for _ in range(8):  # a Gram that is singular to rounding: more damping
            factor, info = torch.linalg.cholesky_ex(self.gram + lam * eye)
            if int(info) == 0:
                break
            lam = lam * 100
        if self.R is None:
            return -torch.cholesky_solve(0.5 * self.gradient[:, None], factor)[:, 0]
        if self.parameter_space:
            return -torch.cholesky_solve((self.J.T @ self.R)[:, None], factor)[:, 0]
        return -self.J.T @ torch.cholesky_solve(self.R[:, None], factor)[:, 0]


class LocalModel(NamedTuple):
    """The loss near the current parameters, L(theta + delta) ~ loss + gradient . delta + |J delta|^2:
    a least-squares loss gives R (then gradient = 2 J^T R), the Ritz loss its gradient."""

    loss: float
    J: torch.Tensor
    R: torch.Tensor | None = None
    gradient: torch.Tensor | None = None


class GaussNewton:
    """Levenberg-Marquardt damped Gauss-Newton with a line search.

    ``step(local, loss_at)``: ``local()`` returns the :class:`LocalModel` at the current
    parameters, ``loss_at()`` the loss at the current parameters (no gradients). The damping
    lambda (relative to the Gram matrix's mean eigenvalue) halves after a step that did what the
    local model predicted (rho > 3/4) and grows 4x after a poor one (rho < 1/4), within
    [1e-12, 1e4]; the step taken is the best of the line search (none if no step lowers the loss).
    """

    def __init__(self, params: list[torch.Tensor], damping: float = 1e-4, halvings: int = 10, retries: int = 3):
        self.params, self.damping, self.halvings, self.retries = list(params), damping, halvings, retries

    def _vector(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def _set(self, vector: torch.Tensor) -> None:
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(vector.to(self.params[0].dtype), self.params)

    def step(self, local: Callable[[], LocalModel], loss_at: Callable[[], float], max_step: float = 1.0,
             fit_loss_at: Callable[[], float] | None = None) -> tuple[float, float]:
        """One step; the line search tries eta = max_step * 2^-k and keeps the best by ``loss_at``.

        ``fit_loss_at``: the loss on the points of ``local`` where ``loss_at`` measures on others
        (fresh points: a step that fits only its own points lowers nothing there and is not
        taken); the damping follows how much of the decrease the local model predicted the step
        achieved on its own points (rho). Where rho < 1/4 the step is solved again with 10x the
        damping (the same Jacobian and Gram), up to ``retries`` times, and the best of all is
        taken. Returns ``loss_at`` before and after the step."""
        model = local()
        start, loss0 = self._vector().double(), loss_at()
        fit_loss_at = fit_loss_at or loss_at
        fit0 = model.loss if fit_loss_at is not loss_at else loss0
        solver = DampedSolver(model.J, model.R, model.gradient)
        best, chosen, damping = (loss0, 0.0, -1.0, self.damping), None, self.damping  # (loss, eta, rho, damping)
        for _ in range(self.retries + 1):
            delta = solver(damping)
            Jd = solver.J @ delta
            slope = 2 * float(solver.R @ Jd) if solver.R is not None else float(solver.gradient @ delta)
            losses = []
            for k in range(self.halvings + 1):  # eta = 1, 1/2, ..., 2^-halvings (times max_step): the best
                self._set(start + max_step * 0.5 ** k * delta)
                loss = loss_at()
                losses.append(loss if math.isfinite(loss) else math.inf)
            low = min(losses)
            eta = max_step * 0.5 ** losses.index(low)
            self._set(start + eta * delta)
            fit = low if fit_loss_at is loss_at else fit_loss_at()
            predicted = -(eta * slope + eta ** 2 * float(Jd.square().sum()))
            rho = (fit0 - fit) / predicted if predicted > 0 and math.isfinite(fit) else -1.0
            if low < best[0]:
                best, chosen = (low, eta, rho, damping), delta
            if rho >= 0.25:
                break
            damping = min(damping * 10, 1e4)
        loss, eta, rho, damping = best
        self._set(start if chosen is None else start + eta * chosen)
        if rho < 0.25:
            self.damping = min(damping * 4, 1e4)
        elif rho > 0.75:
            self.damping = max(damping / 2, 1e-12)
        else:
            self.damping = damping
        return loss0, loss

    def state_dict(self) -> dict:
        return {"damping": self.damping}

    def load_state_dict(self, state: dict) -> None:
        self.damping = float(state["damping"])
