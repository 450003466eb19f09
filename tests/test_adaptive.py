"""The frequency-adaptive MscaleDNN: the wave estimator finds known plane waves, units placed at
the true wave vectors represent the function exactly, the network's forward Laplacian is exact,
and an adaptive run is reproducible and survives a stop and resume."""

import itertools
import math
from unittest.mock import patch
from pathlib import Path

import pytest
import torch

from mscalednn import ConfigError, PoissonProblem, load_run_config, parse_expression, solve
from mscalednn.adapt import adapt, due, least_squares_amplitudes, predicted_seconds, residual_function, source_snr
from mscalednn.derivatives import value_grad_laplacian
from mscalednn.forward_laplacian import forward_laplacian
from mscalednn.nn import AdaptiveMscaleDNN
from mscalednn.train import Checkpointing, seed_everything
from mscalednn.wavefinder import (amplitude_snr, best_magnitudes, box_points, coupled_groups, coupled_waves, distance,
                                  find_waves, fit_amplitudes, fourier_power, hessians, least_squares, line_frequencies,
                                  prune_waves, wave_basis)

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


def plane_waves(K, amplitudes, phases):
    """x -> sum_m a_m sin(k_m . x + phi_m)."""
    return lambda x: (amplitudes * torch.sin(x @ K.T + phases)).sum(-1)


def matched(found, true, tol):
    """For each true wave vector, the relative distance to the nearest found one (up to sign)."""
    dist = distance(true, found).min(dim=1).values
    return dist / true.norm(dim=1), dist.max() / true.norm(dim=1).min() <= tol


def dense_unit(n, d, generator):
    V = torch.randn(n, d, dtype=F64, generator=generator)
    return V / V.norm(dim=1, keepdim=True)


def test_finds_dense_plane_waves_of_a_function():
    gen = torch.Generator().manual_seed(11)
    d = 4
    K = dense_unit(3, d, gen) * torch.tensor([[24.0], [30.0], [36.0]], dtype=F64)
    smooth = dense_unit(1, d, gen) * math.pi
    fn = plane_waves(torch.cat([K, smooth]), torch.tensor([1.0, 0.8, 0.6, 3.0], dtype=F64),
                     torch.tensor([0.3, 1.1, -0.7, 0.2], dtype=F64))
    waves = find_waves(fn, torch.zeros(d), torch.ones(d), torch.Generator().manual_seed(0))
    errors, ok = matched(waves.k, K, 0.02)
    assert ok, errors  # every fast wave vector within 2% of its length
    assert len(waves) <= 5  # nothing much else: at most the smooth wave besides
    again = find_waves(fn, torch.zeros(d), torch.ones(d), torch.Generator().manual_seed(0))
    assert torch.equal(waves.k, again.k)  # deterministic for a generator state


def test_finds_linearly_dependent_directions_by_matching_pursuit():
    # (e_i + e_{i+1}) / sqrt 2, cyclic, in 4D: four directions of rank 3 (Jennrich alone cannot)
    d = 4
    E = torch.eye(d, dtype=F64)
    K = 20.0 * torch.stack([(E[i] + E[(i + 1) % d]) / math.sqrt(2) for i in range(d)])
    fn = plane_waves(K, torch.ones(d, dtype=F64), torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=F64))
    waves = find_waves(fn, torch.zeros(d), torch.ones(d), torch.Generator().manual_seed(1))
    errors, ok = matched(waves.k, K, 0.02)
    assert ok, errors


def neighbour_products(x):
    """sum_i sin(pi x_i) cos(pi x_{i+1}), cyclic: 2d plane waves pi (e_i +- e_{i+1}), more than d."""
    return (torch.sin(math.pi * x) * torch.cos(math.pi * x.roll(-1, dims=1))).sum(1)


def neighbour_waves(d, a=math.pi, b=math.pi, shift=1):
    """The waves a e_i + b e_{i+shift} and a e_i - b e_{i+shift} (cyclic), [2d, d]: by default
    those of neighbour_products, pi (e_i +- e_{i+1})."""
    true = torch.zeros(2 * d, d, dtype=F64)
    for i in range(d):
        true[2 * i, i] = true[2 * i + 1, i] = a
        true[2 * i, (i + shift) % d], true[2 * i + 1, (i + shift) % d] = b, -b
    return true


