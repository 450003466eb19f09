"""The adaptive MscaleDNN's training step: find the unresolved waves in the residual, place units.

At each budget fraction in ``model.adapt_at`` the training loop calls :func:`adapt`:

1. the residual r = -Laplace u_theta - f of the current network (a float64 copy; for the
   Ritz loss the same strong residual) is handed to :func:`mscalednn.wavefinder.find_waves`,
   which returns wave vectors k (direction and magnitude) where r has power; at the first
   adaptation :func:`mscalednn.wavefinder.coupled_waves` adds the source's waves in the
   groups of coordinates its Hessians couple (many low waves, more than d, whose Fourier peaks
   overlap: poisson50d's 100; the 2^(q-1) waves of a product of oscillations in q coordinates);
2. waves the source f itself has no power at are dropped: a plane wave of u* is one of
   f = -Laplace u* (weighted by |k|^2), so a peak of r that f lacks is the network's own
   content (at initialisation its random high-scale sin units; in d = 50 these are most of the
   peaks), which its weights can undo without a new unit. The test is |F_f(k)| above
   ``noise_factor`` times the sampling noise rms(f) / sqrt(n) (for the source's coupled waves,
   or the joint least-squares amplitude above ``noise_factor`` standard errors) on fresh points (independent of
   the points the peak was found on, so the maximisation over k cannot fake it);
3. waves already held by a unit (within the peak width, up to sign) are dropped; the rest,
   strongest first, up to ``max_new_waves`` and the free slots, get units;
4. their amplitudes are the least-squares minimiser of the current batch's loss (residual
   form: interior rows |k|^2 [cos, sin], boundary rows sqrt(beta) [cos, sin]) in the new
   amplitudes alone: the loss can only go down at placement.

Every adaptation uses its own generator, seeded from the run seed and the adaptation's index.
The adaptations done are the training state's records (checkpointed with it), so a resumed
run repeats nothing and skips nothing.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .derivatives import value_and_grad
from .forward_laplacian import auto_chunk, forward_laplacian
from .nn.adaptive import AdaptiveMscaleDNN
from .operator import LAPLACE, Operator
from .problem import PoissonProblem
from .wavefinder import (N_REFINE, Waves, amplitude_snr, coupled_waves, find_waves, fit_waves, fourier_power,
                         hessian_points, least_squares, near, wave_basis)


NOISE_FACTOR = 6.0  # a peak counts when its |F| exceeds this many times the sampling noise


@dataclass
class Adaptation:
    """What one adaptation did: at ``step``, ``found`` waves (vectors and powers in the
    residual), ``source_snr`` the source's power at each over its noise level (found waves with
    less than the threshold are not placed), ``placed`` the wave vectors that got units, in the
    slots ``slots``, in ``seconds``."""

    step: int
    budget: tuple[float, float]
    found: Waves
    source_snr: torch.Tensor
    placed: torch.Tensor
    slots: list[int]
    seconds: float
    skipped: str | None = None

    def to_dict(self) -> dict:
        return {"step": self.step, "budget": list(self.budget), "seconds": self.seconds, "found": self.found.k.tolist(),
                "power": self.found.power.tolist(), "noise": self.found.noise,
                "source_snr": self.source_snr.tolist(), "placed": self.placed.tolist(),
                "placed_slots": self.slots, "skipped": self.skipped}


ESTIMATION_SHARE = 0.05  # no estimation starts once the estimations have used this share of the budget


def due(model: torch.nn.Module, t: float, done: list[dict]) -> bool:
    """Whether an adaptation is due at budget fraction t after the adaptations ``done`` (their
    records, each with its ``budget`` = [fraction at start, at end]; plain Python numbers: no
    device synchronisation in the training step). The next one waits for its ``adapt_at``
    fraction and for at least as much training as the last estimation took (where an estimation
    outlasts the gap to the next fraction, the network still trains in between), and none starts
    once the estimations so far have used ``ESTIMATION_SHARE`` of the budget: an estimation's
    cost grows with d (at d = 100 about 20 s, 3% of 10 minutes, against 1% at d = 10), and the
    first, on the untrained residual, is the one that finds most (docs/method.md section 6).
    With a budget in steps the estimation takes none of it, so the steps adapted at are fixed."""
    if not isinstance(model, AdaptiveMscaleDNN) or len(done) >= len(model.adapt_at):
        return False
    if done:
        start, end = done[-1]["budget"]
        if t < end + (end - start) or share_left(done) <= 0:
            return False
    return t >= model.adapt_at[len(done)]


def share_left(done: list[dict]) -> float:
    """The budget fraction the estimations may still use after the adaptations ``done``."""
    return ESTIMATION_SHARE - sum(b - a for a, b in (record["budget"] for record in done))


def residual_function(model: torch.nn.Module, problem: PoissonProblem):
    """x -> L u_theta(x) - f(x) (-Laplace u_theta - f for the plain problem) for a float64 copy of
    ``model`` (differentiable in x), in chunks of points that keep the jets' memory bounded (at
    d = 1000, 16,000 points at once would need 30 GB)."""
    net = copy.deepcopy(model).to("cpu", torch.float64)  # the estimator works on the CPU
    for p in net.parameters():
        p.requires_grad_(False)
    chunk = auto_chunk(net, problem.dim)
    op = problem.operator

    def residual(xc):
        u, grad_u, lap = forward_laplacian(net, xc, need_grad=op.needs_grad)
        return (-lap if op.is_laplace else op.apply(xc, u, grad_u, lap)) - problem.f(xc)

    return lambda x: torch.cat([residual(xc) for xc in x.split(chunk)])


PROBE_POINTS = 256  # the residual is timed on this many points to predict an estimation's cost


def predicted_seconds(fn, problem: PoissonProblem, n_refine: int = N_REFINE) -> float:
    """A lower bound on find_waves' time for the residual ``fn``: its cost on ``PROBE_POINTS``
    points, scaled to the ``n_refine`` values and the 2d gradients at each Hessian point (a
    gradient counted as three evaluations). The exact Laplacian's cost grows with d: at d = 1000
    the estimation alone would take minutes."""
    d = problem.dim
    x = problem.points(PROBE_POINTS, torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.no_grad():
        fn(x)
    probe = time.perf_counter() - start
    return probe * (n_refine + (3 * 2 * d * hessian_points(d) if d > 1 else 0)) / PROBE_POINTS


def source_snr(problem: PoissonProblem, K: torch.Tensor, generator: torch.Generator, n: int = 16000,
               joint: bool = False) -> torch.Tensor:
    """|F_f(k)| / (rms(f) / sqrt(n)) for each row k of K [M, d], f the source (mean removed) on n
    fresh uniform points of the domain (with ``joint``, or where larger the amplitude of k in the
    joint least-squares fit of f by all of K over its standard error, :func:`amplitude_snr`):
    about 1 (Rayleigh) where f has no wave, large where it has.
    For an operator with coefficients the largest of this ratio over f and the coefficients a, c
    and kappa^2: the solution's waves come from the source or from the coefficients (a(x) that
    oscillates makes u ripple at a's wave vectors, whatever f is)."""
    x = problem.points(n, generator)
    with torch.no_grad():
        fields = [problem.f(x).double()]
        op = problem.operator
        if not op.is_laplace:
            a, _, c, kappa2 = op.coefficients(x)
            fields += [v.detach().double() for v, given in ((a, op.a), (c, op.c), (kappa2, op.kappa)) if given is not None]
    ratios = []
    for v in fields:
        v = v - v.mean()
        ratios.append(fourier_power(v, x, K) / (float(v.norm()) / n + 1e-300))
        if joint:  # many waves sharing f's variance (the coupled waves): the joint fit
            ratios.append(amplitude_snr(v, x, K))
    return torch.stack(ratios).amax(dim=0)


