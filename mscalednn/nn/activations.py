"""Activation functions, each a ``torch.nn.Module``, and the registry that names them.

The compactly supported activations of MscaleDNN (Liu, Cai & Xu 2020):

* sReLU(x)  = ReLU(x) ReLU(1 - x)                          (support [0, 1])
* s2ReLU(x) = sin(2 pi x) ReLU(x) ReLU(1 - x)              (support [0, 1])
* phi(x)    = ReLU(x)^2 - 3 ReLU(x-1)^2 + 3 ReLU(x-2)^2 - ReLU(x-3)^2   (quadratic B-spline)

and the smooth ones used with them: sin, tanh, and the plain torch activations.
"""

from __future__ import annotations

import math
from difflib import get_close_matches

import torch
from torch import nn

from ..errors import ConfigError

_TWO_PI = 2.0 * math.pi


class SReLU(nn.Module):
    """sReLU(x) = ReLU(x) * ReLU(1 - x), supported on [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * torch.relu(1.0 - x)


class S2ReLU(nn.Module):
    """s2ReLU(x) = sin(2 pi x) * ReLU(x) * ReLU(1 - x), supported on [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(_TWO_PI * x) * torch.relu(x) * torch.relu(1.0 - x)


class Phi(nn.Module):
    """Quadratic B-spline phi(x) = ReLU(x)^2 - 3ReLU(x-1)^2 + 3ReLU(x-2)^2 - ReLU(x-3)^2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clamping to the support [0, 3] keeps it exactly 0 beyond 3 (the four squares would
        # otherwise cancel only up to round-off of size x^2 eps)
        x = x.clamp(0.0, 3.0)
        return (torch.relu(x).square() - 3.0 * torch.relu(x - 1.0).square()
                + 3.0 * torch.relu(x - 2.0).square() - torch.relu(x - 3.0).square())


class Sin(nn.Module):
    """sin(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "srelu": SReLU,
    "s2relu": S2ReLU,
    "phi": Phi,
    "sin": Sin,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


def get_activation(name: str | nn.Module, path: str = "activation") -> nn.Module:
    """A new activation module from its registry name (a module passes through unchanged)."""
    if isinstance(name, nn.Module):
        return name
    key = str(name).lower()
    if key not in ACTIVATIONS:
        close = get_close_matches(key, ACTIVATIONS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else ""
        raise ConfigError(path, "expected one of " + ", ".join(ACTIVATIONS), name, hint=hint)
    return ACTIVATIONS[key]()