def misfit(fn, K, d, seed=2):
    """The rms share of fn (on fresh points of [0, 1]^d) that a least-squares fit by a constant and
    the waves K leaves."""
    x = box_points(torch.zeros(d), torch.ones(d), 20000, torch.Generator().manual_seed(seed))
    r = fn(x)
    A = torch.cat([torch.ones(x.shape[0], 1, dtype=F64), wave_basis(x, K)], dim=1)
    return float((r - A @ least_squares(A, r, 1e-8)).norm() / (r - r.mean()).norm())


def product(*factors):
    """x -> prod_i factor_i(x_i), for one-dimensional functions (None: the coordinate is left out)."""
    return lambda x: torch.stack([f(x[:, i]) for i, f in enumerate(factors) if f is not None]).prod(0)


def sign_patterns(magnitudes, d, coords=None):
    """The 2^(q-1) wave vectors (a_1, +-a_2, ..., +-a_q) in the coordinates ``coords`` (default the
    first q) of R^d: the plane waves a product of q oscillations is made of."""
    coords = list(range(len(magnitudes))) if coords is None else coords
    rows = []
    for signs in itertools.product((1.0, -1.0), repeat=len(magnitudes) - 1):
        k = torch.zeros(d, dtype=F64)
        k[coords] = torch.tensor(magnitudes, dtype=F64) * torch.tensor((1.0, *signs), dtype=F64)
        rows.append(k)
    return torch.stack(rows)


def test_hessian_coupling_gives_the_coupled_groups_of_coordinates_only():
    d = 8
    xh = box_points(torch.zeros(d), torch.ones(d), 50, torch.Generator().manual_seed(3))
    groups = coupled_groups(hessians(neighbour_products, xh, 1e-3), 0.05, 2 * d)
    assert groups == sorted(tuple(sorted((i, (i + 1) % d))) for i in range(d))  # the 8 neighbours, no other
    # a product of oscillations in x_1, x_4, x_6 couples those three (a clique), beside the pair (0, 2)
    f = lambda x: (torch.sin(3 * x[:, 1]) * torch.sin(4 * x[:, 4]) * torch.cos(5 * x[:, 6])  # noqa: E731
                   + torch.sin(2 * x[:, 0]) * torch.sin(2 * x[:, 2]) + torch.sin(x).sum(1))
    assert coupled_groups(hessians(f, xh, 1e-3), 0.05, 2 * d) == [(1, 4, 6), (0, 2)]
    assert coupled_groups(hessians(f, xh, 1e-3), 0.05, 2 * d, max_size=2) == [(0, 2), (1, 4), (1, 6), (4, 6)]
    one_dimensional = lambda x: (torch.sin(math.pi * x) + x ** 2).sum(1)  # noqa: E731
    assert coupled_groups(hessians(one_dimensional, xh, 1e-3), 0.05, 2 * d) == []
    assert len(coupled_waves(one_dimensional, torch.zeros(d), torch.ones(d), torch.Generator().manual_seed(0),
                             64)) == 0


def test_line_frequencies_give_each_coordinate_s_frequencies():
    # cos(1.5 pi x_i) sin(pi x_{i+3}), cyclic in 6D: each coordinate oscillates at 1.5 pi and at pi,
    # less than a period of either on the box; and a product of unequal fast factors
    d = 6
    lo, hi = torch.zeros(d), torch.ones(d)
    f = lambda x: (torch.cos(1.5 * math.pi * x) * torch.sin(math.pi * x.roll(-3, dims=1))).sum(1)  # noqa: E731
    found = line_frequencies(f, lo, hi, [0, 2, 5], torch.Generator().manual_seed(0))
    for i in (0, 2, 5):
        assert len(found[i]) == 2 and abs(found[i][0] - math.pi) < 0.005 * math.pi, found  # measured to 1e-6
        assert abs(found[i][1] - 1.5 * math.pi) < 0.005 * math.pi, found
    g = product(lambda t: torch.sin(3 * math.pi * t), lambda t: torch.cos(11 * math.pi * t + 0.4),
                lambda t: torch.sin(20 * math.pi * t), None, None, None)
    found = line_frequencies(g, lo, hi, [0, 1, 2], torch.Generator().manual_seed(1))
    assert [len(found[i]) for i in range(3)] == [1, 1, 1]
    assert all(abs(found[i][0] - a * math.pi) < 1e-3 * a * math.pi for i, a in enumerate((3, 11, 20))), found


