"""One network on each side of an interface: u = inner(x) inside a shape, outer(x) outside.

Where a coefficient jumps across a surface (a dielectric sphere), the solution has a kink there:
a single smooth network must bend sharply to follow it, while each of two networks is smooth on
its own side and the kink comes from switching between them. The residual loss trains them with
the interface conditions (:func:`mscalednn.losses.interface_terms`)."""

from __future__ import annotations

import torch
from torch import nn


class Piecewise(nn.Module):
    """u(x) = inner(x) where ``shape`` contains x, else outer(x).

    ``shape``: any object with ``contains(points) -> bool array`` for a float64 numpy array
    [N, d] (a :mod:`mscalednn.geometry` shape); the membership is evaluated on the host. A
    forward pass evaluates both networks at every point (for evaluation and plots; the training
    loss evaluates each network on its own side only, :meth:`inside`)."""

    def __init__(self, inner: nn.Module, outer: nn.Module, shape):
        super().__init__()
        self.inner, self.outer, self.shape = inner, outer, shape

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """Whether each point of x [N, d] lies in the shape, [N] bool on x's device."""
        return torch.as_tensor(self.shape.contains(x.detach().cpu().double().numpy()), device=x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.inside(x).unsqueeze(-1), self.inner(x), self.outer(x))

    @property
    def output_shift(self):
        return getattr(self.inner, "output_shift", 0.0)

    @property
    def output_scale(self):
        return getattr(self.inner, "output_scale", 1.0)

    def set_output_scaling(self, shift: float, scale: float) -> None:
        for net in (self.inner, self.outer):
            if hasattr(net, "set_output_scaling"):
                net.set_output_scaling(shift, scale)