def linearised_waves(x: torch.Tensor, K: torch.Tensor, data: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The operator linearised at the network's u, applied to the plane waves [cos(K x), sin(K x)]
    at x [n, 2M] (``data``: the interior data, :meth:`mscalednn.operator.Operator.data`): |k|^2
    times the wave for -Laplace; else L'(cos k.x) = (a |k|^2 + c + kappa^2 cosh u) cos k.x +
    (grad a . k) sin k.x and L'(sin k.x) = (a |k|^2 + c + kappa^2 cosh u) sin k.x - (grad a . k) cos k.x."""
    basis = wave_basis(x, K)
    if data.dim() == 1:
        return basis * (K * K).sum(1).repeat(2)
    a, c, kappa2, grad_a = data[:, 1:2], data[:, 2:3], data[:, 3:4], data[:, 4:]
    return _combined(basis, a * (K * K).sum(1) + c + kappa2 * torch.cosh(u)[:, None], grad_a @ K.T)


def _combined(basis: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """[p cos + q sin, p sin - q cos] for basis = [cos(K x), sin(K x)] [n, 2M] and p, q [n, M]
    (or broadcastable): the rows of a linear map that takes each wave to p times itself plus q
    times its quarter-period shift (the linearised operator, a boundary condition)."""
    cos, sin = basis.chunk(2, dim=1)
    return torch.cat([p * cos + q * sin, p * sin - q * cos], dim=1)


def boundary_rows(net: torch.nn.Module, x: torch.Tensor, K: torch.Tensor, g: torch.Tensor):
    """The boundary residual of ``net`` at x and the waves' rows there: u - g and the waves for
    Dirichlet data (g one column); alpha u + beta du/dn - g and alpha wave + beta d(wave)/dn for
    mixed conditions (g: the columns (g, alpha, beta, a, n), :mod:`mscalednn.conditions`), with
    d cos(k.x)/dn = -(k.n) sin(k.x) and d sin(k.x)/dn = (k.n) cos(k.x)."""
    basis = wave_basis(x, K)
    if g.dim() == 1:
        with torch.no_grad():
            return net(x).squeeze(-1) - g, basis
    u, grad = value_and_grad(net, x, create_graph=False)
    alpha, beta, n = g[:, 1:2], g[:, 2:3], g[:, 4:]
    e = alpha[:, 0] * u.detach() + beta[:, 0] * (grad.detach() * n).sum(1) - g[:, 0]
    return e, _combined(basis, alpha, -beta * (n @ K.T))


def least_squares_amplitudes(model: AdaptiveMscaleDNN, K: torch.Tensor, batch: tuple, beta: float,
                             operator: Operator = LAPLACE) -> torch.Tensor:
    """The amplitudes [M, 2] (raw output units) of new waves K [M, d] that minimise the residual
    loss on ``batch`` = (x_in, x_bd, f, g) with the rest of the network fixed (f: the interior
    data; the operator linearised at the network, :func:`linearised_waves`)."""
    x_in, x_bd, f, g = (t.double() for t in batch)
    K = K.to(x_in.device)
    with torch.no_grad():
        net = copy.deepcopy(model).double()
        u, grad_u, lap = forward_laplacian(net, x_in, need_grad=operator.needs_grad)
        r = operator.residual(f, u, grad_u, lap)
    e, rows = boundary_rows(net, x_bd, K, g)
    s = float(model.output_scale)
    w = math.sqrt(beta)
    A = torch.cat([s * linearised_waves(x_in, K, f, u) / math.sqrt(len(x_in)), w * s * rows / math.sqrt(len(x_bd))])
    b = -torch.cat([r / math.sqrt(len(x_in)), w * e / math.sqrt(len(x_bd))])
    c = least_squares(A, b, 1e-10)
    M = K.shape[0]
    return torch.stack([c[:M], c[M:]], dim=1).cpu()


def adapt(model: AdaptiveMscaleDNN, problem: PoissonProblem, batch: tuple, beta: float, step: int,
          seed: int, index: int, budget: Callable[[float], float] = lambda seconds: 0.0,
          share: float = ESTIMATION_SHARE) -> Adaptation:
    """The adaptation number ``index`` (from 0) of ``model`` (see the module docstring).
    ``budget(seconds)``: the budget fraction used after ``seconds`` more of training time (the
    record keeps the fraction at the start and at the end). An estimation whose predicted time
    (:func:`predicted_seconds`) would take more than ``share`` of the budget is skipped, and the
    record says why."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(1_000_003 * seed + 7919 * index + 17)
    lo, hi = torch.tensor(problem.lo), torch.tensor(problem.hi)
    fn = residual_function(model, problem)
    predicted = predicted_seconds(fn, problem)
    if budget(predicted) - budget(0.0) > share:
        seconds = time.perf_counter() - start
        none = torch.zeros(0, problem.dim, dtype=torch.float64)
        return Adaptation(step, (budget(0.0), budget(seconds)), Waves(none, torch.zeros(0), 0.0), torch.zeros(0),
                          none, [], seconds, skipped=f"the estimation would take at least {predicted:.1f} s, more "
                          f"than the {share:.1%} of the budget left to estimations")
    found = find_waves(fn, lo, hi, generator, noise_factor=NOISE_FACTOR, points=problem.points)
    snr = source_snr(problem, found.k, generator)
    radius = math.pi / float((hi - lo).max())
    if index == 0:  # the source's waves in coupled groups of coordinates, beside the residual's peaks
        coupled = coupled_waves(lambda x: problem.f(x).double(), lo, hi, generator,
                                min(model.max_new_waves, model.waves.free), NOISE_FACTOR, points=problem.points)
        extra = ~near(coupled.k, found.k, radius)
        found = Waves(torch.cat([found.k, coupled.k[extra]]), torch.cat([found.power, coupled.power[extra]]),
                      found.noise)
        snr = torch.cat([snr, source_snr(problem, coupled.k[extra], generator, joint=True)])
    held = model.waves.k.detach().cpu().double()[model.waves.active.cpu()]
    new = found.k[(snr > NOISE_FACTOR) & ~near(found.k, held, radius)][:min(model.max_new_waves, model.waves.free)]
    slots: list[int] = []
    if new.shape[0]:
        amplitudes = least_squares_amplitudes(model, new, batch, beta, problem.operator)
        like = model.waves.k
        slots = model.place_waves(new.to(like), amplitudes.to(like))
    seconds = time.perf_counter() - start
    return Adaptation(step, (budget(0.0), budget(seconds)), found, snr, new, slots, seconds)


def wave_report(model: AdaptiveMscaleDNN, problem: PoissonProblem, adaptations: list[dict],
                n: int = 20000, seed: int = 0) -> list[dict]:
    """One row per placed wave: where it was placed, where training moved it, and the exact
    solution's own wave there. The "exact" waves are the least-squares fit (variable
    projection, :func:`mscalednn.wavefinder.fit_waves`, on n random points, started at the
    units' trained wave vectors) of w = u* - (the network without its wave units): the part of
    u* the waves are there to carry, as plane waves. ``amplitude_exact`` is that fit's amplitude
    sqrt(c^2 + s^2), about 0 where a unit holds no wave of u*. Rows sorted by it."""
    generator = torch.Generator().manual_seed(seed)
    x = problem.points(n, generator)
    with torch.no_grad():
        net = copy.deepcopy(model).to("cpu", torch.float64)
        w = problem.u(x).detach().double() - net.scale_output(net.raw(x)).squeeze(-1)
    placed = {slot: (a["step"], torch.tensor(k, dtype=torch.float64))
              for a in adaptations for slot, k in zip(a["placed_slots"], a["placed"])}
    if not placed:
        return []
    slots = sorted(placed)
    trained = net.waves.k.detach()[slots]
    exact, amplitude = fit_waves(w - w.mean(), x, trained)
    rows = []
    for i, slot in enumerate(slots):
        step, k0 = placed[slot]
        k, true = trained[i], exact[i]
        k0 = k0 if float((k0 - k).norm()) <= float((k0 + k).norm()) else -k0
        rows.append({"slot": slot, "step": step, "k_placed": k0.tolist(), "k_trained": k.tolist(),
                     "k_exact": true.tolist(), "norm_k_exact": float(true.norm()),
                     "error_placed": float((k0 - true).norm() / true.norm()),
                     "error_trained": float((k - true).norm() / true.norm()),
                     "amplitude_exact": float(amplitude[i].norm()),
                     "amplitude_network": float(net.output_scale) * float(net.waves.amplitude.detach()[slot].norm())})
    return sorted(rows, key=lambda r: -r["amplitude_exact"])