def test_pruning_keeps_the_waves_a_function_has_among_nearly_equal_candidates():
    # on the unit box the waves pi (1.5, 1), pi (1, 1), pi (1.5, 1.5) hold about one period: their
    # columns are nearly collinear, and a fit by all of them shares f among them
    d = 2
    x = box_points(torch.zeros(d), torch.ones(d), 8000, torch.Generator().manual_seed(0))
    f = torch.cos(1.5 * math.pi * x[:, 0]) * torch.sin(math.pi * x[:, 1]) + 0.3
    C = math.pi * torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.5, 1.5], [1.5, -1.5], [1.5, 1.0], [1.5, -1.0],
                                [1.0, 1.5], [1.0, -1.5]], dtype=F64)
    kept = prune_waves(f, x, C, 6.0, 8)
    assert sorted(kept.tolist()) == [4, 5]
    assert prune_waves(f, x, C, 6.0, 1).numel() == 1  # at most max_waves


def test_coupled_waves_fit_more_low_waves_than_dimensions():
    # 16 waves of |k| = pi sqrt 2 in 8D: the Fourier peaks overlap and Jennrich separates at most
    # d directions; the coupled groups' candidates with the joint least-squares fit find them all
    d = 8
    lo, hi = torch.zeros(d), torch.ones(d)
    waves = coupled_waves(neighbour_products, lo, hi, torch.Generator().manual_seed(1), 64)
    true = neighbour_waves(d)
    assert len(waves) == 2 * d  # exactly the true ones
    assert (distance(true, waves.k).min(dim=1).values < 1e-3 * math.pi).all()
    assert misfit(neighbour_products, waves.k, d) < 1e-3  # measured 1e-8 on fresh points
    again = coupled_waves(neighbour_products, lo, hi, torch.Generator().manual_seed(1), 64)
    assert torch.equal(waves.k, again.k)
    assert len(coupled_waves(neighbour_products, lo, hi, torch.Generator().manual_seed(1), 5)) == 5


def test_coupled_waves_off_the_diagonals():
    # sum_i sin(2 pi x_i) sin(pi x_{i+2}): waves pi (2, +-1) in the planes (i, i+2), 18 degrees off
    # the diagonals (candidates on the diagonals were 46% off and left 50% of f unexplained)
    d = 8
    lo, hi = torch.zeros(d), torch.ones(d)

    def f(x):
        return (torch.sin(2 * math.pi * x) * torch.sin(math.pi * x.roll(-2, dims=1))).sum(1)
    true = neighbour_waves(d, 2 * math.pi, math.pi, shift=2)
    waves = coupled_waves(f, lo, hi, torch.Generator().manual_seed(1), 64)
    assert len(waves) == 2 * d
    assert (distance(true, waves.k).min(dim=1).values < 1e-3 * true.norm(dim=1)).all()
    assert misfit(f, waves.k, d) < 1e-3  # measured 1e-8


