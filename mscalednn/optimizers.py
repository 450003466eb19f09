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
    uncompiled, for values without a backward pass; ``forward``: the network's forward for the
    Dirichlet penalty in :meth:`backward` (compiled with the interior; None: the model itself).
    ``chunk``: points per backward pass.
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
    forward: Callable | None = None

    def boundary(self, x_bd: torch.Tensor, g: torch.Tensor, create_graph: bool = True,
                 forward: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(penalty, natural) on the boundary points: the Dirichlet penalty alone where g is one
        column (u from ``forward``, default the model); with mixed conditions
        (:func:`mscalednn.losses.boundary_terms`) du/dn from one reverse pass where the residual
        loss needs it."""
        if g.dim() == 1:
            u = (forward or self.model)(x_bd).squeeze(-1)
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
        bc, natural = self.boundary(x_bd, g, forward=self.forward)
        (natural + beta * bc).backward()
        interior, bc = self.world.average_gradients(list(self.model.parameters()), interior + natural.detach(),
                                                    bc.detach())
        return interior + beta * bc, interior, bc

    def terms(self, batch: tuple) -> tuple[float, float]:
        """(interior, boundary) at the current parameters, without a backward pass (on the batch
        in the network's dtype: a Gauss-Newton phase trains a float32 run's network in float64)."""
        dtype = next(self.model.parameters()).dtype
        x_in, x_bd, f, g = (t.to(dtype) for t in batch)
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
        # fused: one kernel for all parameters, 0.12 ms a step against 0.41 (55k parameters, 2 cores)
        self.optimizer = torch.optim.Adam(objective.model.parameters(), lr=lr, fused=True)

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
    """Gauss-Newton steps, each fitted to the previous step's points and measured on the current
    ones: the Jacobian and the damped solve use the points of step k - 1, the line search (and
    the damping's ratio of actual to predicted decrease) the fresh points of step k. Where the
    points are too few for the network (high dimension), a step fits its own points and lowers
    nothing on others: it is not taken and the damping grows. The phase's first step only keeps
    its points.

    The phase trains in float64: a float32 network is converted when the phase starts (its
    steps reach errors that float32 weights cannot hold: rel L2 ~2e-6 against a float32 floor
    near 1e-5 on poisson1d_multiscale) and stays float64 after it.

    With a ``fallback`` (an Adam phase: a Gauss-Newton phase after Adam), the phase hands back to
    it for the rest of its share of the budget when neither of its first two steps lowered the
    loss on the fresh points by ``PROBE_GAIN`` (1%), with the network in the run's dtype again;
    from then on it takes the learning-rate schedule (``scheduled``) and ``gave_up`` is set."""

    fixed_points = False
    PROBE_GAIN, PROBE_STEPS = 0.01, 2

    def __init__(self, objective: Objective, dtype: torch.dtype, damping: float = 1e-4,
                 fallback: AdamPhase | None = None):
        self.objective, self.fallback = objective, fallback
        self.dtype = dtype  # the run's
        self.gn = GaussNewton([p for p in objective.model.parameters() if p.requires_grad], damping)
        self.fit: tuple | None = None  # the previous step's batch (float64)
        self.gains: list[float] = []  # the relative decrease of each step on fresh points
        self.gave_up = False

    @property
    def scheduled(self) -> bool:
        return self.gave_up

    def step(self, batch, lr, beta):
        if self.gave_up:
            return self.fallback.step(batch, lr, beta)
        o, fit = self.objective, self.fit
        o.model.double()
        batch = self.fit = tuple(t.double() for t in batch)
        now = {}

        def loss_on(points: tuple) -> float:
            interior, bc = o.terms(points)
            if points is batch:  # the first: the terms before the step, which step() returns
                now.setdefault("terms", (interior, bc))
            return interior + beta * bc

        if fit is None:
            loss_on(batch)
        else:
            x_in, x_bd, f, g = fit

            def residuals() -> LocalModel:
                R, J = residual_jacobian(o.model, x_in, f, x_bd, g, beta * o.bc_weight)
                return LocalModel(float(R.double().square().sum()), J, R=R)

            def energy() -> LocalModel:  # the Ritz loss: its gradient, and the energy Gram's rows
                for p in self.gn.params:
                    p.grad = None
                loss = o.backward(fit, beta)[0]
                gradient = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                                      for p in self.gn.params])
                for p in self.gn.params:
                    p.grad = None
                J = energy_jacobian(o.model, x_in, x_bd, o.volume, beta * o.bc_weight)
                return LocalModel(float(loss), J, gradient=gradient)

            # measured on this step's points, which the fit has not seen
            before, after = self.gn.step(residuals if o.volume is None else energy, lambda: loss_on(batch), lr,
                                         lambda: loss_on(fit))
            self.gains.append(1.0 - after / before if before > 0 else 0.0)
            if (self.fallback is not None and len(self.gains) == self.PROBE_STEPS
                    and max(self.gains) < self.PROBE_GAIN):
                self.gave_up = True
                o.model.to(self.dtype)
        interior, bc = (torch.tensor(v, dtype=self.dtype, device=batch[0].device) for v in now["terms"])
        return interior + beta * bc, interior, bc

    def state_dict(self) -> dict:
        return {**self.gn.state_dict(), "fit": self.fit, "gains": list(self.gains), "gave_up": self.gave_up,
                "fallback": None if self.fallback is None else self.fallback.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gn.load_state_dict(state)
        device = next(self.objective.model.parameters()).device
        self.fit = None if state.get("fit") is None else tuple(t.to(device) for t in state["fit"])
        self.gains, self.gave_up = list(state.get("gains", [])), bool(state.get("gave_up", False))
        if self.fallback is not None and state.get("fallback") is not None:
            self.fallback.load_state_dict(state["fallback"])
            for moments in self.fallback.optimizer.state.values():  # cast to the parameters' dtype (float64
                for k, v in moments.items():  # here): Adam's is the run's
                    if k != "step" and torch.is_tensor(v) and v.is_floating_point():
                        moments[k] = v.to(self.dtype)


def make_phase(name: str, objective: Objective, config, index: int = 0,
               previous=None) -> AdamPhase | LBFGSPhase | GaussNewtonPhase:
    """The phase ``name`` for the model in ``objective``, with the options of ``config``, as the
    phase number ``index`` of the run; ``previous``: the phase before it where it is at hand. A
    Gauss-Newton phase after another hands back to Adam where it does not pay: to ``previous``
    itself where that is Adam (its moments kept), else to a fresh Adam."""
    if name == "adam":
        return AdamPhase(objective, config.lr)
    if name == "lbfgs":
        return LBFGSPhase(objective, config.lbfgs_iterations)
    if name == "gauss_newton":
        fallback = (None if index == 0 else previous if isinstance(previous, AdamPhase)
                    else AdamPhase(objective, config.lr))
        return GaussNewtonPhase(objective, getattr(torch, config.dtype), config.damping, fallback)
    raise ValueError(f"optimizer must be one of {', '.join(NAMES)}, got {name!r}")
