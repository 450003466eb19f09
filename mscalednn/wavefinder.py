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

:func:`coupled_waves` finds what these steps miss where the waves are more than d, or their
Fourier peaks overlap: many low waves in coordinate planes (sin(pi x_i) cos(pi x_{i+1}) for every
i), or a product of oscillations across q coordinates (2^(q-1) waves along directions with q
nonzero components). The Hessians show which coordinates are coupled, lines along each such
coordinate give its frequencies, and every sign pattern of them is a candidate, pruned by a joint
least-squares fit.

Where it fails (docs/method.md section 6): an oscillation that is not a sum of plane waves and
products (compactly supported, or with a varying amplitude) has no sharp peak; a product over
more than ``MAX_GROUP`` coordinates is too many waves to place.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import networkx
import torch

MAX_GROUP = 8  # coupled_groups: cliques of more coordinates give their pairs
LINES = 16  # line_frequencies: lines per coordinate
SELECT_FLOOR = 1e-3  # prune_waves: a misfit below this share of the rms is good enough


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


def amplitude_snr(r: torch.Tensor, x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """For each wave k_m (rows of K [M, d]): the amplitude of its joint least-squares fit
    r ~ constant + wave_basis(x, K) c over its standard error (sigma^2 (A^T A)^-1, sigma the rms
    misfit), [M]. Where many waves share the variance of r, no single |F(k)| stands clear of the
    sampling noise, but the joint fit still tells which waves r has: about 1 where it has none.
    The constant matters on a box that holds few periods: there the waves are not orthogonal to
    it, and r's mean, removed, would otherwise be fitted by them."""
    M = K.shape[0]
    if M == 0:
        return torch.zeros(0, dtype=r.dtype)
    A = torch.cat([wave_basis(x, K), torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    AtA = A.T @ A
    AtA.diagonal().add_(1e-10 * float(AtA.diagonal().mean()) + 1e-300)
    c = torch.linalg.solve(AtA, A.T @ r)
    sigma2 = float((r - A @ c).square().sum()) / max(x.shape[0] - 2 * M - 1, 1)
    var = torch.linalg.inv(AtA).diagonal() * sigma2
    return torch.hypot(c[:M], c[M:2 * M]) / torch.sqrt(0.5 * (var[:M] + var[M:2 * M])).clamp_min(1e-300)


def coupled_groups(H: torch.Tensor, rel_threshold: float, max_pairs: int,
                   max_size: int = MAX_GROUP) -> list[tuple[int, ...]]:
    """The groups of coordinates that the Hessians H [m, d, d] show coupled: the maximal cliques
    of the graph whose edges are the coordinate pairs (i, j) with normalised coupling
    c_ij = mean(H_ij^2) / sqrt(mean(H_ii^2) mean(H_jj^2)) above ``rel_threshold`` times the
    largest. A clique of more than ``max_size`` coordinates (its sign patterns would be too many
    waves) gives its pairs instead; of the pairs at most ``max_pairs``, the most coupled.
    Sorted: groups of three or more first, then pairs, each in coordinate order.

    A wave k adds to H_ij exactly when k_i k_j != 0, so a sum of one-dimensional terms couples no
    pair, sin(pi x_i) cos(pi x_{i+1}) couples the pair (i, i+1), and a product of oscillations
    in q coordinates couples all q(q-1)/2 pairs among them: a clique of q."""
    d = H.shape[-1]
    C = H.square().mean(0)
    root = C.diagonal().sqrt()
    i, j = torch.triu_indices(d, d, 1)
    coupling = (C / (root[:, None] * root[None, :]).clamp_min(1e-300))[i, j]  # 0 where fn ignores x_i
    if coupling.numel() == 0 or not float(coupling.max()) > 0:
        return []
    strength = {(int(i[e]), int(j[e])): float(coupling[e]) for e in
                (coupling > rel_threshold * coupling.max()).nonzero().flatten().tolist()}
    graph = networkx.Graph(list(strength))
    large, pairs = set(), set()
    for clique in networkx.find_cliques(graph):
        clique = tuple(sorted(clique))
        if 3 <= len(clique) <= max_size:
            large.add(clique)
        else:
            pairs.update(itertools.combinations(clique, 2))
    pairs = sorted(pairs, key=lambda p: (-strength[p], p))[:max_pairs]
    return sorted(large) + sorted(pairs)


def line_frequencies(fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                     coords: list[int], generator: torch.Generator, lines: int = LINES, k_max: float = 200.0,
                     top: int = 2, rel_gain: float = 0.05) -> dict[int, list[float]]:
    """For each coordinate i in ``coords``, the frequencies |k_i| fn oscillates at along x_i, at
    most ``top``, in increasing order: fn on ``lines`` random lines parallel to the x_i axis across
    the box (2 k_max / pi + 1 points each), fitted by least squares with a constant and sinusoids
    [cos(w s), sin(w s)] of shared frequencies w and each line's own amplitudes. A frequency
    is added greedily (the w that explains most beside those found, on a grid four times finer
    than pi / length, then each searched again with the others held, then all polished jointly),
    and kept where it adds at least ``rel_gain`` times what the first one explained, or half of
    what the others leave (above round-off: fn is evaluated exactly, so two frequencies a line
    cannot tell apart by eye, 2 pi and 1.86 pi, still fit it to 1e-15 together and 5e-4 apart).
    Frequencies within a quarter grid step of one found are not searched (their columns would be
    all but equal). :func:`group_waves` pairs the high frequencies of a group's coordinates
    first, then the low ones (a product of a smooth and a fast factor in every coordinate).

    A plane wave sin(k.x + phi) on a line along x_i is sin(k_i s + const): every wave with the
    same |k_i| gives the same frequency, whatever its other components; so a product of
    oscillations across q coordinates, 2^(q-1) waves, shows its q frequencies one coordinate at a
    time (a Fourier peak along the axis is damped by the other factors' means instead)."""
    lo, hi = lo.double(), hi.double()
    d = lo.numel()
    out: dict[int, list[float]] = {}
    for i in coords:
        length = float(hi[i] - lo[i])
        n = math.ceil(2 * k_max * length / math.pi) + 1
        s = (torch.arange(n, dtype=torch.float64) + 0.5) * length / n
        x = (lo + (hi - lo) * torch.rand(lines, 1, d, dtype=torch.float64, generator=generator)).repeat(1, n, 1)
        x[:, :, i] = lo[i] + s
        with torch.no_grad():
            v = fn(x.reshape(-1, d)).double().reshape(lines, n)
        step = math.pi / (4 * length)
        apart = step / 4  # nearer frequencies are not searched
        grid = torch.arange(1, math.floor(k_max / step) + 1, dtype=torch.float64) * step

        def search(others: list[float]) -> tuple[float, float]:
            """The grid frequency (apart from ``others``) whose fit with them explains most, and that energy."""
            allowed = grid[torch.stack([(grid - w).abs() > apart for w in others]).all(0)] if others else grid
            W = torch.cat([torch.tensor(others, dtype=torch.float64).expand(allowed.numel(), -1), allowed[:, None]], 1)
            energy = line_fit_energy(v, s, W)
            return float(allowed[int(energy.argmax())]), float(energy.max())

        found: list[float] = []
        explained = set_energy(v, s, [])  # by the constants alone
        total = float(v.square().sum())
        first = 0.0
        for _ in range(top):
            trial = found + [search(found)[0]]
            current = set_energy(v, s, trial)
            for _sweep in range(2 if len(trial) > 1 else 0):  # each searched again with the others held
                for m in range(len(trial)):
                    w, energy = search(trial[:m] + trial[m + 1:])
                    if energy > current:
                        trial[m], current = w, energy
            trial = polish_frequencies(v, s, trial, apart)
            energy = set_energy(v, s, trial)
            gain, left = energy - explained, total - explained
            if found and not (gain > 1e-6 * first and (gain >= 0.5 * left or gain >= rel_gain * first)):
                break
            found, explained, first = trial, energy, first or energy - explained
        out[i] = sorted(found)
    return out


def line_basis(s: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """[1, cos(w s) for w in row, sin(w s) for w in row] at s [n] for each row of W [m, k] (k
    frequencies; k may be 0): [m, n, 1 + 2k]."""
    phase = W[:, None, :] * s[None, :, None]                                              # [m, n, k]
    return torch.cat([torch.ones_like(phase[..., :1]), torch.cos(phase), torch.sin(phase)], dim=2)


def line_fit_energy(v: torch.Tensor, s: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """For each row of W [m, k]: the energy of the lines' values v [lines, n] at s [n] explained by
    a least-squares fit by :func:`line_basis` (each line its own coefficients; the basis is
    shared), [m]. By a QR factorisation, so nearly equal frequencies do not inflate it."""
    Q = torch.linalg.qr(line_basis(s, W)).Q
    return torch.einsum("mnb,ln->mbl", Q, v).square().sum((1, 2))


def set_energy(v: torch.Tensor, s: torch.Tensor, frequencies: list[float]) -> float:
    """:func:`line_fit_energy` of one set of frequencies."""
    return float(line_fit_energy(v, s, torch.tensor([frequencies], dtype=torch.float64))[0])


def polish_frequencies(v: torch.Tensor, s: torch.Tensor, found: list[float], apart: float,
                       iterations: int = 30) -> list[float]:
    """The frequencies ``found`` moved jointly (L-BFGS from there) to maximise the energy of the
    lines' values v [lines, n] that a fit with a constant and all of them explains: two low
    frequencies on a line that holds one or two periods are nearly collinear, and searching one at
    a time with the other held stops short of the joint optimum. Kept only where it explains more
    and leaves the frequencies positive and ``apart``."""
    w = torch.tensor(found, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)
    scale = float(v.square().sum()) + 1e-300

    def loss():  # the normal equations: differentiable at a fraction of the cost of a QR's backward pass
        opt.zero_grad()
        B = line_basis(s, w[None])[0]
        BtB = B.T @ B + 1e-10 * s.numel() * torch.eye(B.shape[1], dtype=B.dtype)
        Btv = B.T @ v.T
        value = -(Btv * torch.linalg.solve(BtB, Btv)).sum() / scale
        value.backward()
        return value

    opt.step(loss)
    polished = [float(t) for t in w.detach()]
    spread = all(abs(a - b) > apart for a, b in itertools.combinations(polished, 2))
    if min(polished) > 0 and spread and set_energy(v, s, polished) >= set_energy(v, s, found):
        return polished
    return found


def group_waves(groups: list[tuple[int, ...]], frequencies: dict[int, list[float]], d: int,
                max_per_group: int = 256) -> torch.Tensor:
    """Candidate wave vectors [M, d] of the coupled groups: for each group (i_1, ..., i_q), one
    frequency of each coordinate (every combination: first each coordinate's highest, then each
    one's lowest, then mixed ones) with each
    of the 2^(q-1) sign patterns (k and -k are the same real wave), at most ``max_per_group``. A
    product of oscillations sin(a_1 x_1 + phi_1) ... sin(a_q x_q + phi_q) is exactly the sum of the
    waves (a_1, +-a_2, ..., +-a_q) with suitable amplitudes."""
    rows = []
    for group in groups:
        sizes = [len(frequencies[i]) for i in group]
        highest = tuple(m - 1 for m in sizes)
        choices = sorted(itertools.product(*(range(m) for m in sizes)),
                         key=lambda c: (c != highest, len(set(c)), sum(c), c))
        block = []
        for choice in choices:
            magnitudes = torch.tensor([frequencies[i][c] for i, c in zip(group, choice)], dtype=torch.float64)
            for signs in itertools.product((1.0, -1.0), repeat=len(group) - 1):
                k = torch.zeros(d, dtype=torch.float64)
                k[list(group)] = magnitudes * torch.tensor((1.0, *signs), dtype=torch.float64)
                block.append(k)
        rows += block[:max_per_group]
    return torch.stack(rows) if rows else torch.zeros(0, d, dtype=torch.float64)


def prune_waves(r: torch.Tensor, x: torch.Tensor, C: torch.Tensor, noise_factor: float, max_waves: int,
                floor: float = SELECT_FLOOR) -> torch.Tensor:
    """Indices into the candidate waves C [M, d], strongest first: backward elimination from the
    least-squares fit r ~ constant + wave_basis(x, C) c by all of them. The wave whose removal
    costs the fit least goes, and the fit is redone without it, while that cost is below
    ``noise_factor``^2 times the misfit variance (its amplitude not ``noise_factor`` standard
    errors clear of zero) or leaves the misfit within ``floor`` of r's rms; then the weakest
    until at most ``max_waves`` are left."""
    n, M = x.shape[0], C.shape[0]
    A = torch.cat([torch.ones(n, 1, dtype=x.dtype), wave_basis(x, C)], 1)
    G, b = A.T @ A, A.T @ r
    G.diagonal().add_(1e-12 * float(G.diagonal().max()) + 1e-300)
    Ginv = torch.linalg.inv(G)
    c = Ginv @ b
    total = float(r @ r)
    rss = max(total - float(b @ c), 0.0)
    alive = torch.ones(M, dtype=torch.bool)
    cost = torch.zeros(M, dtype=x.dtype)
    i = torch.arange(1, M + 1)
    while bool(alive.any()):
        a, bb, h = Ginv.diagonal()[1:M + 1], Ginv.diagonal()[M + 1:], Ginv[i, i + M]
        det = (a * bb - h ** 2).clamp_min(1e-300)
        cc, cs = c[1:M + 1], c[M + 1:]
        cost = (bb * cc ** 2 - 2 * h * cc * cs + a * cs ** 2) / det   # RSS increase if removed
        cost = torch.where(alive, cost, torch.inf)
        m = int(cost.argmin())
        k = int(alive.sum())
        sigma2 = (rss + float(cost[m])) / max(n - 2 * (k - 1) - 1, 1)
        weak = float(cost[m]) <= noise_factor ** 2 * sigma2 or rss + float(cost[m]) <= floor ** 2 * total
        if not weak and k <= max_waves:
            break
        J = [1 + m, 1 + M + m]
        block = Ginv[J][:, J]
        W = torch.linalg.solve(block, Ginv[J])
        c = c - W.T @ c[J]
        Ginv = Ginv - Ginv[:, J] @ W
        rss += float(cost[m])
        alive[m] = False
    kept = alive.nonzero().flatten()
    return kept[cost[kept].argsort(descending=True, stable=True)]


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


def fit_waves(r: torch.Tensor, x: torch.Tensor, K: torch.Tensor, iterations: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Nonlinear least squares r ~ wave_basis(x, K) c over the wave vectors K [M, d] (starting
    from the given ones) and the amplitudes c (variable projection: c is the linear
    least-squares solution for each K), by L-BFGS. Every wave at once, so no wave's side lobes
    bias another's peak. Returns (K, c) with c [M, 2] (cos, sin)."""
    K = K.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([K], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)

    def misfit():
        opt.zero_grad()
        loss = (r - wave_basis(x, K) @ fit_amplitudes(r, x, K)).square().mean()
        loss.backward()
        return loss

    opt.step(misfit)
    K = K.detach()
    c = fit_amplitudes(r, x, K)
    return K, torch.stack([c[:K.shape[0]], c[K.shape[0]:]], dim=1)


def wave_hessians(x: torch.Tensor, K: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Hessians [m, d, d] at x [m, d] of the plane-wave sum wave_basis(x, K) c."""
    M = K.shape[0]
    B = wave_basis(x, K)
    coef = -(B[:, :M] * c[:M] + B[:, M:] * c[M:])                 # [m, M]
    return torch.einsum("nm,mi,mj->nij", coef, K, K)


N_REFINE = 16000  # points find_waves evaluates the function at (and refines the waves on)


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


def coupled_waves(fn: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor,
                  generator: torch.Generator, max_waves: int, noise_factor: float = 6.0,
                  rel_threshold: float = 0.05, k_max: float = 200.0, n_points: int = N_REFINE,
                  n_hessian: int | None = None,
                  points: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> Waves:
    """The waves of ``fn`` in coupled groups of coordinates that :func:`find_waves` misses, at
    most ``max_waves``, strongest first:

    1. the groups: the coordinates fn's Hessians couple (:func:`coupled_groups`: pairs, and
       cliques such as all q coordinates of a product);
    2. each group coordinate's frequencies, from fn on lines parallel to its axis
       (:func:`line_frequencies`);
    3. the candidates: per group, every sign pattern of its coordinates' frequencies
       (:func:`group_waves`), and each grouped coordinate's axis waves (regressors for its
       one-dimensional terms, not returned);
    4. backward elimination from the joint least-squares fit by all candidates (:func:`prune_waves`).

    Why a second finder: with many waves in a box that holds few of their periods (2d waves of
    |k| = pi sqrt 2 at d = 50) the Fourier peaks overlap and Jennrich separates at most d
    directions, and a product of oscillations in q coordinates is 2^(q-1) waves along directions
    of q nonzero components (16 in 5D): neither a single |F(k)| peak nor the Hessians' rank-one
    terms single them out, but each coordinate's frequencies do."""
    lo, hi = lo.double(), hi.double()
    d = lo.numel()
    none = Waves(torch.zeros(0, d, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), 0.0)
    if d < 2 or max_waves < 1:
        return none
    points = points or (lambda n, g: box_points(lo, hi, n, g))
    x = points(n_points, generator)
    with torch.no_grad():
        r = fn(x).double()
    xh = points(n_hessian or hessian_points(d), generator)
    groups = coupled_groups(hessians(fn, xh, 1e-3 * float((hi - lo).max())), rel_threshold,
                            max_pairs=min(2 * d, max_waves))
    if not groups:  # no pair coupled: a sum of one-dimensional terms
        return none
    coords = sorted({i for g in groups for i in g})
    frequencies = line_frequencies(fn, lo, hi, coords, generator, k_max=k_max)
    # the grouped coordinates' axis waves join as regressors, so that a one-dimensional term
    # sin(a x_i) is not taken for coupled waves; only coupled waves are returned
    C = group_waves([(i,) for i in coords] + groups, frequencies, d)
    C = C[prune_waves(r, x, C, noise_factor, max_waves + len(coords))]
    C = C[((C != 0).sum(dim=1) >= 2).nonzero().flatten()[:max_waves]]
    return Waves(C, fourier_power(r - r.mean(), x, C), float(r.norm()) / n_points)
