"""Domains (mscalednn.geometry): uniform sampling (Kolmogorov-Smirnov against the exact
distributions), volumes and areas against closed forms, outward unit normals (checked by
membership a small step either side), and clear errors for bad shapes."""

import math

import numpy as np
import pytest
from scipy import stats

from mscalednn.geometry import Ball, Box, Shell, ball_volume, sphere_area

P_MIN = 1e-3  # fixed seeds: each p-value is one number, the same on every machine


def rng(seed=0):
    return np.random.default_rng(seed)


def perforated():
    """The unit square with three holes, two of them one part."""
    return (Box((0, 0), (1, 1), name="outer") - Ball((0.3, 0.3), 0.1, name="holes")
            - Ball((0.7, 0.6), 0.15, name="holes") - Ball((0.25, 0.75), 0.12, name="corner"))


@pytest.mark.parametrize("d", [2, 3, 10])
def test_ball_interior_is_uniform_in_radius_and_position(d):
    x = Ball((0.5,) * d, 2.0).sample_interior(20000, rng(d))
    r = np.linalg.norm(x - 0.5, axis=1) / 2.0
    assert stats.kstest(r, lambda t: np.clip(t, 0, 1) ** d).pvalue > P_MIN
    # a coordinate of the uniform ball: (t + 1) / 2 ~ Beta((d + 1) / 2, (d + 1) / 2)
    t = (x[:, 0] - 0.5) / 2.0
    assert stats.kstest((t + 1) / 2, stats.beta((d + 1) / 2, (d + 1) / 2).cdf).pvalue > P_MIN