@pytest.mark.parametrize("d, magnitudes", [(5, (5.0,) * 5), (4, (3.0, 4.0, 5.0, 2.0))])
def test_coupled_waves_of_products_across_all_coordinates(d, magnitudes):
    # prod_i sin(pi x_i) + 0.1 prod_i sin(a_i pi x_i): 2^(d-1) smooth and 2^(d-1) fast waves along
    # directions with d nonzero components (poisson5d_product's, and one of unequal factors),
    # more than d: Jennrich's directions and the plane diagonals cannot meet them
    lo, hi = torch.zeros(d), torch.ones(d)
    fast = product(*(lambda t, a=a: torch.sin(a * math.pi * t) for a in magnitudes))
    f = lambda x: product(*(lambda t: torch.sin(math.pi * t) for _ in range(d)))(x) + 0.1 * fast(x)  # noqa: E731
    waves = coupled_waves(f, lo, hi, torch.Generator().manual_seed(1), 256)
    true = torch.cat([sign_patterns((math.pi,) * d, d), sign_patterns([a * math.pi for a in magnitudes], d)])
    assert len(waves) == true.shape[0]
    assert (distance(true, waves.k).min(dim=1).values < 1e-3 * true.norm(dim=1)).all()
    assert misfit(f, waves.k, d) < 1e-3  # measured 1e-8
    # the fast product of the first three coordinates alone: the group is those three, 4 waves
    three = product(*(lambda t, a=a: torch.sin(a * math.pi * t) for a in magnitudes[:3]), None)
    found = coupled_waves(three, lo, hi, torch.Generator().manual_seed(2), 256)
    assert len(found) == 4 and misfit(three, found.k, d) < 1e-3


def test_amplitude_snr_tells_present_waves_from_absent_ones():
    gen = torch.Generator().manual_seed(5)
    d = 6
    x = torch.rand(8000, d, dtype=F64, generator=gen)
    K = dense_unit(3, d, gen) * torch.tensor([[5.0], [9.0], [13.0]], dtype=F64)
    r = 0.2 * torch.sin(x @ K[0] + 0.3) + 0.1 * torch.cos(x @ K[1]) + torch.randn(8000, dtype=F64, generator=gen)
    snr = amplitude_snr(r, x, K)
    assert snr[0] > 8 and snr[1] > 3 and snr[2] < 3.5, snr  # expected about 12.6, 6.3 and 1 (+- 1)


def test_fft_magnitudes_match_the_direct_transform():
    # the spread-and-FFT scan of |F(t v)| finds the same peak as the direct sum on the same t grid
    gen = torch.Generator().manual_seed(4)
    d = 6
    x = torch.rand(3000, d, dtype=F64, generator=gen)
    V = dense_unit(5, d, gen)
    t_true = torch.tensor([12.0, 40.0, 75.0, 130.0, 185.0], dtype=F64)
    r = torch.sin(x @ (V * t_true[:, None]).T + 0.4).sum(1)
    t = best_magnitudes(r - r.mean(), x, V, 200.0)
    span = (x @ V.T).max(0).values - (x @ V.T).min(0).values
    assert ((t - t_true).abs() <= 0.5 * math.pi / span + 1e-9).all(), (t, t_true)  # within one grid step
    for j in range(5):  # and the direct transform's argmax on that grid is the same grid point
        grid = torch.arange(1, int(200.0 / (0.5 * math.pi / span[j])) + 1, dtype=F64) * 0.5 * math.pi / span[j]
        direct = grid[fourier_power(r - r.mean(), x, grid[:, None] * V[j]).argmax()]
        assert abs(float(direct - t[j])) < 1e-9 * float(t_true[j]) + 1e-6


def test_the_source_check_tells_waves_of_the_solution_from_the_network_s_own():
    d = 5
    gen = torch.Generator().manual_seed(2)
    k_true = 20.0 * dense_unit(1, d, gen)
    k_net = 25.0 * dense_unit(1, d, gen)  # a wave the network has and u* has not
    u = parse_expression(f"1 + 0.05*sin({' + '.join(f'{float(v)!r}*x[{i}]' for i, v in enumerate(k_true[0]))})", d)
    problem = PoissonProblem(u, (0.0,) * d, (1.0,) * d, name="one wave")
    snr = source_snr(problem, torch.cat([k_true, k_net, 1.03 * k_true]), torch.Generator().manual_seed(0))
    assert snr[0] > 30 and snr[1] < 6  # f = -Laplace u* holds u*'s wave, not the network's
    assert snr[2] > 6  # an estimate 3% off the true k (inside the peak) still counts


