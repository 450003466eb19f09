"""Building blocks shared by the networks: dense stacks and first-layer initialisers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .activations import get_activation


class ScaledOutput(nn.Module):
    """A network whose raw output y is returned as ``output_shift + output_scale * y``: two
    buffers, 0 and 1 unless :meth:`set_output_scaling` is called (the training loop sets them from
    the problem's data so that the raw network works at unit size whatever the size of u*)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("output_shift", torch.zeros(()))
        self.register_buffer("output_scale", torch.ones(()))

    def set_output_scaling(self, shift: float, scale: float) -> None:
        self.output_shift.fill_(shift)
        self.output_scale.fill_(scale)

    def scale_output(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.output_scale + self.output_shift


class DenseStack(nn.Module):
    """``depth`` hidden layers h <- sigma(W h + b) of equal ``width`` (or of the widths in a
    list ``width``; ``depth`` is then ignored), then a linear read-out.

    With ``residual=True`` each hidden layer whose input and output widths match adds its input:
    h <- h + sigma(W h + b).
    """

    def __init__(self, in_width: int, width: int | Sequence[int], depth: int, out_dim: int,
                 activation: str | nn.Module = "tanh", residual: bool = False):
        super().__init__()
        widths = [in_width] + (list(width) if isinstance(width, Sequence) else [width] * depth)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activation = get_activation(activation)
        self.residual = residual
        self.out = nn.Linear(widths[-1], out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            z = self.activation(layer(h))
            h = h + z if self.residual and z.shape == h.shape else z
        return self.out(h)


def init_directions(weight: torch.Tensor, bias: torch.Tensor, directions: str,
                    axis_fraction: float, pair_fraction: float = 0.0,
                    generator: torch.Generator | None = None) -> None:
    """Initialise first-layer weights ``weight`` [..., units, in_dim] in place.

    * ``random``: PyTorch's default, w_ij ~ U(-1/sqrt(in), 1/sqrt(in)).
    * ``axes``:  unit j reads coordinate j mod in_dim only, w = +-U(0.5, 1), bias U(-pi, pi).
    * ``mixed``: in every group along dim -2, a fraction ``axis_fraction`` of the units along
      the axes, a fraction ``pair_fraction`` along random directions in the plane of two random
      coordinates, the rest along uniformly random unit directions; every direction with
      length U(0.5, 1), so that all have the same frequency range; bias U(-pi, pi).

    All weights stay trainable. An axis unit sin(a w x_k + b) matches an oscillation along a
    coordinate at once, a pair unit one in a coordinate plane; in high dimension a dense random
    direction rarely lies near the direction of an oscillation (docs/method.md section 1).
    """
    if directions == "random":
        return
    if directions not in ("axes", "mixed"):
        raise ValueError(f"directions must be 'random', 'axes' or 'mixed', got {directions!r}")
    units, in_dim = weight.shape[-2], weight.shape[-1]
    n_axis = units if directions == "axes" else int(round(axis_fraction * units))
    n_pair = 0 if directions == "axes" or in_dim < 2 else min(int(round(pair_fraction * units)), units - n_axis)
    kw = {"generator": generator, "dtype": weight.dtype}
    with torch.no_grad():
        length = torch.rand(weight.shape[:-1], **kw) * 0.5 + 0.5
        sign = torch.randint(0, 2, weight.shape[:-1], generator=generator).to(weight.dtype) * 2 - 1
        w = torch.randn(weight.shape, **kw)
        axes = torch.zeros(units, in_dim, dtype=weight.dtype)
        axes[torch.arange(units), torch.arange(units) % in_dim] = 1.0
        w[..., :n_axis, :] = axes[:n_axis]
        if n_pair:
            pairs = w[..., n_axis:n_axis + n_pair, :]
            keep = torch.rand(pairs.shape, generator=generator).argsort(dim=-1) < 2
            pairs.mul_(keep)
        w = w / w.norm(dim=-1, keepdim=True)
        weight.copy_(w * (length * sign).unsqueeze(-1))
        bias.copy_((torch.rand(bias.shape, **kw) * 2 - 1) * math.pi)


class FourierFeatures(nn.Module):
    """Gaussian random Fourier features (Tancik et al. 2020): gamma(x) = [cos(2 pi B x), sin(2 pi B x)].

    B ~ N(0, sigma^2) of shape [features, in_dim], fixed (a buffer) unless ``trainable``.
    Output width: 2 * features.
    """

    def __init__(self, in_dim: int, features: int, sigma: float = 1.0, trainable: bool = False):
        super().__init__()
        B = torch.randn(features, in_dim) * sigma
        if trainable:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * x @ self.B.T
        return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)
