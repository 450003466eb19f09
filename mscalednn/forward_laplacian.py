"""Forward Laplacian (Li et al., arXiv 2307.08214): value, input Jacobian and Laplacian of a
network in ONE forward pass, exactly.

A jet (v, J, L) holds, for every hidden unit, its value v [..., N, w], its gradient with
respect to the input J [..., N, d, w] and its Laplacian L [..., N, w].

    input layer:        v = x,            J = I,              L = 0
    z = W h + b:        v = W v_h + b,    J = W J_h,          L = W L_h
    y = sigma(z):       v = sigma(z),     J = sigma'(z) J_z,  L = sigma'(z) L_z + sigma''(z) |J_z|^2

with |J_z|^2 summed over the d input directions. Backpropagation to the parameters through
these formulas is ordinary autograd. For the compactly supported activations (sReLU, s2ReLU,
phi) sigma'' is the almost-everywhere derivative: exact for s2ReLU and phi, which are C^1; for
sReLU (and ReLU) the delta terms at the kinks are not seen by the strong form.

What keeps it fast (benchmarks/RESULTS.md measures each step):

* the first layer's Jacobian sigma'(z) W is kept factored (:class:`FirstJet`): W is the same
  at every point, so the second layer's Jacobian is ONE matmul of sigma'(z) [N, w] with a
  [w, d * out] matrix, and the first [N, d, w] tensor is never built;
* the Jacobian rows are laid out [..., N, d, w], so a linear layer is one matmul over N * d rows;
* an activation's work on the Jacobian (J_z sigma', sum_i J_z^2) is one autograd node with a
  hand-written backward, and (sigma, sigma', sigma'') is one node whose backward uses the
  closed-form sigma''';
* ``need_grad=False`` (a loss that needs only the Laplacian) skips the last Jacobian.

``directions`` replaces the identity input Jacobian by K directions P [N, K, d] (or :class:`Axes`,
coordinate axes kept as indices); the "Laplacian" then is sum_k p_k^T (Hess u) p_k, which for
Rademacher P / sqrt(K) is Hutchinson's estimate, and for K scaled random axes the sampled one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .nn.activations import S2ReLU, Phi, Sin, SReLU
from .nn.adaptive import AdaptiveMscaleDNN, PlaneWaves
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
    A[..., 1, d, w] with A the first layer's weights, the same at every point, and L = d2 * q
    with q = |A|^2 [..., 1, w]. The next linear layer then needs one matmul of D [N, w] with a
    [w, d * out] matrix instead of building J [N, d, w] and multiplying that, and its Laplacian
    is d2 @ (q^T W): no [N, w] product d2 * q is formed. ``d2 = None`` means d2 = -v (sin units
    and the Fourier pair, whose second derivative is minus their value): the next layer's value
    and Laplacian are then both products of v, v W and v (-q^T W), and no sigma'' tensor exists.
    ``D = None``: no Jacobian wanted."""

    v: torch.Tensor          # [..., N, w]
    D: torch.Tensor | None   # [..., N, w]
    A: torch.Tensor          # [..., d, w]
    d2: torch.Tensor | None  # [..., N, w]
    q: torch.Tensor          # [..., 1, w]

    @property
    def L(self) -> torch.Tensor:
        return (-self.v if self.d2 is None else self.d2) * self.q


class Axes(NamedTuple):
    """Input directions that are scaled coordinate axes, P[n, k] = scale * e_{index[n, k]}, kept
    as indices: projecting a weight matrix on them is a gather of its rows, not a matmul over d
    (:func:`mscalednn.derivatives.coordinates`)."""

    index: torch.Tensor  # [N, K]
    scale: float
    d: int

    def dense(self, dtype: torch.dtype) -> torch.Tensor:
        """The directions as a tensor [N, K, d]."""
        P = torch.zeros(*self.index.shape, self.d, dtype=dtype, device=self.index.device)
        return P.scatter_(2, self.index[..., None], self.scale)


def _project(P: torch.Tensor | Axes, W: torch.Tensor) -> torch.Tensor:
    """P W for directions P [N, K, d] and W [..., d, w]: [..., N, K, w]."""
    if isinstance(P, Axes):
        return P.scale * W[..., P.index, :]
    return P @ (W.unsqueeze(-3) if W.dim() == 3 else W)


