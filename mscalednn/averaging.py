"""Parameter averaging: the errors of the exponential moving average of Adam's iterates.

Adam with a learning rate that stays finite ends in a noise ball around a minimum: on the
residual loss the relative L2 error of the last iterate moves by a factor of 2-6 from one
evaluation to the next (poisson2d_multiscale with the adaptive config: between 4e-4 and 2.4e-3
over the last 100 s of a 10-minute run). The exponential moving average of the parameters,
theta_avg <- decay * theta_avg + (1 - decay) * theta (Polyak-Ruppert averaging over about
1 / (1 - decay) steps, after a warm-up), sits nearer the middle of that ball. With ``train.ema`` set, the training
loop keeps such an average (torch.optim.swa_utils.AveragedModel) while an Adam phase runs, the
errors are measured on it and the run's result is the averaged network.

The average restarts from the current parameters whenever they jump rather than drift: when an
adaptive MscaleDNN places new wave units, and when a phase starts (a Gauss-Newton or L-BFGS
phase converges to a point, so nothing is averaged there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.optim.swa_utils import AveragedModel


def start(model: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """A fresh average of ``model`` (a copy of its parameters and buffers), or None when
    ``decay`` is None."""
    if decay is None:
        return None
    average = AveragedModel(model, multi_avg_fn=_ema(decay), use_buffers=False)
    average.update_parameters(model)  # the first update copies
    return average


def _ema(decay: float):
    """The update of an average of n iterates so far: theta_avg <- w theta_avg + (1 - w) theta
    with w = min(decay, (1 + n) / (10 + n)) (the warm-up of TensorFlow's
    ExponentialMovingAverage): a fresh average follows the iterates until about 9 / (1 - decay)
    updates, instead of staying near the point it started from for 1 / (1 - decay) steps, so a
    short run, or one just after a restart, is not reported at parameters it has left. The
    weight is computed on the device (no synchronisation)."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        n = n.to(torch.float64)
        weight = 1.0 - torch.clamp((1.0 + n) / (10.0 + n), max=decay)
        for a, c in zip(averaged, current):
            a.lerp_(c, weight.to(a.dtype))
    return update


@contextmanager
def swapped_in(model: torch.nn.Module, average: AveragedModel | None) -> Iterator[None]:
    """Within the block ``model`` holds the averaged parameters (its own come back after it);
    without an average nothing changes. The loss, the errors and the hooks then all see the
    network the run reports, with no second copy of the loss's closures."""
    if average is None:
        yield
        return
    own = [p.detach().clone() for p in model.parameters()]
    adopt(model, average)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, q in zip(model.parameters(), own):
                p.copy_(q)


@torch.no_grad()
def adopt(model: torch.nn.Module, average: AveragedModel | None) -> None:
    """Put the averaged parameters into ``model`` for good (the end of a run)."""
    if average is not None:
        for p, q in zip(model.parameters(), average.module.parameters()):
            p.copy_(q)
