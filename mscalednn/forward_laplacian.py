"""Forward Laplacian (Li et al., arXiv 2307.08214): value, input Jacobian and Laplacian of a
network in ONE forward pass, exactly.

A jet (v, J, L) holds, for every hidden unit, its value v [..., N, w], its gradient with
respect to the input J [..., N, d, w] and its Laplacian L [..., N, w].

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
    J: torch.Tensor   # [..., N, d, w]
    L: torch.Tensor   # [..., N, w]


class FirstJet(NamedTuple):
    """The jet of the first hidden layer sigma(x A + b), kept factored: J = D[..., N, 1, w] *
    A[..., 1, d, w] with A the first layer's weights, the same at every point. The next linear
    layer then needs one matmul of D [N, w] with a [w, d * out] matrix instead of building
    J [N, d, w] and multiplying that."""

    v: torch.Tensor   # [..., N, w]
    D: torch.Tensor   # [..., N, w]
    A: torch.Tensor   # [..., d, w]
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


class _ScaleAndSquareNorm(torch.autograd.Function):
    """(J, q) = (J_z * d1, sum_i J_z[i]^2) for J_z [..., N, d, w], d1 [..., N, w]: the two
    operations of an activation on the big Jacobian tensor, with a hand-fused backward (four
    passes over J_z instead of autograd's six; only J_z and d1 saved)."""

    @staticmethod
    def forward(ctx, Jz: torch.Tensor, d1: torch.Tensor):
        ctx.save_for_backward(Jz, d1)
        ctx.set_materialize_grads(False)
        return Jz * d1.unsqueeze(-2), torch.linalg.vecdot(Jz, Jz, dim=-2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gJ: torch.Tensor | None, gq: torch.Tensor | None):
        Jz, d1 = ctx.saved_tensors
        if gJ is None:  # J unused (the last layer of a Laplacian-only loss)
            return (None if gq is None else Jz * (2 * gq).unsqueeze(-2)), None
        g_Jz = gJ * d1.unsqueeze(-2)
        if gq is not None:
            g_Jz.addcmul_(Jz, (2 * gq).unsqueeze(-2))
        return g_Jz, torch.linalg.vecdot(gJ, Jz, dim=-2)


def _act(act: nn.Module, z: Jet) -> Jet:
    s, d1, d2 = activation_derivatives(act, z.v)
    J, q = _ScaleAndSquareNorm.apply(z.J, d1)
    return Jet(s, J, torch.addcmul(d2 * q, d1, z.L))


def _first(act: nn.Module | None, x: torch.Tensor, Wt: torch.Tensor, b: torch.Tensor | None,
           scale: float = 1.0) -> FirstJet:
    """The first layer sigma(x Wt + b) on the input (J_x = I, L_x = 0): J_z = Wt, L_z = 0, so
    J = sigma'(z) Wt stays factored and L = sigma''(z) |Wt|^2. ``act=None`` is the Fourier pair
    scale * [cos z, sin z]. Wt: [..., d, w]."""
    z = x @ Wt
    z = z if b is None else z + b
    q = Wt.square().sum(dim=-2, keepdim=True)                      # [..., 1, w]
    if act is None:
        c, s = torch.cos(z), torch.sin(z)
        return FirstJet(scale * torch.cat([c, s], -1), scale * torch.cat([-s, c], -1),
                        torch.cat([Wt, Wt], -1), -scale * torch.cat([c, s], -1) * torch.cat([q, q], -1))
    s, d1, d2 = activation_derivatives(act, z)
    return FirstJet(s, d1, Wt, d2 * q)


def _linear(h: Jet | FirstJet, W: torch.Tensor, b: torch.Tensor | None) -> Jet:
    """z = h W + b with W [..., in, out] (already transposed)."""
    v = h.v @ W
    v = v if b is None else v + b
    if isinstance(h, FirstJet):
        # J_z[n, i, j] = sum_k D[n, k] A[i, k] W[k, j]: one matmul of D with M[k, (i, j)] = A[i, k] W[k, j]
        d, out = h.A.shape[-2], W.shape[-1]
        M = h.A.transpose(-1, -2).unsqueeze(-1) * W.unsqueeze(-2)   # [..., in, d, out]
        J = (h.D @ M.flatten(-2)).unflatten(-1, (d, out))
    else:
        J = (h.J.flatten(-3, -2) @ W).unflatten(-2, h.J.shape[-3:-1])
    return Jet(v, J, h.L @ W)


def _full(h: Jet | FirstJet) -> Jet:
    if isinstance(h, FirstJet):
        return Jet(h.v, h.D.unsqueeze(-2) * h.A.unsqueeze(-3), h.L)
    return h


def _add(a: Jet | FirstJet, b: Jet | FirstJet) -> Jet:
    """The jet of a + b (a residual connection)."""
    a, b = _full(a), _full(b)
    return Jet(a.v + b.v, a.J + b.J, a.L + b.L)


def _dense(act: nn.Module, h: Jet | FirstJet, W: torch.Tensor, b: torch.Tensor, residual: bool) -> Jet:
    """sigma(h W + b), plus h when ``residual`` and the widths match."""
    z = _act(act, _linear(h, W, b))
    return _add(h, z) if residual and z.v.shape == h.v.shape else z


def _input_jet(x: torch.Tensor) -> Jet:
    N, d = x.shape
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    return Jet(x, eye.expand(N, d, d), torch.zeros_like(x))


def _stack(stack: DenseStack, h: Jet | FirstJet | torch.Tensor) -> Jet:
    """The stack on a jet, or on the input x itself (then its first layer is :func:`_first`)."""
    layers = list(stack.layers)
    if isinstance(h, torch.Tensor):
        x, h = h, _input_jet(h)
        if layers:
            first = layers.pop(0)
            z = _first(stack.activation, x, first.weight.T, first.bias)
            h = _add(h, z) if stack.residual and z.v.shape == x.shape else z
    for layer in layers:
        h = _dense(stack.activation, h, layer.weight.T, layer.bias, stack.residual)
    return _linear(h, stack.out.weight.T, stack.out.bias)


def forward_laplacian(model: nn.Module, x: torch.Tensor):
    """u [N], grad u [N, d] and Laplace u [N] of a scalar network in one forward pass."""
    if isinstance(model, MLP):
        h = x
        if isinstance(model.features, FourierFeatures):
            h = _first(None, x, _TWO_PI * model.features.B.T, None)
        out = _stack(model.stack, h)
    elif isinstance(model, MscaleDNN) and model.variant == "first_layer":
        b = model.first.bias * model.K if model.scale_bias else model.first.bias
        h = _first(None if model.fourier else model.first_activation, x, model.first.weight.T * model.K, b, 0.5)
        out = _stack(model.stack, h)
    elif isinstance(model, MscaleDNN):
        Wt = (model.W0 * model.K).transpose(1, 2)          # [n, d, w]
        b = model.K * model.b0 if model.scale_bias else model.b0
        h = _first(None if model.fourier else model.first_activation, x, Wt, b, 0.5)  # v [n, N, w]
        for W, bb in zip(model.Ws, model.bs):
            h = _dense(model.activation, h, W, bb, model.residual)
        o = _linear(h, model.W_out, None)
        out = Jet(o.v.sum(0) + model.b_out, o.J.sum(0), o.L.sum(0))
    else:
        raise NotImplementedError(type(model).__name__)
    if out.v.shape[-1] != 1:
        raise ValueError("forward_laplacian needs a scalar network (out_dim = 1)")
    return out.v[..., 0], out.J[..., 0], out.L[..., 0]
