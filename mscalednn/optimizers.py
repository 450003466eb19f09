"""The update rule of a training phase: Adam, L-BFGS or Gauss-Newton.

``train.optimizer`` is one name, or a list of phases, each ``{name, until}`` with ``until`` the
share of the budget (steps or time, whichever ends the run) at which it hands over to the next:

    optimizer: adam
    optimizer: [{name: adam, until: 0.5}, {name: gauss_newton}]

Every phase works on the same objective, L = interior loss + beta * boundary penalty on the
current batch (:class:`Objective`), and has the same small interface: ``step(batch, lr, beta)``
returns (L, interior, boundary) at the parameters before the update, as tensors;
``state_dict`` / ``load_state_dict`` (plain data and tensors, for checkpoints); ``fixed_points``
(the batch is drawn once when the phase starts, not resampled); ``scheduled`` (``lr`` is the
learning-rate schedule's value times the roll-back scale; otherwise the roll-back scale alone).

* ``adam``: torch.optim.Adam with the scheduled learning rate; one step per batch.
* ``lbfgs``: torch.optim.LBFGS, strong-Wolfe line search, up to ``lbfgs_iterations`` iterations
  per step on points fixed for the phase; the learning rate is the roll-back scale (1 normally).
* ``gauss_newton``: the damped Gauss-Newton step of :mod:`mscalednn.gauss_newton` (for the Ritz
  loss, the energy natural gradient step); after a roll-back its line search starts at the
  roll-back scale instead of 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import losses
from .derivatives import value_and_grad
from .distributed import SINGLE, World
from .gauss_newton import GaussNewton, LocalModel, energy_jacobian, residual_jacobian


def backward_in_chunks(loss_of: Callable, x: torch.Tensor, f: torch.Tensor, chunk: int) -> torch.Tensor:
    """mean over points of loss_of(x, f) (a per-chunk mean), with one backward pass per chunk of
    ``chunk`` points: the same parameter gradients as one backward of the whole mean (the loss is
    a sum over points), with the memory of one chunk. Returns the loss value (no graph)."""
    n, total = x.shape[0], torch.zeros((), dtype=x.dtype, device=x.device)
    for xs, fs in zip(torch.split(x, chunk), torch.split(f, chunk)):
        part = loss_of(xs, fs) * (xs.shape[0] / n)
        part.backward()
        total += part.detach()
    return total

NAMES = ("adam", "lbfgs", "gauss_newton")


@dataclass
class Objective:
    """L = interior(x_in, f) + beta * boundary penalty on a batch (x_in, x_bd, f, g).

    ``interior``: the training form (maybe compiled); ``interior_plain``: the same function,
    uncompiled, for values without a backward pass. ``chunk``: points per backward pass.
    ``volume``: the domain's volume for the Ritz loss (None for the residual loss). ``world``:
    the processes of a data-parallel run (:mod:`mscalednn.distributed`); the gradient and the
    terms are their means over the ranks, each on its own batch."""

    model: torch.nn.Module
    interior: Callable
    interior_plain: Callable
    bc_weight: float
    chunk: int
    volume: float | None = None
    world: World = SINGLE

    def boundary(self, x_bd: torch.Tensor, g: torch.Tensor, create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(penalty, natural) on the boundary points: the Dirichlet penalty alone where g is one
        column; with mixed conditions (:func:`mscalednn.losses.boundary_terms`) du/dn from one
        reverse pass where the residual loss needs it."""
        if g.dim() == 1:
            u = self.model(x_bd).squeeze(-1)
            return losses.boundary_penalty(u, g, self.bc_weight), torch.zeros((), dtype=u.dtype, device=u.device)
        ritz = self.volume is not None
        if ritz:  # natural conditions: u alone
            u, du_dn = self.model(x_bd).squeeze(-1), None
        else:
            with torch.enable_grad():
                u, grad = value_and_grad(self.model, x_bd, create_graph=create_graph)
            du_dn = (grad * g[:, 4:]).sum(dim=1)
        return losses.boundary_terms(u, du_dn, g, ritz, self.bc_weight)

    def backward(self, batch: tuple, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Accumulate dL/dtheta into .grad (interior in chunks of points); (L, interior, boundary),
        the interior including the natural boundary energy of Neumann and Robin parts (Ritz)."""
        x_in, x_bd, f, g = batch
        interior = backward_in_chunks(self.interior, x_in, f, self.chunk)
        bc, natural = self.boundary(x_bd, g)
        (natural + beta * bc).backward()
        interior, bc = self.world.average_gradients(list(self.model.parameters()), interior + natural.detach(),
                                                    bc.detach())
        return interior + beta * bc, interior, bc

    def terms(self, batch: tuple) -> tuple[float, float]:
        """(interior, boundary) at the current parameters, without a backward pass."""
        x_in, x_bd, f, g = batch
        n = x_in.shape[0]
        interior = sum(self.interior_plain(xs, fs).detach() * (xs.shape[0] / n)
                       for xs, fs in zip(torch.split(x_in, self.chunk), torch.split(f, self.chunk)))
        with torch.no_grad():
            bc, natural = self.boundary(x_bd, g, create_graph=False)
        return self.world.mean(float(interior + natural), float(bc))


class _TorchPhase:
    """A phase around a torch.optim optimizer (``self.optimizer``): its state is the optimizer's."""

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class AdamPhase(_TorchPhase):
    fixed_points, scheduled = False, True  # scheduled: step() takes the learning-rate schedule's lr

    def __init__(self, objective: Objective, lr: float):
        self.objective = objective
        self.optimizer = torch.optim.Adam(objective.model.parameters(), lr=lr)

    def step(self, batch, lr, beta):
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        out = self.objective.backward(batch, beta)
        self.optimizer.step()
        return out

class LBFGSPhase(_TorchPhase):
    fixed_points, scheduled = True, False

    def __init__(self, objective: Objective, iterations: int = 20, history: int = 50):
        self.objective = objective
        self.optimizer = torch.optim.LBFGS(objective.model.parameters(), lr=1.0, max_iter=iterations,
                                           history_size=history, line_search_fn="strong_wolfe",
                                           tolerance_grad=0.0, tolerance_change=0.0)

    def step(self, batch, lr, beta):
        first = []

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            out = self.objective.backward(batch, beta)
            if not first:
                first.append(out)
            return out[0]

        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step(closure)
        return first[0]


class GaussNewtonPhase:
    fixed_points, scheduled = False, False

    def __init__(self, objective: Objective, damping: float = 1e-4):
        self.objective = objective
        self.gn = GaussNewton([p for p in objective.model.parameters() if p.requires_grad], damping)

    def step(self, batch, lr, beta):
        x_in, x_bd, f, g = batch
        o, n_in, before = self.objective, x_in.shape[0], {}

        def residuals() -> LocalModel:
            R, J = residual_jacobian(o.model, x_in, f, x_bd, g, beta * o.bc_weight)
            interior, bc = R[:n_in].double().square().sum(), R[n_in:].double().square().sum() / beta
            before.update(interior=interior, bc=bc)
            return LocalModel(float(interior + beta * bc), J, R=R)

        def energy() -> LocalModel:  # the Ritz loss: its gradient, and the energy Gram's rows
            for p in self.gn.params:
                p.grad = None
            loss, interior, bc = o.backward(batch, beta)
            before.update(interior=interior.double(), bc=bc.double())
            gradient = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                                  for p in self.gn.params])
            for p in self.gn.params:
                p.grad = None
            J = energy_jacobian(o.model, x_in, x_bd, o.volume, beta * o.bc_weight)
            return LocalModel(float(loss), J, gradient=gradient)

        def loss_at() -> float:
            interior, bc = o.terms(batch)
            return interior + beta * bc

        self.gn.step(residuals if o.volume is None else energy, loss_at, max_step=lr)
        dtype = x_in.dtype
        interior, bc = before["interior"].to(dtype), before["bc"].to(dtype)
        return interior + beta * bc, interior, bc

    def state_dict(self) -> dict:
        return self.gn.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.gn.load_state_dict(state)


def make_phase(name: str, objective: Objective, config) -> AdamPhase | LBFGSPhase | GaussNewtonPhase:
    """The phase ``name`` for the model in ``objective``, with the options of ``config``."""
    if name == "adam":
        return AdamPhase(objective, config.lr)
    if name == "lbfgs":
        return LBFGSPhase(objective, config.lbfgs_iterations)
    if name == "gauss_newton":
        return GaussNewtonPhase(objective, config.damping)
    raise ValueError(f"optimizer must be one of {', '.join(NAMES)}, got {name!r}")
