"""Collocation points in the box and on its boundary, and the fixed test set.

Every random draw comes from a stream of its own, :func:`stream` (seed, purpose): NumPy's
``SeedSequence`` with the purpose as spawn key, so that the training points of seed s and the
test points of seed s (or the frequency monitor's sample) are independent even when the seeds
are equal.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.stats import qmc

from .errors import ConfigError
from .geometry import unit_box_boundary
from .problem import PoissonProblem

TRAIN, TEST, MONITOR, SCALING = 0, 1, 2, 3  # purposes: collocation points, test points, frequency
                                            # monitor sample, output scaling sample


def stream(seed: int, purpose: int, rank: int = 0) -> np.random.Generator:
    """The random generator for ``purpose`` (TRAIN, TEST, MONITOR) under ``seed``: distinct
    purposes give independent streams for any seeds, equal or not. ``rank``: the process of a
    data-parallel run (:mod:`mscalednn.distributed`); each draws its own points, and rank 0 the
    single process's."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose,) if rank == 0 else (purpose, rank)))


class Sampler:
    """Draws interior and boundary points, uniform random or scrambled Sobol (quasi-random).

    Boundary points pick a face with probability proportional to its area, then a point
    uniformly on it. All draws come from the ``purpose`` stream of ``seed`` and ``rank`` (TRAIN
    unless given; see :func:`stream`). ``on_device`` (uniform points only): draw them with a
    torch generator on ``device`` (seeded from that stream), so that a GPU run neither computes
    them on the host nor waits for their copy; the training loop does so on a GPU.
    """

    def __init__(self, problem: PoissonProblem, kind: str = "uniform", seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, purpose: int = TRAIN,
                 rank: int = 0, on_device: bool = False):
        if kind not in ("uniform", "sobol"):
            raise ValueError(f"sampler kind must be 'uniform' or 'sobol', got {kind!r}")
        if on_device and kind != "uniform":
            raise ValueError("on_device sampling draws uniform points only")
        self.shape = None if problem.is_box else problem.domain  # a domain other than the box
        if self.shape is not None and kind == "sobol":
            raise ConfigError("train.sampler", "expected uniform points on a domain other than a box (Sobol "
                              "points are drawn in the box)", kind)
        on_device = on_device and self.shape is None  # a domain is sampled on the host
        self.problem, self.kind, self.device, self.dtype = problem, kind, device, dtype
        self.rng = stream(seed, purpose, rank)
        self.generator = None
        if on_device:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(int(self.rng.integers(2**62)))
        d = problem.dim
        if kind == "sobol":
            self._sobol_in = qmc.Sobol(d, scramble=True, seed=self.rng)
            self._sobol_bd = qmc.Sobol(d, scramble=True, seed=self.rng)
        self._lo = np.asarray(problem.lo)
        self._width = np.asarray(problem.hi) - self._lo
        areas = np.repeat(np.asarray(problem.face_areas), 2)  # faces lo_0, hi_0, lo_1, ...
        self._face_cdf = np.cumsum(areas) / areas.sum()

    def state_dict(self) -> dict:
        """The position of every draw, as plain data (for a checkpoint): the generator's state and
        how many points each Sobol sequence has given."""
        engines = [getattr(self, name, None) for name in ("_sobol_in", "_sobol_bd")]
        return {"kind": self.kind, "rng": self.rng.bit_generator.state,
                "sobol": [e.num_generated if e is not None else 0 for e in engines],
                "on_device": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue the draws exactly where :meth:`state_dict` was taken (this sampler must have
        been made with the same problem, kind and seed: the Sobol scrambling comes from the seed)."""
        if state["kind"] != self.kind:
            raise ValueError(f"sampler state is for kind {state['kind']!r}, not {self.kind!r}")
        saved = state.get("on_device")
        if (saved is None) != (self.generator is None):
            where = "a GPU" if saved is not None else "the CPU"
            raise ConfigError("--resume", f"expected to resume on {where}, where the run drew its points (a GPU "
                              "run draws them on the device)", "cpu" if saved is not None else "cuda")
        if saved is not None:
            self.generator.set_state(saved)
        self.rng.bit_generator.state = state["rng"]
        if self.kind == "sobol":
            for engine, n in zip((self._sobol_in, self._sobol_bd), state["sobol"]):
                engine.reset()
                if n:  # scipy's fast_forward(0) fails
                    engine.fast_forward(n)

    def _unit(self, n: int, sobol: qmc.Sobol | None) -> np.ndarray:
        if sobol is None:
            return self.rng.random((n, self.problem.dim))
        with warnings.catch_warnings():  # Sobol prefers powers of two; any n is still valid
            warnings.simplefilter("ignore", UserWarning)
            return sobol.random(n)

    def _tensor(self, unit: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self._lo + unit * self._width, dtype=self.dtype, device=self.device)

    def _device_unit(self, n: int) -> torch.Tensor:
        return torch.rand(n, self.problem.dim, generator=self.generator, device=self.device, dtype=torch.float64)

    def interior(self, n: int) -> torch.Tensor:
        """n points in the box [n, d] (in the domain, for a domain other than the box)."""
        if self.shape is not None:
            return torch.as_tensor(self.shape.sample_interior(n, self.rng), dtype=self.dtype, device=self.device)
        if self.generator is not None:
            lo, width = (torch.as_tensor(a, device=self.device) for a in (self._lo, self._width))
            return (lo + self._device_unit(n) * width).to(self.dtype)
        return self._tensor(self._unit(n, self._sobol_in if self.kind == "sobol" else None))

    def boundary(self, n: int) -> torch.Tensor:
        """n points on the boundary [n, d]: a face by area, then uniform on it (the first unit
        coordinate chooses the face, the others fill its d - 1 free coordinates in order); on a
        domain other than the box, uniform on its boundary by surface measure."""
        if self.shape is not None:
            return torch.as_tensor(self.shape.sample_boundary(n, self.rng), dtype=self.dtype, device=self.device)
        if self.generator is not None:
            return self._device_boundary(n)
        u = self._unit(n, self._sobol_bd if self.kind == "sobol" else None)
        return self._tensor(unit_box_boundary(u, self._face_cdf))

    def _device_boundary(self, n: int) -> torch.Tensor:
        """:meth:`boundary` with the device's generator (:func:`mscalednn.geometry.unit_box_boundary` in torch)."""
        u, dev = self._device_unit(n), self.device
        cdf = torch.as_tensor(self._face_cdf, device=dev)
        face = torch.searchsorted(cdf, u[:, 0] * (1 - 1e-12), right=True)
        axis, side = face // 2, (face % 2).to(u.dtype)
        m = torch.arange(self.problem.dim - 1, device=dev)[None, :]
        point = torch.empty_like(u).scatter_(1, m + (m >= axis[:, None]), u[:, 1:])
        point[torch.arange(n, device=dev), axis] = side
        lo, width = (torch.as_tensor(a, device=dev) for a in (self._lo, self._width))
        return (lo + point * width).to(self.dtype)


def test_points(problem: PoissonProblem, n: int = 10000, seed: int = 12345) -> np.ndarray:
    """Fixed evaluation points: a uniform grid in 1D (n points) and 2D (about n points),
    uniform random points of the TEST stream of ``seed`` in higher dimension."""
    d = problem.dim
    if d > 2 or not problem.is_box:
        return problem.geometry.sample_interior(n, stream(seed, TEST))
    m = n if d == 1 else int(round(np.sqrt(n)))
    axes = [np.linspace(a, b, m) for a, b in zip(problem.lo, problem.hi)]
    return np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)
