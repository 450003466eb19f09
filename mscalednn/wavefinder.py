"""Finding the plane waves a function is made of, from samples, in any dimension.

The adaptive MscaleDNN (:mod:`mscalednn.nn.adaptive`) asks, during training, where the part of
the solution it has not resolved lives in frequency space. The signal is the PDE residual
r = -Laplace u_theta - f: for an unresolved plane wave A sin(k.x + phi) of the error it holds
|k|^2 A sin(k.x + phi), so it weights what is missing by |k|^2 and is available at every point.
A grid DFT is out of reach for d > 3; :func:`find_waves` finds the wave vectors k of a function
r in four steps (docs/method.md section 6):

1. **directions**: the coordinate axes, and Jennrich's simultaneous diagonalisation of the
   Hessians of r at random points. For r = sum_m A_m sin(k_m.x + phi_m),
   Hess r(x) = -sum_m A_m sin(k_m.x + phi_m) k_m k_m^T: every Hessian is a combination of the
   same rank-one matrices k_m k_m^T, so for two random combinations M1, M2 of Hessians the
   eigenvectors of M1 pinv(M2) are the directions k_m / |k_m| (exactly, when the k_m are
   linearly independent, so at most d of them; the largest |A_m| |k_m|^2 dominate otherwise).
   Hessians come from central differences of autograd gradients (float64).
2. **magnitudes**: along each direction v, the t > 0 that maximises the non-uniform Fourier
   transform |F(t v)|, F(k) = mean_j r(x_j) exp(-i k.x_j) (mean of r removed), on a grid in t.
3. **refinement**: gradient ascent of |F(k)| over all candidates at once (k free in R^d, so a
   direction off by a few degrees is corrected), then candidates equal up to sign merged, and
   only those whose |F| clearly stands above the sampling noise rms(r) / sqrt(n) kept;
4. **matching pursuit**: the waves found are fitted (least squares) and removed from r and from
   the Hessians, and steps 1-3 run again on what is left.

:func:`plane_waves` finds what these steps miss when many low waves lie in coordinate planes
(more than d of them, peaks overlapping): candidates on the diagonals of the planes the
Hessians couple, kept by a joint least-squares test.

Where it fails (docs/method.md section 6): more than d significant directions that no
matching-pursuit round separates (e.g. the 16 diagonals of a product of sines in 5D) leave step
1 without the right directions; an oscillation that is not a plane wave (compactly supported,
or with a varying amplitude) has no sharp peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Waves:
    """Wave vectors found, strongest first: ``k`` [M, d] (sign arbitrary), ``power`` [M] = |F(k)|,
    and ``noise``: the sampling noise level rms(r) / sqrt(n) the powers are compared with."""

    k: torch.Tensor
    power: torch.Tensor
    noise: float

    def __len__(self) -> int:
        return self.k.shape[0]


def box_points(lo, hi, n: int, generator: torch.Generator) -> torch.Tensor:
    """n uniform points [n, d] of the box [lo, hi] (sequences or tensors), float64."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    return lo + (hi - lo) * torch.rand(n, lo.numel(), dtype=torch.float64, generator=generator)


