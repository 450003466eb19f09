"""Forward Laplacian (Li et al., arXiv 2307.08214): value, input Jacobian and Laplacian of a
network in ONE forward pass, exactly.

A jet (v, J, L) holds, for every hidden unit, its value v [..., N, w], its gradient with
respect to the input J [d, ..., N, w] (the input direction first) and its Laplacian L [..., N, w].

    input layer:        v = x,            J = I,              L = 0
    z = W h + b:        v = W v_h + b,    J = W J_h,          L = W L_h
    y = sigma(z):       v = sigma(z),     J = sigma'(z) J_z,  L = sigma'(z) L_z + sigma''(z) |J_z|^2

with |J_z|^2 summed over the d input directions. Backpropagation to the parameters through
these formulas is ordinary autograd. For the compactly supported activations (sReLU, s2ReLU,
phi) sigma'' is the almost-everywhere derivative (the strong form sees no delta terms).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .nn.activations import S2ReLU, Phi, Sin, SReLU
from .nn.layers import DenseStack, FourierFeatures
from .nn.mlp import MLP
from .nn.mscale import MscaleDNN

_TWO_PI = 2.0 * math.pi


class Jet(NamedTuple):
    v: torch.Tensor   # [..., N, w]
    J: torch.Tensor   # [d, ..., N, w]
    L: torch.Tensor   # [..., N, w]


def _inside(z: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return ((z > lo) & (z < hi)).to(z.dtype)


def activation_derivatives(act: nn.Module, z: torch.Tensor):
    """(sigma(z), sigma'(z), sigma''(z)) for a registry activation, in closed form."""
    if isinstance(act, nn.Tanh):
        t = torch.tanh(z)
        d1 = 1 - t * t
        return t, d1, -2 * t * d1
    if isinstance(act, Sin):
        s, c = torch.sin(z), torch.cos(z)
        return s, c, -s
    if isinstance(act, SReLU):
        m = _inside(z, 0.0, 1.0)
        return m * z * (1 - z), m * (1 - 2 * z), -2 * m
    if isinstance(act, S2ReLU):  # s q with s = sin(2 pi z), q = z (1 - z), on (0, 1)
        m = _inside(z, 0.0, 1.0)
        s, c, q, dq = torch.sin(_TWO_PI * z), torch.cos(_TWO_PI * z), z * (1 - z), 1 - 2 * z
        d1 = _TWO_PI * c * q + s * dq
        d2 = -_TWO_PI**2 * s * q + 2 * _TWO_PI * c * dq - 2 * s
        return m * s * q, m * d1, m * d2
    if isinstance(act, Phi):
        m = _inside(z, 0.0, 3.0)
        d1 = 2 * (torch.relu(z) - 3 * torch.relu(z - 1) + 3 * torch.relu(z - 2) - torch.relu(z - 3))
        d2 = 2 * ((z > 0).to(z.dtype) - 3 * (z > 1).to(z.dtype) + 3 * (z > 2).to(z.dtype) - (z > 3).to(z.dtype))
        return act(z), m * d1, m * d2
    if isinstance(act, nn.ReLU):
        return torch.relu(z), (z > 0).to(z.dtype), torch.zeros_like(z)
    if isinstance(act, nn.Sigmoid):
        s = torch.sigmoid(z)
        d1 = s * (1 - s)
        return s, d1, d1 * (1 - 2 * s)
    if isinstance(act, nn.Softplus) and act.beta == 1 and act.threshold == 20:
        s = torch.sigmoid(z)
        return act(z), s, s * (1 - s)
    if isinstance(act, nn.SiLU):
        s = torch.sigmoid(z)
        d1 = s * (1 + z * (1 - s))
        return z * s, d1, s * (1 - s) * (2 + z * (1 - 2 * s))
    if isinstance(act, nn.GELU) and act.approximate == "none":
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        return z * cdf, cdf + z * pdf, (2 - z * z) * pdf
    if isinstance(act, nn.ELU) and act.alpha == 1.0:
        e = torch.exp(torch.clamp(z, max=0.0))
        pos = (z > 0).to(z.dtype)
        return act(z), pos + (1 - pos) * e, (1 - pos) * e
    raise NotImplementedError(type(act).__name__)


def supports(model: nn.Module) -> bool:
    """Whether :func:`forward_laplacian` knows every part of ``model``."""
    if not isinstance(model, (MLP, MscaleDNN)):
        return False
    acts = [m for m in model.modules() if not isinstance(m, (MLP, MscaleDNN, DenseStack, nn.Linear,
                                                                FourierFeatures, nn.Identity,
                                                                nn.ModuleList, nn.ParameterList))]
    z = torch.zeros(1)
    try:
        for act in acts:
            activation_derivatives(act, z)
    except NotImplementedError:
        return False
    return True


def _act(act: nn.Module, z: Jet) -> Jet:
    s, d1, d2 = activation_derivatives(act, z.v)
    return Jet(s, d1 * z.J, d1 * z.L + d2 * z.J.square().sum(dim=0))


def _linear(h: Jet, W: torch.Tensor, b: torch.Tensor | None) -> Jet:
    """z = h W + b with W [..., in, out] (already transposed)."""
    v = h.v @ W
    return Jet(v if b is None else v + b, h.J @ W, h.L @ W)


def _fourier_pair(z: Jet, scale: float = 1.0) -> Jet:
    """scale * [cos z, sin z] along the last axis."""
    c, s = torch.cos(z.v), torch.sin(z.v)
    q = z.J.square().sum(dim=0)
    return Jet(scale * torch.cat([c, s], -1),
               scale * torch.cat([-s * z.J, c * z.J], -1),
               scale * torch.cat([-s * z.L - c * q, c * z.L - s * q], -1))


def _add(a: Jet, b: Jet) -> Jet:
    """The jet of a + b (a residual connection)."""
    return Jet(a.v + b.v, a.J + b.J, a.L + b.L)


def _dense(act: nn.Module, h: Jet, W: torch.Tensor, b: torch.Tensor, residual: bool) -> Jet:
    """sigma(h W + b), plus h when ``residual`` and the widths match."""
    z = _act(act, _linear(h, W, b))
    return _add(h, z) if residual and z.v.shape == h.v.shape else z


def _stack(stack: DenseStack, h: Jet | torch.Tensor) -> Jet:
    """The stack on a jet, or on the input x itself (then the first layer's Jacobian is W)."""
    layers = list(stack.layers)
    if isinstance(h, torch.Tensor):
        x = h
        h = _input_jet(x)
        if layers:  # first layer on x: J_x = I, so J_z = W without a matmul
            first = layers.pop(0)
            z = _act(stack.activation, _first_layer_jet(x, first.weight.T, first.bias))
            h = _add(h, z) if stack.residual and z.v.shape == x.shape else z
    for layer in layers:
        h = _dense(stack.activation, h, layer.weight.T, layer.bias, stack.residual)
    return _linear(h, stack.out.weight.T, stack.out.bias)


def _first_layer_jet(x: torch.Tensor, Wt: torch.Tensor, b: torch.Tensor) -> Jet:
    """z = x Wt + b for the first layer, whose input Jacobian is Wt itself (J_x = I).

    Wt: [..., d, w]; returns J [d, ..., N, w] broadcast over the points (no copy)."""
    v = x @ Wt + b
    J = Wt.movedim(-2, 0).unsqueeze(-2).expand(-1, *v.shape)
    return Jet(v, J, torch.zeros_like(v))


def _input_jet(x: torch.Tensor) -> Jet:
    d = x.shape[1]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    return Jet(x, eye.unsqueeze(1).expand(d, *x.shape), torch.zeros_like(x))


def forward_laplacian(model: nn.Module, x: torch.Tensor):
    """u [N], grad u [N, d] and Laplace u [N] of a scalar network in one forward pass."""
    if isinstance(model, MLP):
        if isinstance(model.features, FourierFeatures):
            z = _first_layer_jet(x, _TWO_PI * model.features.B.T, torch.zeros((), dtype=x.dtype, device=x.device))
            h = _fourier_pair(z)
        else:
            h = x
        out = _stack(model.stack, h)
    elif isinstance(model, MscaleDNN) and model.variant == "first_layer":
        b = model.first.bias * model.K if model.scale_bias else model.first.bias
        z = _first_layer_jet(x, model.first.weight.T * model.K, b)
        h = _fourier_pair(z, 0.5) if model.fourier else _act(model.first_activation, z)
        out = _stack(model.stack, h)
    elif isinstance(model, MscaleDNN):
        Wt = (model.W0 * model.K).transpose(1, 2)          # [n, d, w]
        b = model.K * model.b0 if model.scale_bias else model.b0
        z = _first_layer_jet(x, Wt, b)                      # v [n, N, w], J [d, n, N, w]
        h = _fourier_pair(z, 0.5) if model.fourier else _act(model.first_activation, z)
        for W, bb in zip(model.Ws, model.bs):
            h = _dense(model.activation, h, W, bb, model.residual)
        o = _linear(h, model.W_out, None)
        out = Jet(o.v.sum(0) + model.b_out, o.J.sum(1), o.L.sum(0))
    else:
        raise NotImplementedError(type(model).__name__)
    if out.v.shape[-1] != 1:
        raise ValueError("forward_laplacian needs a scalar network (out_dim = 1)")
    return out.v[..., 0], out.J[..., 0].T, out.L[..., 0]