def first_adaptation(expression, d, scale):
    """A small default-config network for u* = ``expression`` on [0,1]^d, and its first
    adaptation: (model, problem, batch, record)."""
    problem = PoissonProblem(parse_expression(expression, d), (0.0,) * d, (1.0,) * d, name=f"{d}d")
    torch.manual_seed(0)
    model = load_run_config(ROOT / "configs" / "adaptive.yaml", ["model.width=48", "model.hidden_width=16"]).model.build(d)
    model.set_output_scaling(2.0, scale)
    x_in, x_bd = torch.rand(512, d), torch.rand(128, d)
    batch = (x_in, x_bd, problem.f(x_in), problem.g(x_bd))
    return model, problem, batch, adapt(model, problem, batch, 100.0, step=1, seed=0, index=0)


def test_an_untrained_network_s_own_waves_get_no_units():
    # in d = 20 the untrained network's residual peaks at its own random high-scale sin units;
    # u* is smooth, so f has none of them and nothing fast is placed
    _, _, _, record = first_adaptation("2 + sum(sin(pi*x)*cos(pi*roll(x, -1)))/sqrt(d)", 20, 0.3)
    fast = record.found.k.norm(dim=1) > 3 * math.pi
    assert int(fast.sum()) >= 3 and (record.source_snr[fast] < 6).all()  # found, but not in f
    assert (record.placed.norm(dim=1) <= 3 * math.pi).all() if len(record.placed) else True


def test_the_first_adaptation_places_the_source_s_waves_in_coupled_planes():
    # 16 low waves pi (e_i +- e_{i+1}) in 8D: the residual's Fourier peaks miss them, the
    # source's coupled planes give them units; a later adaptation adds no plane waves
    d = 8
    model, problem, batch, record = first_adaptation("2 + sum(sin(pi*x)*cos(pi*roll(x, -1)))", d, 1.0)
    true = neighbour_waves(d)
    assert (distance(true, record.placed).min(dim=1).values < 0.1 * math.pi * math.sqrt(2)).all(), record.placed
    assert int(model.waves.active.sum()) == len(record.placed)
    later = adapt(model, problem, batch, 100.0, step=2, seed=0, index=1)
    assert len(later.placed) <= 2  # the residual's peaks only: the planes were placed at index 0


def test_the_next_estimation_waits_as_long_as_the_last_one_took_and_they_stop_at_5_percent():
    model = AdaptiveMscaleDNN(2, width=8, depth=2, adapt_at=(0.0, 0.05, 0.2))
    assert due(model, 0.0, [])
    slow = [{"budget": [0.0, 0.04]}]  # the first estimation took 4% of the budget
    assert not due(model, 0.07, slow) and due(model, 0.08, slow)  # the 5% mark is past; wait to 8%
    quick = [{"budget": [0.0, 0.01]}]
    assert not due(model, 0.04, quick) and due(model, 0.05, quick)
    costly = [{"budget": [0.0, 0.03]}, {"budget": [0.06, 0.08]}]  # 5% of the budget spent
    assert not due(model, 0.5, costly)  # no more estimations
    assert not due(torch.nn.Linear(2, 1), 0.5, [])  # not adaptive: never


def test_an_estimation_predicted_to_overrun_its_share_is_skipped_and_says_why():
    """The estimation's cost is predicted from the residual's on a few points (the exact
    Laplacian's cost grows with d); where it would take more than the share of the budget left,
    nothing is estimated or placed, and the record says so. With enough share it runs."""
    d = 3
    problem = PoissonProblem(parse_expression("sin(6*pi*x[0])", d), (0.0,) * d, (1.0,) * d)
    torch.manual_seed(0)
    model = AdaptiveMscaleDNN(d, width=8, depth=2)
    x_in, x_bd = torch.rand(256, d), torch.rand(64, d)
    batch = (x_in, x_bd, problem.f(x_in), problem.g(x_bd))
    fn = residual_function(model, problem)
    assert predicted_seconds(fn, problem) > 0
    tight = adapt(model, problem, batch, 100.0, step=1, seed=0, index=0, budget=lambda s: s / 1e-6, share=0.05)
    assert tight.skipped and "would take at least" in tight.skipped
    assert len(tight.found) == 0 and len(tight.placed) == 0 and int(model.waves.active.sum()) == 0
    assert tight.to_dict()["skipped"] == tight.skipped
    ample = adapt(model, problem, batch, 100.0, step=1, seed=0, index=0, budget=lambda s: s / 1e6, share=0.05)
    assert ample.skipped is None and len(ample.placed) >= 1  # the 6 pi wave of u* gets a unit


