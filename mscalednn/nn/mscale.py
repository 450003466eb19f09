"""Multi-scale deep neural networks (MscaleDNN; Cai & Xu 2019, Liu, Cai & Xu 2020).

A function whose spectrum lies at high frequency becomes low-frequency after the substitution
x -> a x. MscaleDNN gives parts of the network inputs scaled by factors a_1 < ... < a_N so that
each part sees its own frequency band as a low one, which it learns fast (F-Principle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .activations import get_activation
from .layers import DenseStack, ScaledOutput, init_directions


MAX_SCALES = {"linear": 1000, "geometric": 64}  # 2^63 is far beyond any useful scale


def make_scales(spec: str | Sequence[float]) -> tuple[float, ...]:
    """Scales from an explicit list, ``"linear:N"`` (1, 2, ..., N) or ``"geometric:N"`` (1, 2, 4, ..., 2^(N-1))."""
    if isinstance(spec, str):
        kind, _, n = spec.partition(":")
        if kind not in ("linear", "geometric") or not (n.isascii() and n.isdigit()) \
                or not 1 <= int(n) <= MAX_SCALES[kind]:
            raise ConfigError("scales", "expected a list of positive numbers, 'linear:N' (1 <= N <= "
                              f"{MAX_SCALES['linear']}) or 'geometric:N' (1 <= N <= "
                              f"{MAX_SCALES['geometric']})", spec)
        n = int(n)
        return tuple(float(i + 1) for i in range(n)) if kind == "linear" else tuple(2.0 ** i for i in range(n))
    scales = tuple(float(a) for a in spec)
    if not scales or any(not math.isfinite(a) or a <= 0 for a in scales):
        raise ConfigError("scales", "expected a non-empty list of positive finite numbers", list(spec))
    return scales


def _uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(t, -bound, bound)


class MscaleDNN(ScaledOutput):
    """Multi-scale DNN in either published variant.

    ``variant="subnets"`` (MscaleDNN-2): N subnetworks, the i-th sees a_i x, outputs summed,
        u(x) = sum_i N_i(a_i x).
    The subnetworks run together as one batched matmul per layer (weights [N, in, out]).
    Each has ``depth`` hidden layers of ``width`` neurons (with ``fourier``, the first gives
    2 * ``width`` outputs: cos and sin).

    ``variant="first_layer"`` (MscaleDNN-1): one network whose first hidden layer is
        h = sigma_1(K (W_0 x) + b_0),   K = diag(a_1, ..., a_1, a_2, ..., a_N),
    i.e. ``width`` neurons split into N equal groups (leftovers take the highest scale),
    followed by ``depth - 1`` plain hidden layers of ``hidden_width`` (default ``width``) neurons.

    Args:
        in_dim: input dimension d.
        out_dim: output dimension.
        scales: the scale factors a_i, or ``"linear:N"`` / ``"geometric:N"``.
        width: per-subnetwork width (subnets) or total width (first_layer).
        depth: hidden layers (per subnetwork for subnets).
        activation: activation of the hidden layers (registry name or module).
        first_activation: activation of the first (scaled) layer; default ``activation``.
        variant: ``"subnets"`` or ``"first_layer"``.
        residual: skip connections between hidden layers of equal width.
        fourier: first layer h = 0.5 [cos(K W_0 x + b_0), sin(K W_0 x + b_0)] instead of sigma_1.
        directions: first-layer initial directions, ``"random"``, ``"axes"`` or ``"mixed"``
            (see :func:`mscalednn.nn.layers.init_directions`).
        axis_fraction: share of axis-aligned first-layer units for ``directions="mixed"``.
        pair_fraction: share of units in random coordinate planes for ``directions="mixed"``.
        scale_bias: multiply the first-layer bias by the scale too.
        hidden_width: width of the layers after the first (first_layer variant only).

    The output is ``output_shift + output_scale * u`` (buffers, 0 and 1 by default; see
    :class:`mscalednn.nn.layers.ScaledOutput`).
    """

    def __init__(self, in_dim: int, out_dim: int = 1, scales: str | Sequence[float] = "geometric:6",
                 width: int = 32, depth: int = 3, activation: str = "s2relu",
                 first_activation: str | None = None, variant: str = "subnets",
                 residual: bool = False, fourier: bool = False, directions: str = "random",
                 axis_fraction: float = 0.5, pair_fraction: float = 0.0, scale_bias: bool = False,
                 hidden_width: int | None = None):
        super().__init__()
        if variant not in ("subnets", "first_layer"):
            raise ConfigError("variant", "expected 'subnets' or 'first_layer'", variant)
        if directions not in ("random", "axes", "mixed"):
            raise ConfigError("directions", "expected 'random', 'axes' or 'mixed'", directions)
        for name, value in (("axis_fraction", axis_fraction), ("pair_fraction", pair_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(name, "expected a number in [0, 1]", value)
        self.in_dim, self.out_dim, self.variant = in_dim, out_dim, variant
        self.scales = make_scales(scales)
        self.fourier, self.scale_bias, self.residual = fourier, scale_bias, residual
        self.first_activation = (get_activation(first_activation, "first_activation") if first_activation
                                 else get_activation(activation))
        n = len(self.scales)
        first_width = 2 * width if fourier else width
        if hidden_width is not None and (variant != "first_layer" or hidden_width < 1):
            raise ConfigError("hidden_width", "expected null, or an integer >= 1 with variant "
                              "'first_layer'", hidden_width)
        if variant == "first_layer":
            if width < n:
                raise ConfigError("width", f"expected at least one neuron per scale (>= {n})", width)
            group = width // n
            K = [self.scales[min(j // group, n - 1)] for j in range(width)]
            self.register_buffer("K", torch.tensor(K))
            self.first = nn.Linear(in_dim, width)
            for i in range(n):  # mix directions inside every scale group
                sl = slice(i * group, width if i == n - 1 else (i + 1) * group)
                init_directions(self.first.weight.data[sl], self.first.bias.data[sl], directions,
                                axis_fraction, pair_fraction)
            self.stack = DenseStack(first_width, hidden_width or width, depth - 1, out_dim, activation, residual)
        else:
            self.register_buffer("K", torch.tensor(self.scales).view(n, 1, 1))
            self.W0 = nn.Parameter(_uniform_(torch.empty(n, width, in_dim), in_dim))
            self.b0 = nn.Parameter(_uniform_(torch.empty(n, 1, width), in_dim))
            init_directions(self.W0.data, self.b0.data, directions, axis_fraction, pair_fraction)
            widths = [first_width] + [width] * (depth - 1)
            self.Ws = nn.ParameterList(nn.Parameter(_uniform_(torch.empty(n, a, b), a))
                                       for a, b in zip(widths[:-1], widths[1:]))
            self.bs = nn.ParameterList(nn.Parameter(_uniform_(torch.empty(n, 1, b), a))
                                       for a, b in zip(widths[:-1], widths[1:]))
            self.W_out = nn.Parameter(_uniform_(torch.empty(n, widths[-1], out_dim), widths[-1]))
            self.b_out = nn.Parameter(_uniform_(torch.empty(out_dim), widths[-1] * n))
            self.activation = get_activation(activation)

    def _first(self, z: torch.Tensor) -> torch.Tensor:
        if self.fourier:
            return 0.5 * torch.cat([torch.cos(z), torch.sin(z)], dim=-1)
        return self.first_activation(z)

    def first_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, b) of the first_layer variant's scaled first layer z = x A + b: A = (K W_0)^T
        [in_dim, width] (the scales folded into the weights), b its bias (scaled too with
        ``scale_bias``)."""
        b = self.first.bias * self.K if self.scale_bias else self.first.bias
        return (self.first.weight * self.K[:, None]).T, b

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output before the output scaling, [batch, out_dim]."""
        if self.variant == "first_layer":  # K (W x) + b as one product with the scaled weights K W
            A, b = self.first_affine()
            return self.stack(self._first(torch.addmm(b, x, A) if x.dim() == 2 else x @ A + b))
        # subnets: h has shape [N, batch, width]
        Wx = torch.matmul(x, self.W0.transpose(1, 2))  # [N, batch, width], contiguous
        h = self._first(self.K * Wx + (self.K * self.b0 if self.scale_bias else self.b0))
        for W, b in zip(self.Ws, self.bs):
            z = self.activation(torch.baddbmm(b, h, W))
            h = h + z if self.residual and z.shape == h.shape else z
        return torch.bmm(h, self.W_out).sum(dim=0) + self.b_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_output(self.raw(x))