@pytest.mark.parametrize("d", [2, 3, 5])
def test_shell_and_sphere_are_uniform(d):
    shell = Shell((0.0,) * d, 0.5, 1.0)
    r = np.linalg.norm(shell.sample_interior(20000, rng(d)), axis=1)
    assert stats.kstest(r, lambda t: (np.clip(t, 0.5, 1) ** d - 0.5 ** d) / (1 - 0.5 ** d)).pvalue > P_MIN
    # the surface: radii exact, a coordinate ~ 2 Beta((d - 1) / 2, (d - 1) / 2) - 1 (uniform in 3D)
    outer = shell.parts["outer"].sample(20000, rng(d + 10))
    assert np.allclose(np.linalg.norm(outer, axis=1), 1.0)
    if d > 2:
        beta = stats.beta((d - 1) / 2, (d - 1) / 2)
        assert stats.kstest((outer[:, 0] + 1) / 2, beta.cdf).pvalue > P_MIN
    else:  # the circle: the angle is uniform
        angle = np.arctan2(outer[:, 1], outer[:, 0])
        assert stats.kstest(angle, stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > P_MIN


def test_a_domain_with_holes_is_sampled_uniformly():
    """Against plain rejection from the square with another generator (two-sample KS on both
    coordinates), and no point in a hole."""
    domain = perforated()
    x = domain.sample_interior(20000, rng(1))
    box = rng(2).random((60000, 2))
    reference = box[domain.contains(box)][:20000]
    for k in range(2):
        assert stats.ks_2samp(x[:, k], reference[:, k]).pvalue > P_MIN
    assert domain.contains(x).all()
    # the boundary: the holes' points on their circles, uniform in angle
    y = domain.parts["holes"].sample(20000, rng(3))
    small = np.abs(np.linalg.norm(y - (0.3, 0.3), axis=1) - 0.1) < 1e-12
    big = np.abs(np.linalg.norm(y - (0.7, 0.6), axis=1) - 0.15) < 1e-12
    assert (small | big).all()
    assert small.mean() == pytest.approx(0.1 / 0.25, abs=0.015)  # by circumference
    angle = np.arctan2(y[small, 1] - 0.3, y[small, 0] - 0.3)
    assert stats.kstest(angle, stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > P_MIN


def test_volumes_and_areas_match_closed_forms():
    assert ball_volume(3, 1.0) == pytest.approx(4 / 3 * math.pi) and sphere_area(3, 1.0) == pytest.approx(4 * math.pi)
    assert ball_volume(2, 2.0) == pytest.approx(4 * math.pi) and sphere_area(2, 2.0) == pytest.approx(4 * math.pi)
    ball = Ball((0.0,) * 10, 1.0)
    assert ball.volume.exact and ball.volume.value == pytest.approx(math.pi ** 5 / 120)
    shell = Shell((0, 0, 0), 0.5, 1.0)
    assert shell.volume.value == pytest.approx(4 / 3 * math.pi * (1 - 0.125))
    assert shell.parts["inner"].area.value == pytest.approx(math.pi)
    domain = perforated()
    holes = math.pi * (0.1 ** 2 + 0.15 ** 2 + 0.12 ** 2)
    assert not domain.volume.exact and domain.volume.value == pytest.approx(1 - holes, rel=0.01)
    assert domain.parts["outer"].area.value == pytest.approx(4.0, rel=0.01)
    assert domain.parts["holes"].area.value == pytest.approx(2 * math.pi * 0.25, rel=0.01)
    assert list(domain.parts) == ["outer", "holes", "corner"]
    # two unit disks at distance 1: the lens has area 2 pi / 3 - sqrt(3) / 2
    a, b = Ball((0, 0), 1.0, name="a"), Ball((1, 0), 1.0, name="b")
    lens = 2 * math.pi / 3 - math.sqrt(3) / 2
    assert (a & b).volume.value == pytest.approx(lens, rel=0.01)
    assert (a | b).volume.value == pytest.approx(2 * math.pi - lens, rel=0.01)
    assert (a | b).parts["a"].area.value == pytest.approx(2 * math.pi * 2 / 3, rel=0.01)  # the arc outside b
    assert (a & b).boundary_area.value == pytest.approx(2 * 2 * math.pi / 3, rel=0.01)


@pytest.mark.parametrize("name, domain", [
    ("box", Box((0, -1, 2), (1, 1, 3))),
    ("ball", Ball((0.1, 0.2, 0.3, 0.4), 0.7)),
    ("shell", Shell((0, 0), 0.4, 1.0)),
    ("holes", perforated()),
    ("union", Ball((0, 0), 1.0) | Ball((1, 0), 1.0)),
    ("intersection", Ball((0, 0), 1.0) & Box((0, -2), (2, 2))),
    ("ball minus ball in 10D", Ball((0.0,) * 10, 1.0) - Ball((0.3,) + (0.0,) * 9, 0.4, name="hole")),
    ("box with named faces", Box((0, 0, 0), (2, 1, 1), faces=((0, "inlet"), (1, "outlet"), (5, "outlet")))),
    ("box with named faces minus a ball", Box((0, 0), (2, 1), faces=((3, "top"),)) - Ball((1, 0.5), 0.2, name="hole")),
])
def test_normals_are_unit_and_outward(name, domain):
    x = domain.sample_boundary(4000, rng(4))
    n = domain.boundary_normal(x)
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0)
    h = 1e-7
    assert domain.contains(x - h * n).all(), name
    assert not domain.contains(x + h * n).any(), name
    assert domain.contains(x).all()
    for part in domain.parts.values():  # each part's normal is the domain's
        y = part.sample(500, rng(5))
        assert np.allclose(part.normal(y), domain.boundary_normal(y))


def test_a_box_with_named_faces():
    """faces: (2k, name) names x_k = lo_k, (2k + 1, name) x_k = hi_k; the other faces keep the
    box's name. Each part's points lie on its own faces, in proportion to their areas; part_of
    finds them; areas are exact; naming every face leaves no part for the box's own name."""
    box = Box((0, 0, 0), (2, 1, 3), name="walls", faces=((0, "inlet"), (1, "outlet"), (5, "outlet")))
    assert list(box.parts) == ["walls", "inlet", "outlet"]
    assert box.parts["inlet"].area.value == 3.0 and box.parts["outlet"].area.value == 3.0 + 2.0
    assert box.parts["walls"].area.value == 2 * (1 * 3 + 2 * 3 + 2 * 1) - 8.0 and box.parts["walls"].area.exact
    for name, part in box.parts.items():
        x = part.sample(6000, rng(9))
        assert (box.part_of(x) == list(box.parts).index(name)).all(), name
        if name == "outlet":  # x0 = 2 (area 3) and x2 = 3 (area 2)
            assert np.isclose(x[:, 0], 2.0).mean() == pytest.approx(0.6, abs=0.02)
            assert (np.isclose(x[:, 0], 2.0) | np.isclose(x[:, 2], 3.0)).all()
    x = box.sample_boundary(20000, rng(10))
    assert (box.part_of(x) == 1).mean() == pytest.approx(3 / 22, abs=0.01)
    every = Box((0, 0), (1, 1), faces=tuple((i, "left" if i == 0 else "rest") for i in range(4)))
    assert list(every.parts) == ["left", "rest"] and every.parts["rest"].area.value == 3.0


def test_boundary_is_sampled_by_surface_measure_across_parts():
    domain = Shell((0, 0, 0), 0.5, 1.0)
    x = domain.sample_boundary(40000, rng(6))
    outer = np.linalg.norm(x, axis=1) > 0.75
    assert outer.mean() == pytest.approx(1 / 1.25, abs=0.01)  # areas 4 pi and pi


def test_bad_shapes_are_refused_and_empty_domains_said():
    with pytest.raises(ValueError, match="positive radius"):
        Ball((0, 0), -1.0)
    with pytest.raises(ValueError, match="0 < inner < outer"):
        Shell((0, 0), 1.0, 0.5)
    with pytest.raises(ValueError, match="lo < hi"):
        Box((0, 1), (1, 0))
    with pytest.raises(ValueError, match="dimensions 2 and 3"):
        Box((0, 0), (1, 1)) - Ball((0, 0, 0), 0.1)
    with pytest.raises(ValueError, match="appears to be empty"):
        (Ball((0, 0), 1.0) - Ball((0, 0), 2.0)).sample_interior(10, rng())


# -- problems on domains ----------------------------------------------------------------------

def annulus_problem():
    from mscalednn import PoissonProblem, parse_expression
    # u* = sin(x) e^y + x y: harmonic (f = 0), in the annulus 0.5 <= r <= 1.5 around the origin
    return PoissonProblem.on(Shell((0.0, 0.0), 0.5, 1.5), parse_expression("sin(x[0])*exp(x[1]) + x[0]*x[1]", 2),
                             "annulus")


def test_a_problem_on_a_domain_samples_trains_and_evaluates_inside_it():
    import torch
    from mscalednn import MLP, TrainConfig, seed_everything, solve
    from mscalednn.sampling import Sampler, test_points
    problem = annulus_problem()
    assert not problem.is_box and problem.lo == (-1.5, -1.5)
    assert problem.volume == pytest.approx(math.pi * (1.5 ** 2 - 0.25))
    assert problem.boundary_area == pytest.approx(2 * math.pi * 2.0)
    sampler = Sampler(problem, seed=0, dtype=torch.float64)
    for x in (sampler.interior(500), sampler.boundary(500), torch.as_tensor(test_points(problem, 500))):
        assert problem.geometry.contains(x.numpy()).all()
    r = torch.linalg.norm(sampler.boundary(4000), dim=1)
    assert ((r - 0.5).abs() < 1e-12).float().mean() == pytest.approx(0.25, abs=0.03)  # by circumference
    assert torch.allclose(problem.f(sampler.interior(50)), torch.zeros(50, dtype=torch.float64), atol=1e-9)
    seed_everything(0)
    result = solve(problem, MLP(2, width=24, depth=2), TrainConfig(steps=600, lr=1e-2, beta=10, n_interior=256,
                                                                   n_boundary=128, n_test=1000, dtype="float64",
                                                                   progress=False, eval_every=300))
    errors = [row["rel_l2"] for row in result.history if "rel_l2" in row]
    assert result.metrics["rel_l2"] < 2e-2 and result.metrics["rel_l2"] < 0.2 * errors[0]


def test_sobol_points_need_a_box():
    from mscalednn.errors import ConfigError
    from mscalednn.sampling import Sampler
    with pytest.raises(ConfigError, match="train.sampler: expected uniform points on a domain other than a box"):
        Sampler(annulus_problem(), "sobol")


def test_problem_files_state_domains():
    """The problem-file forms: a shape, a difference with named parts, and the box forms as before."""
    from pathlib import Path
    from mscalednn import load_problem
    root = Path(__file__).resolve().parents[1] / "problems"
    ball, _ = load_problem(root / "ball10d.yaml")
    assert isinstance(ball.domain, Ball) and ball.dim == 10 and ball.volume == pytest.approx(math.pi ** 5 / 120)
    holes, _ = load_problem(root / "perforated2d.yaml")
    assert list(holes.geometry.parts) == ["outer", "holes"]
    radii = [0.1, 0.08, 0.12, 0.09, 0.11]
    assert holes.volume == pytest.approx(1 - math.pi * sum(r * r for r in radii), rel=0.01)
    box, _ = load_problem(root / "poisson10d.yaml")
    assert box.is_box and box.domain is None


def test_every_shape_written_back_as_a_problem_file_spec_reads_as_the_same_shape():
    """``spec()`` (what a saved model keeps of its interface) reads back through the problem
    file's parser as an equal shape, for each primitive and each combination."""
    from mscalednn.config import read_shape
    shapes = [Box((0, 0), (1, 2), "walls", ((0, "left"), (3, "top"))), Ball((0.1, 0.2), 0.5, "b"),
              Shell((0, 0), 0.3, 1.0, "i", "o"),
              Box((0, 0), (1, 1)) - Ball((0.5, 0.5), 0.2, "hole") - Ball((0.2, 0.2), 0.1, "h2"),
              Ball((0, 0), 1) | Ball((1, 0), 1), Ball((0, 0), 1) & Box((0, -1), (2, 1))]
    for shape in shapes:
        assert read_shape(shape.spec(), 2, "interface") == shape