def test_the_residual_is_evaluated_in_chunks_with_the_same_values():
    d = 4
    problem = PoissonProblem(parse_expression("sum(sin(pi*x))", d), (0.0,) * d, (1.0,) * d)
    torch.manual_seed(0)
    model = AdaptiveMscaleDNN(d, width=8, depth=2)
    x = torch.rand(700, d, dtype=torch.float64)
    whole = -forward_laplacian(model.double(), x, need_grad=False)[2] - problem.f(x)
    with patch("mscalednn.adapt.auto_chunk", return_value=256):  # three chunks
        chunked = residual_function(model, problem)(x)
    assert torch.allclose(chunked, whole.detach(), rtol=1e-12, atol=1e-12)


def test_units_at_the_true_wave_vectors_represent_the_solution_exactly():
    d = 3
    K = torch.tensor([[9.0, -12.0, 4.0], [3.0, 5.0, 15.0]], dtype=F64)
    exact = parse_expression("2 + 0.3*cos(9*x[0] - 12*x[1] + 4*x[2]) - 0.2*sin(3*x[0] + 5*x[1] + 15*x[2])", d)
    problem = PoissonProblem(exact, (0.0,) * d, (1.0,) * d, name="two waves")
    torch.manual_seed(0)
    model = AdaptiveMscaleDNN(d, width=12, depth=2, variant="first_layer", activation="tanh").double()
    with torch.no_grad():  # the rest of the network outputs the constant 2 (shift), nothing else
        model.stack.out.weight.zero_()
        model.stack.out.bias.zero_()
    model.set_output_scaling(2.0, 0.5)
    x_in, x_bd = torch.rand(300, d, dtype=F64), torch.rand(100, d, dtype=F64)
    batch = (x_in, x_bd, problem.f(x_in), problem.g(x_bd))
    model.place_waves(K, least_squares_amplitudes(model, K, batch, beta=100.0))
    x = torch.rand(500, d, dtype=F64)
    u, _, lap = forward_laplacian(model, x)
    assert torch.allclose(u, problem.u(x), atol=1e-10, rtol=0)
    assert torch.allclose(-lap, problem.f(x), atol=1e-6, rtol=0)  # |k|^2 ~ 260 times the error in u
    # and the wave basis alone, fitted by least squares, reproduces a plane-wave sum exactly
    r = problem.u(x) - 2.0
    assert torch.allclose(wave_basis(x, K) @ fit_amplitudes(r, x, K), r, atol=1e-8, rtol=0)


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("variant", ["first_layer", "subnets"])
def test_forward_laplacian_of_the_adaptive_network_is_exact(variant, depth):
    torch.manual_seed(3)
    d = 4
    model = AdaptiveMscaleDNN(d, width=10, depth=depth, variant=variant, activation="tanh",
                              first_activation="sin", wave_slots=5).double()
    model.place_waves(torch.randn(3, d, dtype=F64) * 6, torch.randn(3, 2, dtype=F64))  # 2 slots stay free
    model.set_output_scaling(0.5, 3.0)
    x = torch.rand(9, d, dtype=F64)
    u, g, lap = forward_laplacian(model, x)
    u0, g0, lap0 = value_grad_laplacian(model, x)
    assert torch.allclose(u, u0, atol=1e-12) and torch.allclose(g, g0, atol=1e-11)
    assert torch.allclose(lap, lap0, atol=1e-9)
    _, none, lap_only = forward_laplacian(model, x, need_grad=False)  # the residual loss's call
    assert none is None and torch.allclose(lap_only, lap0, atol=1e-9)
    P = torch.randn(9, 2, d, dtype=F64)  # directions: sum_k p_k^T (Hess u) p_k
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).sum(), xg, create_graph=True)
    quad = sum((torch.autograd.grad((grad * P[:, k]).sum(), xg, retain_graph=True)[0] * P[:, k]).sum(-1)
               for k in range(2))
    assert torch.allclose(forward_laplacian(model, x, directions=P)[2], quad, atol=1e-9)