def fourier_power(r: torch.Tensor, x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """|F(k)| = |mean_j r_j exp(-i k.x_j)| for each row k of K [M, d]; r [n], x [n, d]."""
    phase = x @ K.T
    return torch.hypot((r[:, None] * torch.cos(phase)).mean(0), (r[:, None] * torch.sin(phase)).mean(0))


def hessians(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, h: float) -> torch.Tensor:
    """Hess fn at each row of x [m, d] by central differences of autograd gradients: [m, d, d]."""
    m, d = x.shape
    step = h * torch.eye(d, dtype=x.dtype, device=x.device)
    xp = torch.cat([x[:, None, :] + step, x[:, None, :] - step], dim=1).reshape(-1, d).requires_grad_(True)
    (g,) = torch.autograd.grad(fn(xp).sum(), xp)
    g = g.reshape(m, 2, d, d)
    H = (g[:, 0] - g[:, 1]) / (2 * h)          # H[:, i, :] = d grad / dx_i
    return 0.5 * (H + H.transpose(1, 2))


def jennrich_directions(H: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Unit directions [d, d] (rows) from Jennrich's simultaneous diagonalisation of the
    matrices H [m, d, d]: eigenvectors of M1 pinv(M2) for two random combinations."""
    w = torch.randn(2, H.shape[0], dtype=H.dtype, generator=generator)
    M1, M2 = torch.einsum("m,mij->ij", w[0], H), torch.einsum("m,mij->ij", w[1], H)
    _, V = torch.linalg.eig(M1 @ torch.linalg.pinv(M2))
    V = V.real.T
    return V / V.norm(dim=1, keepdim=True).clamp_min(1e-300)


def plane_directions(H: torch.Tensor, rel_threshold: float, max_planes: int) -> torch.Tensor:
    """Unit directions (e_i + e_j) / sqrt 2 and (e_i - e_j) / sqrt 2 [2P, d] in the P coordinate
    planes (i, j) where the Hessians H [m, d, d] couple x_i and x_j most: the normalised coupling
    c_ij = mean(H_ij^2) / sqrt(mean(H_ii^2) mean(H_jj^2)) above ``rel_threshold`` times the
    largest, at most ``max_planes`` of them, strongest first.

    A wave k adds to H_ij exactly when k_i k_j != 0; a sum of one-dimensional terms couples no
    plane. Jennrich's diagonalisation separates at most d directions; a function made of waves
    in many coordinate planes (sin(pi x_i) cos(pi x_{i+1}) for every i: 2d waves) has more, and
    these candidates reach them."""
    d = H.shape[-1]
    C = H.square().mean(0)
    diag = C.diagonal().clamp_min(1e-300)
    i, j = torch.triu_indices(d, d, 1)
    coupling = (C / torch.sqrt(diag[:, None] * diag[None, :]))[i, j]
    if coupling.numel() == 0 or not float(coupling.max()) > 0:
        return torch.zeros(0, d, dtype=H.dtype)
    order = coupling.argsort(descending=True, stable=True)[:max_planes]
    order = order[coupling[order] > rel_threshold * coupling.max()]
    rows = torch.arange(order.numel())
    V = torch.zeros(2 * order.numel(), d, dtype=H.dtype)
    V[2 * rows, i[order]] = V[2 * rows, j[order]] = V[2 * rows + 1, i[order]] = 1.0
    V[2 * rows + 1, j[order]] = -1.0
    return V / math.sqrt(2.0)


def amplitude_snr(r: torch.Tensor, x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """For each wave k_m (rows of K [M, d]): the amplitude of its joint least-squares fit
    r ~ wave_basis(x, K) c over its standard error (sigma^2 (A^T A)^-1, sigma the rms misfit),
    [M]. Where many waves share the variance of r, no single |F(k)| stands clear of the
    sampling noise, but the joint fit still tells which waves r has: about 1 where it has none."""
    M = K.shape[0]
    if M == 0:
        return torch.zeros(0, dtype=r.dtype)
    A = wave_basis(x, K)
    AtA = A.T @ A
    AtA.diagonal().add_(1e-10 * float(AtA.diagonal().mean()) + 1e-300)
    c = torch.linalg.solve(AtA, A.T @ r)
    sigma2 = float((r - A @ c).square().sum()) / max(x.shape[0] - 2 * M, 1)
    var = torch.linalg.inv(AtA).diagonal() * sigma2
    return torch.hypot(c[:M], c[M:]) / torch.sqrt(0.5 * (var[:M] + var[M:])).clamp_min(1e-300)


def best_magnitudes(r: torch.Tensor, x: torch.Tensor, V: torch.Tensor, k_max: float,
                    chunk: int = 32) -> torch.Tensor:
    """For each unit direction v (rows of V), the t in (0, k_max] maximising |F(t v)|, on a
    grid four times finer than the peak width 2 pi / (spread of v.x).

    |F(t v)| is a one-dimensional non-uniform Fourier transform of r over the projections
    p_j = v.x_j; it is computed by an FFT after spreading r onto a regular grid in p (linear
    interpolation, B cells over the spread: at t = k_max the cell width is pi / (8 k_max) and
    the transform is damped by at most sinc^2(pi / 16) = 0.987), so its cost is O(n + B log B)
    per direction instead of O(n B)."""
    p = x @ V.T                                                   # [n, M]
    lo = p.min(0).values
    span = (p.max(0).values - lo).clamp_min(1e-12)
    cells = math.ceil(8 * k_max * float(span.max()) / math.pi) + 1
    size = 4 * (cells - 1)                                        # zero padding: dt = 0.5 pi / span
    out = torch.empty(V.shape[0], dtype=x.dtype)
    for j0 in range(0, V.shape[0], chunk):
        pc = (p[:, j0:j0 + chunk] - lo[j0:j0 + chunk]) / span[j0:j0 + chunk] * (cells - 1)   # in cells
        m = pc.floor().clamp(0, cells - 2)
        frac = pc - m
        m = m.long().T + torch.arange(m.shape[1])[:, None] * cells                             # [M, n] flat
        h = torch.zeros(m.shape[0] * cells, dtype=x.dtype)
        h.index_add_(0, m.flatten(), (r[None, :] * (1 - frac.T)).flatten())
        h.index_add_(0, (m + 1).flatten(), (r[None, :] * frac.T).flatten())
        power = torch.fft.rfft(h.reshape(-1, cells), n=size, dim=1).abs()                    # [M, size/2+1]
        dt = 2 * math.pi * (cells - 1) / (size * span[j0:j0 + chunk])                          # [M]
        q_max = (k_max / dt).floor().long().clamp(1, size // 2)
        q = torch.arange(power.shape[1])
        power[(q[None, :] < 1) | (q[None, :] > q_max[:, None])] = -1.0
        out[j0:j0 + chunk] = power.argmax(1) * dt
    return out


def refine(r: torch.Tensor, x: torch.Tensor, K: torch.Tensor, steps: int, lr: float,
           decay: float = 1.0) -> torch.Tensor:
    """Gradient ascent (Adam) of sum_m |F(k_m)| over the rows of K (each row independently),
    the learning rate falling geometrically from ``lr`` to ``lr / decay``."""
    K = K.clone().requires_grad_(True)
    opt = torch.optim.Adam([K], lr=lr)
    for i in range(steps):
        opt.param_groups[0]["lr"] = lr * decay ** (-i / max(steps - 1, 1))
        opt.zero_grad()
        (-fourier_power(r, x, K).sum()).backward()
        opt.step()
    return K.detach()


def distance(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """|a - b| up to sign (k and -k are the same real wave) for every row a of A [m, d] and b of
    B [n, d]: [m, n]."""
    return torch.minimum(torch.cdist(A, B), torch.cdist(A, -B))


def near(A: torch.Tensor, B: torch.Tensor, radius: float) -> torch.Tensor:
    """For each row of A, whether some row of B lies within ``radius`` of it up to sign, [m]."""
    if A.shape[0] == 0 or B.shape[0] == 0:
        return torch.zeros(A.shape[0], dtype=torch.bool)
    return distance(A, B).min(dim=1).values <= radius


def merge(K: torch.Tensor, power: torch.Tensor, radius: float) -> torch.Tensor:
    """Indices of K's rows, strongest first, dropping any row within ``radius`` of a stronger one
    up to sign."""
    close = distance(K, K) <= radius
    keep: list[int] = []
    for i in power.argsort(descending=True).tolist():
        if not any(bool(close[i, j]) for j in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def wave_basis(x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """[cos(K x), sin(K x)]: the plane waves with wave vectors K [M, d] at x [n, d], [n, 2M]."""
    phase = x @ K.T
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


def least_squares(A: torch.Tensor, b: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_c |A c - b|^2 by the normal equations, with ``ridge`` times the mean of diag(A^T A)
    added to its diagonal (nearly equal wave vectors give nearly equal columns)."""
    AtA = A.T @ A
    AtA.diagonal().add_(ridge * float(AtA.diagonal().mean().detach()) + 1e-300)
    return torch.linalg.solve(AtA, A.T @ b)


def fit_amplitudes(r: torch.Tensor, x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Least-squares amplitudes c [2M] of r ~ wave_basis(x, K) c."""
    return least_squares(wave_basis(x, K), r, 1e-8)


def fit_waves(r: torch.Tensor, x: torch.Tensor, K: torch.Tensor, iterations: int = 50,
              free: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nonlinear least squares r ~ wave_basis(x, K) c over the wave vectors K [M, d] (starting
    from the given ones) and the amplitudes c (variable projection: c is the linear
    least-squares solution for each K), by L-BFGS. Every wave at once, so no wave's side lobes
    bias another's peak. ``free`` [M, d] (bool): the components that move (default all; the
    others keep their values). Returns (K, c) with c [M, 2] (cos, sin)."""
    start = K.detach().clone()
    P = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([P], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)

    def vectors():
        return P if free is None else torch.where(free, P, start)

    def misfit():
        opt.zero_grad()
        K = vectors()
        loss = (r - wave_basis(x, K) @ fit_amplitudes(r, x, K)).square().mean()
        loss.backward()
        return loss

    opt.step(misfit)
    K = vectors().detach()
    c = fit_amplitudes(r, x, K)
    return K, torch.stack([c[:K.shape[0]], c[K.shape[0]:]], dim=1)


def wave_hessians(x: torch.Tensor, K: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Hessians [m, d, d] at x [m, d] of the plane-wave sum wave_basis(x, K) c."""
    M = K.shape[0]
    B = wave_basis(x, K)
    coef = -(B[:, :M] * c[:M] + B[:, M:] * c[M:])                 # [m, M]
    return torch.einsum("nm,mi,mj->nij", coef, K, K)


N_REFINE = 16000  # points find_waves evaluates the function at (and refines the waves on)
FIT_POINTS, FIT_ITERATIONS = 4000, 20  # plane_waves' in-plane joint fit


def hessian_points(d: int) -> int:
    """The default number of points find_waves takes Hessians at: 2000 / d within [20, 200] (each
    costs 2d gradients of the function)."""
    return min(200, max(20, round(2000 / d)))


def find_waves(fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
               generator: torch.Generator, n_points: int = 4000, n_refine: int = N_REFINE, n_hessian: int | None = None,
               draws: int = 4, rounds: int = 4, k_max: float = 200.0, max_waves: int = 32,
               noise_factor: float = 6.0, rel_threshold: float = 0.05, refine_steps: int = 150,
               max_candidates: int = 64,
               points: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> Waves:
    """The plane waves of ``fn`` (a function of x [n, d] -> [n], differentiable in x) on the box
    [lo, hi]: wave vectors with |k| <= about ``k_max``, strongest first, at most ``max_waves``,
    each with |F(k)| above ``noise_factor`` times the sampling noise and above
    ``rel_threshold`` times the strongest found in the same round.

    In ``rounds`` rounds of matching pursuit: candidates from the axes and ``draws`` Jennrich
    diagonalisations of Hessians at ``n_hessian`` points (default 2000 / d within [20, 200]: the
    Hessians cost 2d gradients each), magnitudes on ``n_points`` points, and refinement of the
    ``max_candidates`` strongest (the cost of a round stays bounded as d grows); the waves
    found so far are fitted (least squares) and removed from r and from the Hessians before the
    next round, so that directions hidden by stronger or linearly dependent ones surface. A last
    refinement of all waves found on ``n_refine`` points sets their precision. Deterministic for a generator state.
    ``points(n, generator)``: where fn is sampled (default: uniform in the box; a domain's own
    points where it is not the box, e.g. :meth:`mscalednn.PoissonProblem.points`)."""
    lo, hi = lo.double(), hi.double()
    d = lo.numel()
    points = points or (lambda n, g: box_points(lo, hi, n, g))
    x = points(n_refine, generator)
    with torch.no_grad():
        r = fn(x).double()
    r = r - r.mean()
    noise = float(r.norm()) / math.sqrt(n_refine * n_points)  # rms(r) / sqrt(n_points)
    size = float((hi - lo).max())
    n_hessian = n_hessian or hessian_points(d)
    xh = points(n_hessian, generator) if d > 1 else None
    H = hessians(fn, xh, 1e-3 * size) if d > 1 else None
    K = torch.zeros(0, d, dtype=torch.float64)
    for _ in range(rounds):
        c = fit_amplitudes(r, x, K)
        rest = r - wave_basis(x, K) @ c
        directions = [torch.eye(d, dtype=torch.float64)]
        if d > 1:
            Hr = H - wave_hessians(xh, K, c)
            directions += [jennrich_directions(Hr, generator) for _ in range(draws)]
        V = torch.cat(directions)
        xs, rs = x[:n_points], rest[:n_points]
        C = V * best_magnitudes(rs, xs, V, k_max)[:, None]
        C = C[fourier_power(rs, xs, C).argsort(descending=True)[:max_candidates]]
        C = refine(rs, xs, C, refine_steps, lr=0.05 * math.pi / size)
        power = fourier_power(rs, xs, C)
        keep = merge(C, power, radius=math.pi / size)
        C, power = C[keep], power[keep]
        new = (power > noise_factor * noise) & (power > rel_threshold * power.max())
        new &= ~near(C, K, math.pi / size)
        if not bool(new.any()) or K.shape[0] >= max_waves:
            break
        K = torch.cat([K, C[new]])[:max_waves]
    K = refine(r, x, K, refine_steps, lr=0.02 * math.pi / size)  # all points: the final precision
    power = fourier_power(r, x, K)
    order = merge(K, power, radius=math.pi / size)  # two candidates may have climbed the same peak
    return Waves(K[order], power[order], noise)


def plane_waves(fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                generator: torch.Generator, known: torch.Tensor, max_waves: int, noise_factor: float = 6.0,
                rel_threshold: float = 0.05, k_max: float = 200.0, n_points: int = N_REFINE,
                n_hessian: int | None = None, turn: bool = True,
                points: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> Waves:
    """The waves of ``fn`` in coupled coordinate planes that :func:`find_waves` misses, beside
    the ``known`` wave vectors [M, d]: candidates along (e_i +- e_j) / sqrt 2 in the planes
    where fn's Hessians couple x_i and x_j (:func:`plane_directions`, Hessians of what the
    known waves leave), each at its own best magnitude and at the other diagonal's (a product
    sin(a x_i) cos(b x_j) is two waves of one length, (a, b) and (a, -b), and on a box that
    holds one period the other terms can hide one diagonal's peak), kept where its amplitude in the joint
    least-squares fit (with the known waves) stands ``noise_factor`` standard errors clear
    (:func:`amplitude_snr`). With ``turn``, those kept are then turned within their planes: a joint nonlinear
    least-squares fit (:func:`fit_waves`) of their two in-plane components only, so that a wave
    (a, b) with a != b, off the diagonals, is met (a fit of all d components, tried, overfits at
    d = 100: 177 waves of 100 components each on 8,000 points); the joint test is repeated on
    the turned waves. At most ``max_waves``, strongest first.

    Why a second finder: with many waves in a box that holds few of their periods (2d waves of
    |k| = pi sqrt 2 at d = 50) the Fourier peaks overlap, and each wave holds too little of fn
    for its |F(k)| to clear the sampling noise alone; the joint fit still separates them."""
    lo, hi = lo.double(), hi.double()
    d = lo.numel()
    none = Waves(torch.zeros(0, d, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), 0.0)
    if d < 2 or max_waves < 1:
        return none
    points = points or (lambda n, g: box_points(lo, hi, n, g))
    x = points(n_points, generator)
    with torch.no_grad():
        r = fn(x).double()
    r = r - r.mean()
    xh = points(n_hessian or hessian_points(d), generator)
    K = known.double()
    c = fit_amplitudes(r, x, K)
    H = hessians(fn, xh, 1e-3 * float((hi - lo).max())) - wave_hessians(xh, K, c)
    radius = math.pi / float((hi - lo).max())
    rest = r - wave_basis(x, K) @ c
    V = plane_directions(H, rel_threshold, max_planes=min(2 * d, max_waves))
    if V.shape[0] == 0:  # no plane coupled: a sum of one-dimensional terms
        return none
    t = best_magnitudes(rest, x, V, k_max)
    partner = t.view(-1, 2).flip(1).reshape(-1)  # the other diagonal's magnitude in the same plane
    C = torch.cat([V * t[:, None], V * partner[:, None]])
    C = C[merge(C, torch.cat([torch.ones_like(t), torch.zeros_like(t)]), radius).sort().values]
    C = C[~near(C, K, radius)]
    if C.shape[0] == 0:
        return none

    def strongest(C: torch.Tensor) -> torch.Tensor:
        """C's rows whose joint amplitude (beside the known waves) is clear of the noise, at
        most max_waves, strongest first."""
        snr = amplitude_snr(r, x, torch.cat([K, C]))[K.shape[0]:]
        order = snr.argsort(descending=True, stable=True)
        return C[order[snr[order] > noise_factor][:max_waves]]

    C = strongest(C)
    if turn and C.shape[0]:
        # Turn them within their planes: a joint fit of every kept wave's two in-plane components
        # (the known waves held), so that waves off the diagonals, (a, b) with a != b, are met.
        n_fit = min(n_points, FIT_POINTS)
        fitted, c = fit_waves(rest[:n_fit], x[:n_fit], C, iterations=FIT_ITERATIONS, free=C != 0)
        C = strongest(fitted[merge(fitted, c.norm(dim=1), radius).sort().values])  # two may meet on one wave
    return Waves(C, fourier_power(r, x, C), float(r.norm()) / n_points)