def _inside(z: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return ((z > lo) & (z < hi)).to(z.dtype)


def _closed_forms(act: nn.Module, z: torch.Tensor):
    """(sigma, sigma', sigma'', sigma''') at z for a registry activation, in closed form (for the
    piecewise ones, the almost-everywhere derivatives)."""
    if isinstance(act, nn.Tanh):
        t = torch.tanh(z)
        t2 = t * t
        d1 = 1 - t2
        return t, d1, -2 * t * d1, (d1 - 2 * t2).mul_(-2 * d1)
    if isinstance(act, Sin):
        s, c = torch.sin(z), torch.cos(z)
        return s, c, -s, -c
    if isinstance(act, SReLU):
        m = _inside(z, 0.0, 1.0)
        return m * z * (1 - z), m * (1 - 2 * z), -2 * m, torch.zeros_like(z)
    if isinstance(act, S2ReLU):  # S q with S = sin(w z), q = z (1 - z), w = 2 pi, on (0, 1)
        w, m = _TWO_PI, _inside(z, 0.0, 1.0)
        wz = w * z
        S, C = torch.sin(wz).mul_(m), torch.cos(wz).mul_(m)
        q, dq = torch.addcmul(z, z, z, value=-1), (-2 * z).add_(1)
        Sq, Cq, Sdq, Cdq = S * q, C * q, S * dq, C * dq
        return (Sq, torch.add(Sdq, Cq, alpha=w),
                (2 * w * Cdq).add_(Sq, alpha=-w * w).add_(S, alpha=-2),
                (-w**3 * Cq).add_(Sdq, alpha=-3 * w * w).add_(C, alpha=-6 * w))
    if isinstance(act, Phi):
        m = _inside(z, 0.0, 3.0)
        d1 = 2 * (torch.relu(z) - 3 * torch.relu(z - 1) + 3 * torch.relu(z - 2) - torch.relu(z - 3))
        d2 = 2 * ((z > 0).to(z.dtype) - 3 * (z > 1).to(z.dtype) + 3 * (z > 2).to(z.dtype) - (z > 3).to(z.dtype))
        return act(z), m * d1, m * d2, torch.zeros_like(z)
    if isinstance(act, nn.ReLU):
        zero = torch.zeros_like(z)
        return torch.relu(z), (z > 0).to(z.dtype), zero, zero
    if isinstance(act, nn.Sigmoid):
        s = torch.sigmoid(z)
        d1 = s * (1 - s)
        d2 = d1 * (1 - 2 * s)
        return s, d1, d2, d2 * (1 - 2 * s) - 2 * d1 * d1
    if isinstance(act, nn.Softplus) and act.beta == 1 and act.threshold == 20:
        s = torch.sigmoid(z)
        d2 = s * (1 - s)
        return act(z), s, d2, d2 * (1 - 2 * s)
    if isinstance(act, nn.SiLU):
        s = torch.sigmoid(z)
        p, r = s * (1 - s), 1 - 2 * s
        return z * s, s * (1 + z * (1 - s)), p * (2 + z * r), p * (r * (3 + z * r) - 2 * z * p)
    if isinstance(act, nn.GELU) and act.approximate == "none":
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        return z * cdf, cdf + z * pdf, (2 - z * z) * pdf, z * (z * z - 4) * pdf
    if isinstance(act, nn.ELU) and act.alpha == 1.0:
        neg = (z <= 0).to(z.dtype)
        e = neg * torch.exp(torch.clamp(z, max=0.0))
        return act(z), (1 - neg) + e, e, e
    raise NotImplementedError(type(act).__name__)


class _Derivatives(torch.autograd.Function):
    """(sigma, sigma', sigma'') at z, differentiable in z through sigma''' (closed forms: one
    node in the graph instead of the dozens the formulas would make)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, act: nn.Module):
        s, d1, d2, d3 = _closed_forms(act, z)
        ctx.save_for_backward(d1, d2, d3)
        ctx.set_materialize_grads(False)
        return s, d1, d2

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gs, gd1, gd2):
        terms = [g * d for g, d in zip((gs, gd1, gd2), ctx.saved_tensors) if g is not None]
        return (sum(terms) if terms else None), None


class _SinCos(torch.autograd.Function):
    """(sin z, cos z) as one node: its backward reuses both instead of recomputing them."""

    @staticmethod
    def forward(ctx, z: torch.Tensor):
        s, c = torch.sin(z), torch.cos(z)
        ctx.save_for_backward(s, c)
        ctx.set_materialize_grads(False)
        return s, c

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gs, gc):
        s, c = ctx.saved_tensors
        if gs is None:
            return None if gc is None else -gc * s
        return gs * c if gc is None else torch.addcmul(gs * c, gc, s, value=-1)


def activation_derivatives(act: nn.Module, z: torch.Tensor):
    """(sigma(z), sigma'(z), sigma''(z)) for a registry activation, in closed form,
    differentiable once in z."""
    return _Derivatives.apply(z, act)


_KNOWN = (MLP, MscaleDNN, DenseStack, nn.Linear, FourierFeatures, PlaneWaves, nn.Identity, nn.ModuleList,
          nn.ParameterList)


def unsupported_part(model: nn.Module) -> str | None:
    """The first part of ``model`` that :func:`forward_laplacian` does not know (a name for a
    message), or None when it knows them all."""
    if not isinstance(model, (MLP, MscaleDNN)):
        return f"the model class {type(model).__name__}"
    z = torch.zeros(1)
    for name, module in model.named_modules():
        if isinstance(module, _KNOWN):
            continue
        try:
            _closed_forms(module, z)
        except NotImplementedError:
            return f"module '{name}' ({module!r})"
    return None


def supports(model: nn.Module) -> bool:
    """Whether :func:`forward_laplacian` knows every part of ``model``."""
    return unsupported_part(model) is None


def one_pass(model: nn.Module) -> bool:
    """Whether the exact Laplacian of ``model`` costs about one forward pass: a network with ONE
    hidden layer, sigma(x A + b) then a linear read-out (plus plane-wave units), whose Laplacian
    is sigma''(z) |A|^2 read out, and whose gradient is one [N, w] x [w, d] product; no tensor
    carries d tangents through a layer, so the cost does not grow with d beyond x A itself."""
    if not supports(model):
        return False
    if isinstance(model, MLP):
        return not isinstance(model.features, FourierFeatures) and len(model.stack.layers) == 1
    if isinstance(model, MscaleDNN) and model.variant == "first_layer":
        return len(model.stack.layers) == 0
    return isinstance(model, MscaleDNN) and len(model.Ws) == 0


class _ScaleAndSquareNorm(torch.autograd.Function):
    """(J, q) = (J_z * d1, sum_i J_z[i]^2) for J_z [..., N, d, w], d1 [..., N, w]: the two
    operations of an activation on the big Jacobian tensor, with a hand-fused backward (four
    passes over J_z instead of autograd's six; only J_z and d1 saved)."""

    @staticmethod
    def forward(ctx, Jz: torch.Tensor, d1: torch.Tensor, need_J: bool):
        ctx.save_for_backward(Jz, d1)
        ctx.set_materialize_grads(False)
        return (Jz * d1.unsqueeze(-2) if need_J else None), torch.linalg.vecdot(Jz, Jz, dim=-2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gJ: torch.Tensor | None, gq: torch.Tensor | None):
        Jz, d1 = ctx.saved_tensors
        if gJ is None:  # J not computed or unused
            return (None if gq is None else Jz * (2 * gq).unsqueeze(-2)), None, None
        g_Jz = gJ * d1.unsqueeze(-2)
        if gq is not None:
            g_Jz.addcmul_(Jz, (2 * gq).unsqueeze(-2))
        return g_Jz, torch.linalg.vecdot(gJ, Jz, dim=-2), None


def _act(act: nn.Module, z: Jet, need_J: bool = True, fused: bool = True) -> Jet:
    """sigma on a jet; ``need_J=False`` skips the output Jacobian (J = None). ``fused=False``:
    plain torch operations only (no custom autograd nodes), for torch.func transforms."""
    if not fused:
        s, d1, d2, _ = _closed_forms(act, z.v)
        J = z.J * d1.unsqueeze(-2) if need_J else None
        return Jet(s, J, d2 * (z.J * z.J).sum(dim=-2) + d1 * z.L)
    s, d1, d2 = activation_derivatives(act, z.v)
    J, q = _ScaleAndSquareNorm.apply(z.J, d1, need_J)
    return Jet(s, J, torch.addcmul(d2 * q, d1, z.L))


def _pair(z: Jet, scale: float) -> Jet:
    """scale * [cos z, sin z] along the last axis, on a jet."""
    c, s = torch.cos(z.v), torch.sin(z.v)
    q = torch.linalg.vecdot(z.J, z.J, dim=-2)
    return Jet(scale * torch.cat([c, s], -1),
               scale * torch.cat([-s.unsqueeze(-2) * z.J, c.unsqueeze(-2) * z.J], -1),
               scale * torch.cat([-s * z.L - c * q, c * z.L - s * q], -1))


def _first(act: nn.Module | None, x: torch.Tensor, Wt: torch.Tensor, b: torch.Tensor | None,
           scale: float = 1.0, P: torch.Tensor | None = None, fused: bool = True,
           need_J: bool = True) -> FirstJet | Jet:
    """The first layer sigma(x Wt + b) on the input (J_x = I, L_x = 0): J_z = Wt, L_z = 0, so
    J = sigma'(z) Wt stays factored and L = sigma''(z) |Wt|^2. ``act=None`` is the Fourier pair
    scale * [cos z, sin z]. Wt: [..., d, w]. With input directions P [N, K, d] instead of the
    identity, J_z = P Wt at each point (a plain jet of K rows). ``need_J=False``: no later layer
    uses the Jacobian (a one-layer network without grad u), so sin units skip their cosine."""
    if b is not None and x.dim() == 2 and Wt.dim() == 2:
        z = torch.addmm(b, x, Wt)                                   # one pass, not a product and a sum
    else:
        z = x @ Wt if b is None else x @ Wt + b
    if P is not None:
        zj = Jet(z, _project(P, Wt), torch.zeros_like(z))
        return _pair(zj, scale) if act is None else _act(act, zj, fused=fused)
    q = Wt.square().sum(dim=-2, keepdim=True)                      # [..., 1, w]
    if act is None and not fused:
        c, s = torch.cos(z), torch.sin(z)
        J = torch.cat([-s.unsqueeze(-2) * Wt.unsqueeze(-3), c.unsqueeze(-2) * Wt.unsqueeze(-3)], -1)
        return Jet(scale * torch.cat([c, s], -1), scale * J, -scale * torch.cat([c, s], -1) * torch.cat([q, q], -1))
    if act is None:
        s, c = _SinCos.apply(z)
        return FirstJet(scale * torch.cat([c, s], -1), scale * torch.cat([-s, c], -1), torch.cat([Wt, Wt], -1),
                        None, torch.cat([q, q], -1))
    if not fused:  # the full jet: under vmap the factored one's [in, d, out] product becomes per point
        s, d1, d2, _ = _closed_forms(act, z)
        return Jet(s, d1.unsqueeze(-2) * Wt.unsqueeze(-3), d2 * q)
    if isinstance(act, Sin):  # sigma'' = -sigma: the Laplacian is read out of the values
        s, c = _SinCos.apply(z) if need_J else (torch.sin(z), None)
        return FirstJet(s, c, Wt, None, q)
    s, d1, d2 = activation_derivatives(act, z)
    return FirstJet(s, d1, Wt, d2, q)


def _mm(a: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """a @ W; for one output column as a matrix-vector product, whose forward and backward ran
    12-30% faster than the matrix product's on the read-outs measured ([2000, 1000] and
    [20000, 100] by [., 1], 2 cores). (Never two columns: BLAS took 1.4 ms for [2000, 1000] by
    [1000, 2], against 0.15 for each column alone.)"""
    if W.dim() == 2 and W.shape[-1] == 1:
        return (a @ W[:, 0]).unsqueeze(-1)
    return a @ W


def _linear(h: Jet | FirstJet, W: torch.Tensor, b: torch.Tensor | None, need_J: bool = True) -> Jet:
    """z = h W + b with W [..., in, out] (already transposed); ``need_J=False``: J = None."""
    if isinstance(h, FirstJet):
        qW = h.q.transpose(-1, -2) * W                             # [..., in, out]
        v, L = _mm(h.v, W), _mm(h.v, -qW) if h.d2 is None else _mm(h.d2, qW)
    else:
        v, L = _mm(h.v, W), _mm(h.L, W)
    v = v if b is None else v + b
    if not need_J:
        J = None
    elif isinstance(h, FirstJet):
        # J_z[n, i, j] = sum_k D[n, k] A[i, k] W[k, j]: one matmul of D with M[k, (i, j)] = A[i, k] W[k, j]
        d, out = h.A.shape[-2], W.shape[-1]
        M = h.A.transpose(-1, -2).unsqueeze(-1) * W.unsqueeze(-2)   # [..., in, d, out]
        J = (h.D @ M.flatten(-2)).unflatten(-1, (d, out))
    elif h.J is None:
        J = None
    else:
        J = _mm(h.J.flatten(-3, -2), W).unflatten(-2, h.J.shape[-3:-1])
    return Jet(v, J, L)


def _full(h: Jet | FirstJet) -> Jet:
    if isinstance(h, FirstJet):
        return Jet(h.v, h.D.unsqueeze(-2) * h.A.unsqueeze(-3), h.L)
    return h


def _add(a: Jet | FirstJet, b: Jet | FirstJet) -> Jet:
    """The jet of a + b (a residual connection)."""
    a, b = _full(a), _full(b)
    return Jet(a.v + b.v, a.J + b.J, a.L + b.L)


def _dense(act: nn.Module, h: Jet | FirstJet, W: torch.Tensor, b: torch.Tensor, residual: bool,
           need_J: bool = True, fused: bool = True) -> Jet:
    """sigma(h W + b), plus h when ``residual`` and the widths match."""
    if residual and W.shape[-1] == W.shape[-2]:
        return _add(h, _act(act, _linear(h, W, b), fused=fused))
    return _act(act, _linear(h, W, b), need_J, fused)


def _input_jet(x: torch.Tensor, P: torch.Tensor | None = None) -> Jet:
    N, d = x.shape
    J = torch.eye(d, dtype=x.dtype, device=x.device).expand(N, d, d) if P is None else P
    J = J.dense(x.dtype) if isinstance(J, Axes) else J
    return Jet(x, J, torch.zeros_like(x))


def _stack(stack: DenseStack, h: Jet | FirstJet | torch.Tensor, need_grad: bool,
           P: torch.Tensor | None = None, fused: bool = True) -> Jet | FirstJet:
    """The stack's hidden layers on a jet, or on the input x itself (then its first layer is
    :func:`_first`): the jet of the output layer's input."""
    layers = list(stack.layers)
    if isinstance(h, torch.Tensor) and not layers:
        h = _input_jet(h, P)
    elif isinstance(h, torch.Tensor):
        x, first = h, layers.pop(0)
        h = _first(stack.activation, x, first.weight.T, first.bias, P=P, fused=fused,
                   need_J=need_grad or bool(layers) or stack.residual)
        if stack.residual and h.v.shape == x.shape:
            h = _add(_input_jet(x, P), h)
    for i, layer in enumerate(layers):
        h = _dense(stack.activation, h, layer.weight.T, layer.bias, stack.residual, need_grad or i < len(layers) - 1,
                   fused)
    return h


def _hidden(model: nn.Module, x: torch.Tensor, need_grad: bool, P: torch.Tensor | None, fused: bool):
    """The jet of the output layer's input h, and the output layer (W [..., in, out], b): the
    network's output before the output scaling is h W + b, summed over subnetworks when h has a
    leading subnetwork axis (MscaleDNN ``subnets``)."""
    if isinstance(model, MLP):
        h = x
        if isinstance(model.features, FourierFeatures):
            h = _first(None, x, _TWO_PI * model.features.B.T, None, P=P, fused=fused)
        return _stack(model.stack, h, need_grad, P, fused), model.stack.out.weight.T, model.stack.out.bias
    if isinstance(model, MscaleDNN) and model.variant == "first_layer":
        A, b = model.first_affine()
        h = _first(None if model.fourier else model.first_activation, x, A, b, 0.5, P, fused,
                   need_grad or len(model.stack.layers) > 0)
        return _stack(model.stack, h, need_grad, fused=fused), model.stack.out.weight.T, model.stack.out.bias
    if isinstance(model, MscaleDNN):
        Wt = (model.W0 * model.K).transpose(1, 2)          # [n, d, w]
        b = model.K * model.b0 if model.scale_bias else model.b0
        h = _first(None if model.fourier else model.first_activation, x, Wt, b, 0.5, P, fused,
                   need_grad or len(model.Ws) > 0)  # v [n, N, w]
        for i, (W, bb) in enumerate(zip(model.Ws, model.bs)):
            h = _dense(model.activation, h, W, bb, model.residual, need_grad or i < len(model.Ws) - 1, fused)
        return h, model.W_out, model.b_out
    raise NotImplementedError(type(model).__name__)


def _waves(waves: PlaneWaves, x: torch.Tensor, need_grad: bool, P: torch.Tensor | None) -> Jet:
    """The jet of sum_s c_s cos(k_s.x) + s_s sin(k_s.x) (one output): grad = sum_s a_s(x) k_s with
    a_s = s_s cos - c_s sin, Laplacian = -sum_s |k_s|^2 (c_s cos + s_s sin); with directions P,
    sum_p (p.k_s)^2 in place of |k_s|^2."""
    K, c = waves.live()                                           # [S, d], [S, 2]: placed slots
    z = x @ K.T
    cos, sin = torch.cos(z), torch.sin(z)
    value = cos * c[:, 0] + sin * c[:, 1]                         # [N, S]
    J = (sin * -c[:, 0] + cos * c[:, 1]) @ K if need_grad else None
    q = (K * K).sum(-1) if P is None else _project(P, K.T).square().sum(-2)  # [S] or [N, S]
    return Jet(value.sum(-1, keepdim=True), None if J is None else J.unsqueeze(-1),
               -(value * q).sum(-1, keepdim=True))


def forward_laplacian(model: nn.Module, x: torch.Tensor, need_grad: bool = True,
                      directions: torch.Tensor | None = None, fused: bool = True):
    """u [N], grad u [N, d] and Laplace u [N] of a scalar network in one forward pass.

    ``need_grad=False`` returns None for grad u and saves the last layer's Jacobian work (for a
    loss that uses only the Laplacian). ``directions`` P [N, K, d] replaces the identity as the
    input Jacobian: the third output is then sum_k p_k^T (Hess u) p_k at each point (the
    Hutchinson estimate for random P) and grad u is None. ``fused=False`` builds the same
    values from plain torch operations only, without the two hand-written autograd nodes: slower,
    but usable under ``torch.func`` transforms (vmap, grad, jvp), e.g. for per-point parameter
    Jacobians (:mod:`mscalednn.gauss_newton`).
    """
    P = directions
    need_grad = need_grad and P is None
    h, W, b = _hidden(model, x, need_grad, P, fused)
    out = _linear(h, W, None if h.v.dim() == 3 else b, need_grad)
    if h.v.dim() == 3:  # subnetworks: the sum of their outputs, one bias
        out = Jet(out.v.sum(0) + b, None if out.J is None else out.J.sum(0), out.L.sum(0))
    if out.v.shape[-1] != 1:
        raise ValueError("forward_laplacian needs a scalar network (out_dim = 1)")
    if isinstance(model, AdaptiveMscaleDNN):
        w = _waves(model.waves, x, need_grad, P)
        out = Jet(out.v + w.v, None if out.J is None else out.J + w.J, out.L + w.L)
    c, s = model.output_shift, model.output_scale  # u = c + s * y
    return c + s * out.v[..., 0], (s * out.J[..., 0] if need_grad else None), s * out.L[..., 0]


def auto_chunk(model: torch.nn.Module, dim: int, budget: int = 2**23) -> int:
    """Points per backward pass so that the largest Jacobian tensor of a layer, [points, dim,
    units], stays under ``budget`` elements (32 MiB in float32), but never under 256 points.
    ``units`` counts every copy a weight is batched over: a weight [n, a, b] of n subnetworks
    gives a Jacobian [n, points, dim, max(a, b)]."""
    units = max((math.prod(p.shape[:-2]) * max(p.shape[-2:]) for p in model.parameters() if p.dim() >= 2),
                default=1)
    return max(256, budget // (dim * units))