def test_inactive_slots_have_no_output_and_no_gradient():
    model = AdaptiveMscaleDNN(2, width=8, depth=2, wave_slots=4)
    model.place_waves(torch.tensor([[5.0, 1.0]]))  # amplitude 0: the function is unchanged
    x = torch.rand(20, 2)
    assert torch.equal(model(x), model.scale_output(model.raw(x)))
    with torch.no_grad():
        model.waves.amplitude.fill_(1.0)
        model.waves.k.fill_(2.0)  # inactive rows: no effect
    model(x).sum().backward()
    assert model.waves.amplitude.grad[1:].abs().max() == 0 and model.waves.k.grad[1:].abs().max() == 0
    assert model.waves.amplitude.grad[0].abs().max() > 0


def test_only_the_placed_slots_are_computed_and_the_span_survives_loading():
    torch.manual_seed(0)
    model = AdaptiveMscaleDNN(3, width=8, depth=2, wave_slots=200).double()
    assert model.waves.span == 64  # one block from the start: no new shape for the first 64 waves
    model.place_waves(torch.randn(70, 3, dtype=F64), torch.randn(70, 2, dtype=F64))
    assert model.waves.span == 128 and model.waves.live()[0].shape == (128, 3)
    x = torch.rand(50, 3, dtype=F64)
    K, c = model.waves.wave_vectors(), model.waves.coefficients()  # every slot, masked
    every_slot = torch.cos(x @ K.T) @ c[:, 0] + torch.sin(x @ K.T) @ c[:, 1]  # all 200
    assert torch.allclose(model.waves(x).squeeze(-1), every_slot, atol=1e-14)
    u, _, lap = forward_laplacian(model, x)
    fresh = AdaptiveMscaleDNN(3, width=8, depth=2, wave_slots=200).double()
    fresh.load_state_dict(model.state_dict())  # a checkpoint, or a broadcast from rank 0
    assert fresh.waves.span == 128
    u2, _, lap2 = forward_laplacian(fresh, x)
    assert torch.equal(u, u2) and torch.equal(lap, lap2)


# -- in training -----------------------------------------------------------------------------

PROBLEM = "sin(pi*x[0])*sin(pi*x[1]) + 0.1*sin(8*pi*(0.6*x[0] + 0.8*x[1]))"
SMALL = ["train.dtype=float64", "train.device=cpu", "train.time_limit=null", "model.width=24",
         "model.hidden_width=16", "train.n_interior=256", "train.n_boundary=128", "train.progress=false",
         "train.n_test=400", "train.steps=40", "train.eval_every=10", "train.checkpoint_every=20"]


def train(*, path=None, resume=None, stop=None, adapt_at="[0.2, 0.6]"):
    problem = PoissonProblem(parse_expression(PROBLEM, 2), (0.0, 0.0), (1.0, 1.0), name="dense wave 2d")
    overrides = SMALL + ([f"model.adapt_at={adapt_at}"] if adapt_at else [])
    run = load_run_config(ROOT / "configs" / "adaptive.yaml", overrides)
    seed_everything(run.train.seed)
    model = run.model.build(problem.dim)
    return solve(problem, model, run.train, checkpoint=Checkpointing(path) if path else None,
                 resume=resume, stop=stop)


