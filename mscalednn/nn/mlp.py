"""The plain fully connected network ("vanilla DNN")."""

from __future__ import annotations

import torch
from torch import nn

from .layers import DenseStack, FourierFeatures, ScaledOutput


class MLP(ScaledOutput):
    """u(x) = W_out sigma(W_depth ... sigma(W_1 gamma(x) + b_1) ...) + b_out.

    gamma is the identity, or Gaussian random Fourier features of width 2 * ``fourier_features``
    with standard deviation ``fourier_sigma`` when ``fourier_features > 0``.

    Args:
        in_dim: input dimension d.
        out_dim: output dimension.
        width: neurons per hidden layer, or a list of each hidden layer's width (e.g.
            [200, 200, 200, 100]; ``depth`` is then ignored).
        depth: number of hidden layers.
        activation: registry name (see ``mscalednn.nn.ACTIVATIONS``) or a module.
        residual: add skip connections between hidden layers of equal width.
        fourier_features: number of random Fourier frequencies (0: none).
        fourier_sigma: standard deviation of the Fourier frequencies.

    The output is ``output_shift + output_scale * u`` (buffers, 0 and 1 by default; see
    :class:`mscalednn.nn.layers.ScaledOutput`).
    """

    def __init__(self, in_dim: int, out_dim: int = 1, width: int | list[int] = 128, depth: int = 3,
                 activation: str = "tanh", residual: bool = False, fourier_features: int = 0,
                 fourier_sigma: float = 1.0):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.features = (FourierFeatures(in_dim, fourier_features, fourier_sigma)
                         if fourier_features > 0 else nn.Identity())
        first = 2 * fourier_features if fourier_features > 0 else in_dim
        self.stack = DenseStack(first, width, depth, out_dim, activation, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_output(self.stack(self.features(x)))