def same(a, b):
    """Two lists of adaptation records are equal except for their timings."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in a] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in b]


def test_adaptive_run_finds_the_wave_is_deterministic_and_survives_resume(tmp_path):
    full = train()
    steps = [a["step"] for a in full.metrics["adaptations"]]
    assert steps == [8, 24]  # at 20% and 60% of 40 steps
    first = full.metrics["adaptations"][0]
    true = torch.tensor([[0.6, 0.8]], dtype=F64) * 8 * math.pi
    errors, ok = matched(torch.tensor(first["found"], dtype=F64), true, 0.03)
    assert ok and first["placed_slots"], errors  # the residual's strongest wave is the fast one
    again = train()
    assert same(again.metrics["adaptations"], full.metrics["adaptations"])
    assert again.metrics["rel_l2"] == full.metrics["rel_l2"]
    calls = {"n": 0}

    def stop():  # stop after step 15: after the first adaptation, before the second
        calls["n"] += 1
        return calls["n"] == 15

    part = train(path=tmp_path / "ck.pt", stop=stop)
    assert part.metrics["status"] == "interrupted" and len(part.metrics["adaptations"]) == 1
    resumed = train(resume=torch.load(tmp_path / "ck.pt", weights_only=True))
    assert same(resumed.metrics["adaptations"], full.metrics["adaptations"])
    assert abs(resumed.metrics["rel_l2"] - full.metrics["rel_l2"]) <= 1e-12 * full.metrics["rel_l2"]
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


def test_the_shipped_config_estimates_first_from_the_untrained_residual():
    # configs/adaptive.yaml: after step 1 (the residual is about -f there), then at 5%, 20%, 40%
    run = train(adapt_at=None)
    records = run.metrics["adaptations"]
    assert [a["step"] for a in records] == [1, 2, 8, 16]
    true = torch.tensor([[0.6, 0.8]], dtype=F64) * 8 * math.pi
    errors, ok = matched(torch.tensor(records[0]["placed"], dtype=F64), true, 0.03)
    assert ok, errors  # placed at the first estimate, within 3%


@pytest.mark.parametrize("bad", ["model.adapt_at=[0.5, 0.2]", "model.adapt_at=[1.5]", "model.wave_slots=0"])
def test_bad_adaptive_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        load_run_config(ROOT / "configs" / "adaptive.yaml", [bad])


# -- outputs: mscale solve and mscale compare ------------------------------------------------

def write_problem(path):
    path.write_text("name: dense wave 3d\ndim: 3\ndomain: [0, 1]\n"
                    "exact: \"sin(pi*x[0])*sin(pi*x[1])*sin(pi*x[2]) + 0.1*sin(7*pi*(0.48*x[0] + 0.6*x[1] + 0.64*x[2]))\"\n")
    return path


COMMON = ["--set", "train.progress=false", "--set", "train.n_test=400", "--set", "train.n_interior=256",
          "--set", "train.n_boundary=128", "--set", "train.time_limit=null"]
TINY = COMMON + ["--set", "model.adapt_at=[0.25]"]


def test_solve_writes_the_waves_against_the_exact_ones(tmp_path):
    from mscalednn.cli import main
    out = tmp_path / "run"
    code = main(["solve", str(write_problem(tmp_path / "p.yaml")), "--model", str(ROOT / "configs/adaptive.yaml"),
                 "--out", str(out), "--set", "train.steps=40", "--set", "train.eval_every=20", *TINY])
    assert code == 0
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert [a["step"] for a in metrics["adaptations"]] == [10]
    rows = json.loads((out / "waves.json").read_text())
    true = 7 * math.pi * torch.tensor([0.48, 0.6, 0.64], dtype=F64)
    # The smooth part prod sin(pi x_i) couples every coordinate plane, so plane waves of |k| ~ 6
    # that carry its projection on the box are placed too (the source's plane waves). Among the
    # high-frequency waves placed, the largest of u* is the fast one, found within 2%.
    fast = [r for r in rows if r["norm_k_exact"] > 2 * math.pi * math.sqrt(3)]
    top = fast[0]
    assert abs(top["norm_k_exact"] - float(true.norm())) < 0.01 * float(true.norm())
    assert top["error_placed"] < 0.02 and 0.05 < top["amplitude_exact"] < 0.15
    assert (out / "waves.png").stat().st_size > 10000


def test_compare_projects_on_the_found_directions_and_reports_the_waves(tmp_path):
    from mscalednn.cli import main
    out = tmp_path / "cmp"
    code = main(["compare", str(write_problem(tmp_path / "p.yaml")), "--models", str(ROOT / "configs/adaptive.yaml"),
                 str(ROOT / "configs/mscale.yaml"), "--directions", "found", "--budget", "30", "--out", str(out), *COMMON])
    assert code == 0
    import json
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["models"][0]["freq_steps"]
    assert any(r.startswith("w1: ") for r in rows)  # the projection rows are along the found directions
    md = (out / "summary.md").read_text()
    assert "## Waves placed by adaptive, seed 0" in md and "waves.png" in summary["figures"]
