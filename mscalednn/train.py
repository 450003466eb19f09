"""The training loop: one readable function, hooks passed in.

    for each step:
        t = fraction of the budget used (steps or training time, whichever is further)
        set lr(t), beta(t); resample collocation points every k steps (on a GPU: drawn there)
        L = interior loss (Ritz or residual) + beta * boundary penalty, backward in chunks of points
        Adam step
        every log_every steps: log the loss terms (of the parameters before the step)
        every eval_every steps: the errors on the fixed test set and the loss, both at the new
            parameters, log
        train.ema: update the average of the parameters (averaging.py; Adam phases only)
        adaptive MscaleDNN at a budget fraction in model.adapt_at: find the unresolved waves in
            the residual, give them units (adapt.py); its time counts against the budget
        call the hooks (every step; they see whether errors were just evaluated)
        a NaN/Inf in the loss or parameters (the one host synchronisation of a step besides logging):
            f or g not finite on the batch is an error; else roll back to the last checkpoint,
            lower lr, retry
        every c steps, at the end and when asked to stop: checkpoint (checkpoint.py)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import adapt, averaging
from . import checkpoint as ckpt
from . import distributed, losses
from .config import TrainConfig
from .derivatives import RANDOM, chosen_operator, laplacian_operator, value_and_grad, value_grad_laplacian
from .forward_laplacian import auto_chunk, forward_laplacian, one_pass, supports
from .gauss_newton import MAX_ENERGY_PARAMETERS
from .errors import ConfigError
from .metrics import EvalSet, evaluate
from .nn import Piecewise, count_parameters
from .optimizers import Objective, backward_in_chunks, make_phase  # noqa: F401 (backward_in_chunks: public here)
from .problem import PoissonProblem, check_finite
from . import reference
from .progress import BudgetBar, budget_fraction
from .runtime import tf32
from .sampling import SCALING, Sampler

# staged boundary weight (docs/method.md section 2): multiplier from each fraction of training on
BETA_STAGES = ((0.0, 1.0), (0.1, 10.0), (0.2, 50.0), (0.25, 100.0), (0.5, 200.0), (0.75, 500.0))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call before building the model)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", "expected a device that exists: no CUDA device is available",
                          name, hint="use device: cpu or auto")
    return torch.device(name)


def learning_rate(config: TrainConfig, t: float) -> float:
    """lr at budget fraction t in [0, 1]: lr * r^t (exponential), lr * r^(min(floor(t (m + 1)), m) / m)
    (step: m = lr_drops drops, at t = 1/(m+1), ..., m/(m+1), the last part at lr * r),
    lr (r + (1 - r)(1 + cos pi t)/2) (cosine), with r = lr_final."""
    r = config.lr_final
    factor = {"constant": 1.0,
              "exponential": r ** t,
              "step": r ** (min(math.floor(t * (config.lr_drops + 1)), config.lr_drops) / config.lr_drops),
              "cosine": r + (1 - r) * 0.5 * (1 + math.cos(math.pi * t))}[config.lr_schedule]
    return config.lr * factor


def phases_of(config: TrainConfig) -> list[tuple[str, float]]:
    """(optimizer name, budget share at which it ends) for each phase of ``train.optimizer``
    as set (``auto``: see :func:`optimizer_schedule`)."""
    if isinstance(config.optimizer, str):
        return [(config.optimizer, 1.0)]
    return [(p.name, p.until) for p in config.optimizer]


# train.optimizer: auto: Adam for AUTO_ADAM_SHARE of the budget, then Gauss-Newton, where it can
# run, the budget is at least AUTO_GN_MIN_STEPS steps and AUTO_GN_MIN_SECONDS (with a time limit)
# and the float64 Jacobian of one step's points is at most AUTO_GN_MAX_JACOBIAN bytes (a few
# seconds a step on 2 cores; measured in benchmarks/RESULTS.md, "Gauss-Newton after Adam")
AUTO_ADAM_SHARE, AUTO_GN_MIN_STEPS, AUTO_GN_MIN_SECONDS, AUTO_GN_MAX_JACOBIAN = 0.8, 2000, 30.0, 2**30


def gauss_newton_obstacle(config: TrainConfig, problem: PoissonProblem, model: torch.nn.Module,
                          world_size: int = 1) -> tuple[str, str] | None:
    """Why ``gauss_newton`` cannot train this run (``config.loss``: the loss chosen), as (what
    was expected, what was got), or None where it can."""
    size = count_parameters(model)
    for blocked, expected, got in (
            (isinstance(model, Piecewise), "expected adam or lbfgs with an interface (gauss_newton linearises one "
             "network's residual, without interface conditions)", "gauss_newton"),
            (world_size > 1, "expected adam or lbfgs in a data-parallel run (gauss_newton solves with every point's "
             "Jacobian row in one process)", f"gauss_newton in {world_size} processes"),
            (problem.mixed, "expected adam or lbfgs for Neumann or Robin conditions (gauss_newton fits u = g on the "
             "boundary only)", "gauss_newton"),
            (not problem.operator.is_laplace, "expected adam or lbfgs for an operator other than -Laplace "
             "(gauss_newton linearises -Laplace u only)", f"gauss_newton on {problem.operator.describe()}"),
            (not supports(model), "expected a model the forward Laplacian knows (MLP or MscaleDNN) for gauss_newton",
             type(model).__name__),
            (config.loss == "ritz" and size > MAX_ENERGY_PARAMETERS, f"expected a network of at most "
             f"{MAX_ENERGY_PARAMETERS} parameters for gauss_newton with the Ritz loss (its P x P energy Gram is "
             "formed), or the residual loss", f"{size} parameters")):
        if blocked:
            return expected, got
    return None


def optimizer_schedule(config: TrainConfig, problem: PoissonProblem, model: torch.nn.Module,
                       world_size: int = 1) -> tuple[list[tuple[str, float]], str]:
    """The phases this run trains with, as (name, until), and why (``config.loss``: the loss
    chosen). ``auto``: Adam, then from ``AUTO_ADAM_SHARE`` of the budget Gauss-Newton where it can
    run and its steps are affordable (the budget and the Jacobian's size, above); that phase
    hands back to Adam where its first steps do not lower the loss on fresh points
    (:class:`mscalednn.optimizers.GaussNewtonPhase`). A Gauss-Newton phase set where it cannot
    run is a ConfigError."""
    obstacle = gauss_newton_obstacle(config, problem, model, world_size)
    if config.optimizer != "auto":
        schedule = phases_of(config)
        if obstacle is not None and any(name == "gauss_newton" for name, _ in schedule):
            raise ConfigError("train.optimizer", obstacle[0], obstacle[1])
        return schedule, "set"
    rows = config.n_interior * (problem.dim if config.loss == "ritz" else 1) + config.n_boundary
    jacobian = rows * count_parameters(model) * 8  # float64: the phase trains in float64
    why = ("gauss_newton cannot run here" if obstacle is not None else
           f"a budget under {AUTO_GN_MIN_STEPS} steps or {AUTO_GN_MIN_SECONDS:g} s is Adam's"
           if config.steps < AUTO_GN_MIN_STEPS or (config.time_limit or math.inf) < AUTO_GN_MIN_SECONDS else
           f"a Gauss-Newton step's Jacobian would take {jacobian / 2**20:.0f} MiB (at most "
           f"{AUTO_GN_MAX_JACOBIAN / 2**20:.0f})" if jacobian > AUTO_GN_MAX_JACOBIAN else None)
    if why is not None:
        return [("adam", 1.0)], f"auto: adam ({why})"
    return ([("adam", AUTO_ADAM_SHARE), ("gauss_newton", 1.0)],
            f"auto: adam, then gauss_newton from {AUTO_ADAM_SHARE:.0%} of the budget (back to adam if its first "
            "steps do not lower the loss on fresh points)")


def boundary_weight(config: TrainConfig, t: float) -> float:
    """beta at budget fraction t: fixed, or beta times the staged multiplier."""
    if config.beta_schedule == "fixed":
        return config.beta
    return config.beta * [m for start, m in BETA_STAGES if t >= start][-1]


def compile_loss(fn: Callable) -> Callable:
    """``torch.compile(fn)``, falling back to ``fn`` with a warning if compiling fails (it needs
    a C++ compiler on the CPU). Fuses the forward Laplacian's elementwise work: ~15-20% per
    step at d = 10 on the development machine, after a compilation of 10-20 s."""
    state = {"fn": torch.compile(fn)}

    def call(*args):
        try:
            return state["fn"](*args)
        except Exception as exc:  # any compile failure: run eagerly, say so once
            if state["fn"] is fn:
                raise
            warnings.warn(f"train.compile: torch.compile failed ({type(exc).__name__}: {exc}); running "
                          "without it", stacklevel=2)
            state["fn"] = fn
            return fn(*args)

    return call


COMPILE_MIN_STEPS, COMPILE_MIN_SECONDS = 5000, 120.0  # train.compile: auto compiles budgets at least this long


def compile_decision(config: TrainConfig, device: torch.device, piecewise: bool = False) -> tuple[bool, str]:
    """Whether the interior loss runs under torch.compile, and why. ``true`` / ``false`` as set;
    ``auto`` compiles where the budget amortises the 10-20 s of compiling (at least
    ``COMPILE_MIN_STEPS`` steps and, with a time limit, ``COMPILE_MIN_SECONDS``; measured: 1.27x
    the steps per second on poisson10d and 1.3x on poisson50d, 2 cores) and a compiler exists
    (a C++ compiler on the CPU, Triton on a GPU)."""
    if config.compile != "auto":
        return bool(config.compile), f"train.compile: {str(config.compile).lower()}"
    if config.loss == "ritz":  # its grad u comes from a reverse pass, which torch.compile refuses here
        return False, "auto: the Ritz loss's reverse pass for grad u does not compile"
    if piecewise:  # the sides are told apart on the host, and the flux needs a reverse pass
        return False, "auto: the loss with interface conditions does not compile"
    if config.steps < COMPILE_MIN_STEPS or (config.time_limit is not None and config.time_limit < COMPILE_MIN_SECONDS):
        return False, (f"auto: a budget under {COMPILE_MIN_STEPS} steps or {COMPILE_MIN_SECONDS:g} s does not "
                       "amortise compiling")
    if device.type == "cuda":
        found = importlib.util.find_spec("triton") is not None
        return found, "auto: " + ("Triton found" if found else "no Triton (it comes with CUDA builds of PyTorch)")
    compiler = next((c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c and shutil.which(c)), None)
    return compiler is not None, "auto: " + (f"C++ compiler {compiler}" if compiler else "no C++ compiler found")


def _interior_loss(problem: PoissonProblem, model: torch.nn.Module, config: TrainConfig):
    """The interior loss (x, f) -> mean over x (f: the batch's interior data,
    :meth:`mscalednn.problem.PoissonProblem.interior_data`), and the boundary penalty's weight.

    Ritz needs grad u only: one reverse pass (``auto``, ``autograd``) or the forward Jacobian
    (``forward``); ``hutchinson`` and ``sampled`` estimate a Laplacian the Ritz loss does not
    use, so the config refuses them. The residual loss needs Laplace u (and grad u where the
    operator's a varies): the configured derivatives (``auto``:
    :func:`mscalednn.derivatives.chosen_operator`); with an estimator, the product of two
    independent estimates of the residual at every point
    (:func:`mscalednn.losses.residual_interior_unbiased`), each from half of the ``probes``.
    """
    op = problem.operator
    if isinstance(model, Piecewise):
        return _interface_loss(problem, model, config), 1.0
    if config.loss == "ritz":
        if config.derivatives == "forward" and supports(model):
            def grad(x):
                u, g, _ = forward_laplacian(model, x)
                return u, g
        else:
            grad = partial(value_and_grad, model)
        return (lambda x, f: losses.ritz_interior(*grad(x), f, problem.volume, op)), problem.boundary_area
    operator = derivatives_of(config, problem, model)
    if operator in RANDOM:  # half the probes for each of two independent estimates
        estimate = laplacian_operator(operator, model, half_probes(config.probes))

        def unbiased(x, f):
            u, _, lap = estimate(torch.cat([x, x]))  # fresh directions at every point: independent halves
            return losses.residual_interior_unbiased(*lap.chunk(2), f, u.chunk(2)[0], op)

        return unbiased, 1.0
    if operator in ("auto", "forward") and supports(model):
        laplacian = partial(forward_laplacian, model, need_grad=op.needs_grad)  # grad u only where a varies
    else:
        laplacian = laplacian_operator(operator, model, config.probes)

    def residual(x, f):
        u, grad_u, lap = laplacian(x)
        return losses.residual_interior(lap, f, u, grad_u, op)

    return residual, 1.0


def training_objective(problem: PoissonProblem, model: torch.nn.Module, config: TrainConfig, compiled: bool = False,
                       world: distributed.World = distributed.SINGLE) -> Objective:
    """The objective a run trains (``config.loss``: the loss chosen, not ``auto``; :func:`solve`
    resolves it), with its interior loss and the network's forward for the boundary penalty under
    torch.compile where ``compiled``."""
    interior_loss, bc_weight = _interior_loss(problem, model, config)
    return Objective(model, compile_loss(interior_loss) if compiled else interior_loss, interior_loss,
                     bc_weight, config.chunk or auto_chunk(model, jacobian_rows(config, problem, model)),
                     problem.volume if config.loss == "ritz" else None, world,
                     compile_loss(model) if compiled else None)


def build_network(model_config, config: TrainConfig, problem: PoissonProblem) -> torch.nn.Module:
    """A new network of ``model_config`` (:class:`mscalednn.config.ModelConfig`) for ``problem``:
    one network, or one per side of the problem's interface where the residual loss is chosen."""
    interface = problem.interface if chosen_loss(config, problem)[0] == "residual" else None
    return model_config.build(problem.dim, interface)


def check_piecewise(model: torch.nn.Module, config: TrainConfig, problem: PoissonProblem) -> None:
    """ConfigError where a network per side of an interface (:class:`mscalednn.nn.Piecewise`)
    cannot train as configured (``config.loss``: the loss chosen, not ``auto``)."""
    if not isinstance(model, Piecewise):
        return
    if config.loss != "residual" or problem.interface is None:
        raise ConfigError("train.loss", "expected the residual loss and a problem with an interface for a network "
                          "per side (the Ritz energy does not see a jump of u between them)", config.loss)
    if config.derivatives in RANDOM:
        raise ConfigError("train.derivatives", "expected auto, forward or autograd with an interface (each side's "
                          "residual needs its exact Laplacian and the flux its gradient)", config.derivatives)
    if any(name == "gauss_newton" for name, _ in phases_of(config)):
        raise ConfigError("train.optimizer", *gauss_newton_obstacle(config, problem, model))


def interface_weights(config: TrainConfig) -> tuple[float, float]:
    """(w_u, w_f) of the interface terms: ``train.interface_weights``, else (beta, sqrt(beta)):
    the jump of u weighed like the boundary penalty u - g, the jump of the flux a du/dn (one
    derivative of u, where the residual has two) by the geometric mean of beta and the residual's
    weight 1."""
    if config.interface_weights is not None:
        return tuple(float(w) for w in config.interface_weights)
    return config.beta, math.sqrt(config.beta)


def _interface_loss(problem: PoissonProblem, model: Piecewise, config: TrainConfig):
    """The residual loss with interface conditions for a network per side of
    ``problem.interface``: (x, f) -> mean over x of each side's residual squared (the inner
    network's inside the shape, the outer's outside), plus the interface terms
    (:func:`mscalednn.losses.interface_terms`, weights :func:`interface_weights`) on
    ``n_boundary`` points of the interface drawn once from the run's seed. Called per chunk of
    points, it adds the interface terms to each chunk's mean, so a chunked backward pass sums
    them once. a on each side is the coefficient a step of 1e-7 x diam(Omega) off the surface."""
    op, (w_u, w_f) = problem.operator, interface_weights(config)
    x_s, normal = problem.interface_points(config.n_boundary, config.seed)
    step = 1e-7 * float(torch.tensor(problem.hi, dtype=torch.float64).sub(torch.tensor(problem.lo)).norm())
    a_in, a_out = (op.coefficients(x_s + sign * step * normal)[0].detach() for sign in (-1.0, 1.0))
    on = {}  # the interface tensors in the batch's dtype and device

    def side(net, x, f):
        if x.shape[0] == 0:
            return x.new_zeros(0)
        if supports(net):
            u, grad, lap = forward_laplacian(net, x, need_grad=op.needs_grad)
        else:
            u, grad, lap = value_grad_laplacian(net, x)
        return op.residual(f, u, grad, lap)

    def loss(x, f):
        key = (x.dtype, x.device)
        if key not in on:
            on[key] = [t.to(dtype=x.dtype, device=x.device) for t in (x_s, normal, a_in, a_out)]
        xs, n, ai, ao = on[key]
        inside = model.inside(x)
        r = torch.cat([side(model.inner, x[inside], f[inside]), side(model.outer, x[~inside], f[~inside])])
        u_in, grad_in = value_and_grad(model.inner, xs)
        u_out, grad_out = value_and_grad(model.outer, xs)
        jump_u, jump_flux = losses.interface_terms(u_in, grad_in, u_out, grad_out, n, ai, ao)
        return r.square().mean() + w_u * jump_u + w_f * jump_flux

    return loss


def derivatives_of(config: TrainConfig, problem: PoissonProblem, model: torch.nn.Module) -> str:
    """The derivative method a run uses (:func:`mscalednn.derivatives.chosen_operator`); ``auto``
    keeps the exact forward Laplacian where the operator needs grad u (an estimator gives none)."""
    chosen = chosen_operator(config.derivatives, config.loss, problem.dim, config.probes, one_pass(model))
    if chosen in RANDOM and problem.operator.needs_grad:
        if config.derivatives == "auto":
            return "auto"
        raise ConfigError("train.derivatives", "expected auto, forward or autograd for a problem whose coefficient a "
                          f"varies (the residual needs grad u, which {chosen} does not give)", config.derivatives)
    return chosen


ROUGH = 11.0  # train.loss: auto takes the Ritz loss where a's roughness exceeds this (README, "Operators")


def chosen_loss(config: TrainConfig, problem: PoissonProblem) -> tuple[str, str]:
    """The loss a run uses, and why. ``auto``: the residual loss, except where the coefficient a
    jumps (``where``: the strong form misses the interface condition; unless the problem states
    the interface, where the residual loss with interface conditions trains a network per side:
    measured better on 3 of 4 problems, README "Interfaces") or oscillates, with the
    roughness diam(Omega) rms|grad a| / rms(a) (on 4,096 points) above ``ROUGH``: there the
    residual of every smooth function carries grad a . grad u, larger than f, and training sits
    at u = 0. The threshold separates six measured problems (90 s each, both losses; README,
    "Operators"): the residual loss won at roughness 2.0, 5.5 and 9.2, Ritz at 13.3, 49 and 55."""
    if config.loss != "auto":
        return config.loss, "set"
    op = problem.operator
    if op.a is None:
        return "residual", "auto: a = 1"
    if op.jumps and problem.interface is not None:
        return "residual", "auto: a jumps across the interface the problem states"
    if op.jumps:
        return "ritz", "auto: a is piecewise (where)"
    x = problem.points(4096, torch.Generator().manual_seed(0))
    a, grad_a, _, _ = op.coefficients(x)
    diameter = float(torch.tensor(problem.hi, dtype=torch.float64).sub(torch.tensor(problem.lo)).norm())
    rough = diameter * float(grad_a.detach().norm(dim=1).square().mean().sqrt()) / float(a.detach().square().mean().sqrt())
    return ("ritz" if rough > ROUGH else "residual"), f"auto: roughness of a {rough:.3g} ({'above' if rough > ROUGH else 'at most'} {ROUGH:g})"


def half_probes(probes: int) -> int:
    """The directions of each of the two independent estimates an estimator's loss takes."""
    return max(1, probes // 2)


def jacobian_rows(config: TrainConfig, problem: PoissonProblem, model: torch.nn.Module) -> int:
    """Rows of the input Jacobian the interior loss carries per point through a hidden layer: d,
    or the estimator's directions (two estimates of ``probes / 2``; the sampled axes at most d
    each); 1 where the exact Laplacian is one pass (no [points, d, units] tensor is built)."""
    operator, dim = derivatives_of(config, problem, model), problem.dim
    if operator not in RANDOM:
        return 1 if operator in ("auto", "forward") and one_pass(model) else dim
    half = half_probes(config.probes)
    return 2 * (min(half, dim) if operator == "sampled" else half)


@dataclass
class TrainState:
    """What the hooks see after every step (``evaluated``: the errors were just measured and
    appended to ``history``), and what a checkpoint holds (``lr_scale``: the learning rate's
    factor after divergence retries; ``batch``: the current collocation points and f, g there;
    ``phase``: the index of the optimizer phase, ``optimizer`` its update rule,
    :mod:`mscalednn.optimizers`; ``phases``: the steps at which each phase ran; ``adaptations``: what each adaptation of an
    adaptive MscaleDNN found and placed, :class:`mscalednn.adapt.Adaptation`; ``ema``: the decay of the
    parameter average ``average``, kept while an Adam phase runs, :mod:`mscalednn.averaging`)."""

    step: int
    model: torch.nn.Module
    optimizer: object
    history: list[dict] = field(default_factory=list)
    train_time: float = 0.0
    evaluated: bool = False
    lr_scale: float = 1.0
    rollbacks: list[dict] = field(default_factory=list)
    batch: tuple[torch.Tensor, ...] | None = None
    phase: int = 0
    phases: list[dict] = field(default_factory=list)
    adaptations: list[dict] = field(default_factory=list)
    ema: float | None = None
    average: torch.nn.Module | None = None

    def restart_average(self) -> None:
        """A fresh parameter average of the current network while an Adam phase runs (none in a
        second-order phase, or without ``ema``)."""
        self.average = averaging.start(self.model, self.ema if self.optimizer.scheduled else None)


@dataclass
class SolveResult:
    model: torch.nn.Module
    history: list[dict]
    metrics: dict


@dataclass
class Checkpointing:
    """Where and how often :func:`solve` writes checkpoints (``checkpoint.py``): every
    ``config.checkpoint_every`` steps, at the end, and when ``stop`` asks to stop. ``meta`` goes
    into every file (the model config and resolved config a resume needs)."""

    path: Path
    meta: dict = field(default_factory=dict)


def output_scaling(problem: PoissonProblem, seed: int, n: int = 2048) -> tuple[float, float]:
    """(shift, scale) for a network's output, u = shift + scale * y, from the Dirichlet data g on
    n boundary points of their own (never u* inside the domain): shift = mean g, scale = std g, or
    1 where g is constant (or no part is Dirichlet: g is then not a value of u). With it the raw
    network starts at the level of u* and fits variations of unit
    size at any d: otherwise Adam spends thousands of steps moving the output to the mean of u*
    (a plateau; e.g. 25 for a sum of fifty one-dimensional terms). The source f is not used: its
    size over-states u's by |k|^2 for a solution with high frequencies (150x on
    poisson1d_multiscale by rms f / lambda_1), and too large a scale starts the network far off."""
    data = problem.boundary_data(Sampler(problem, "uniform", seed, dtype=torch.float64, purpose=SCALING).boundary(n))
    g = data if data.dim() == 1 else data[data[:, 2] == 0, 0]  # Dirichlet points: beta = 0
    if g.numel() < 2:
        return 0.0, 1.0
    shift, spread = float(g.mean()), float(g.std())
    return shift, (spread if spread > 1e-12 * (1 + abs(shift)) else 1.0)


def _finite(loss: torch.Tensor, model: torch.nn.Module) -> bool:
    """The loss and every parameter are finite (one synchronisation)."""
    flags = [torch.isfinite(loss)] + [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all())


def solve(problem: PoissonProblem, model: torch.nn.Module, config: TrainConfig = TrainConfig(),
          hooks: Sequence[Callable[[TrainState], None]] = (), checkpoint: Checkpointing | None = None,
          resume: dict | None = None, stop: Callable[[], bool] | None = None) -> SolveResult:
    """Train ``model`` to solve ``problem``; returns the model, the history and final metrics.

    ``metrics["status"]`` is ``completed``, ``diverged`` (a NaN/Inf in the loss or the
    parameters came back after ``config.max_retries`` roll-backs to the last good checkpoint,
    each lowering the learning rate by ``config.retry_lr_factor``; the model is left at that
    checkpoint) or ``interrupted`` (``stop()`` returned True; a checkpoint was written). Only a
    completed run reports errors. ``resume``: a checkpoint (:func:`mscalednn.checkpoint.read`)
    to continue from. The time budget (``config.time_limit``) counts training steps only.

    In a process group (``torchrun``; :mod:`mscalednn.distributed`) every rank calls this with
    the same arguments and trains the same network on points of its own; rank 0 alone writes
    the checkpoint and shows the progress bar, and the hooks run on every rank. On a GPU the
    float32 matrix products are full float32 unless ``config.tf32``.
    """
    config = dataclasses.replace(config, loss=chosen_loss(config, problem)[0])
    if config.loss == "ritz" and config.derivatives in RANDOM:
        raise ConfigError("train.derivatives", "expected auto, forward or autograd with the Ritz loss (train.loss: auto "
                          "chose it for this problem's coefficient a; it needs grad u only)", config.derivatives)
    check_piecewise(model, config, problem)
    if not isinstance(model, Piecewise) and config.loss == "residual" and problem.operator.jumps:
        warnings.warn(f"{problem.name}: the coefficient a is piecewise (where): the residual loss does not see the "
                      "jump of a du/dn across its interface and converges to another solution; use train.loss=ritz, or "
                      "state the interface in the problem file (interface:) for a network per side",
                      stacklevel=2)
    if not problem.has_solution:  # errors against a computed solution (the CLI keeps it in the run directory)
        problem = problem.with_reference(reference.compute(problem))
    with tf32(config.tf32):
        return _train(problem, model, config, hooks, checkpoint, resume, stop)


def _train(problem: PoissonProblem, model: torch.nn.Module, config: TrainConfig, hooks, checkpoint: Checkpointing | None,
           resume: dict | None, stop: Callable[[], bool] | None) -> SolveResult:
    world = distributed.current()
    device, dtype = resolve_device(config.device), getattr(torch, config.dtype)
    model.to(device=device, dtype=dtype)
    world.broadcast_module(model)  # one network: rank 0's initial weights everywhere
    sampler = Sampler(problem, config.sampler, config.seed, device, dtype, rank=world.rank,
                      on_device=device.type == "cuda" and config.sampler == "uniform")
    if world.rank > 0 and resume is None:  # this rank's own random directions (Hutchinson's probes)
        torch.manual_seed(int(np.random.SeedSequence(config.seed, spawn_key=(world.rank,)).generate_state(1)[0]))
    test = EvalSet.build(problem, config.n_test)
    if config.scale_output and resume is None and hasattr(model, "set_output_scaling"):
        model.set_output_scaling(*output_scaling(problem, config.seed))
    check_finite(problem, **{"the exact solution u*": (test.x, torch.as_tensor(test.u)),
                             **({} if test.grad_u is None else {"grad u*": (test.x, torch.as_tensor(test.grad_u))})})
    compiled = compile_decision(config, device, isinstance(model, Piecewise))[0]
    objective = training_objective(problem, model, config, compiled, world)
    schedule = optimizer_schedule(config, problem, model, world.size)[0]

    def phase(index: int, previous=None):
        return make_phase(schedule[index][0], objective, config, index, previous)

    state = TrainState(0, model, phase(0), ema=config.ema)
    state.restart_average()
    if resume is not None:
        ckpt.restore(ckpt.for_rank(resume, world.rank, world.size), state, sampler, phase)
    good = ckpt.capture(state, sampler)  # the state a divergence rolls back to

    def save(status: str) -> None:
        nonlocal good
        good = ckpt.capture(state, sampler)
        if checkpoint is not None:
            ranks = world.gather(ckpt.rank_part(good))  # every rank's random state and points
            if world.is_main:
                ckpt.write(checkpoint.path, ckpt.with_ranks(good, ranks), {**checkpoint.meta, "status": status})

    if checkpoint is not None and resume is None:
        save("running")  # step 0: an unwritable path or a full disk fails here, before training
    bar = BudgetBar(config.steps, config.time_limit, state.step, state.train_time,
                    enabled=config.progress and world.is_main)
    start = time.perf_counter()
    status = "completed"
    while True:
        step, t0 = state.step + 1, time.perf_counter()
        t = budget_fraction(config.steps, config.time_limit, step - 1, state.train_time)
        new_phase = False
        while state.phase + 1 < len(schedule) and t >= schedule[state.phase][1]:
            state.phase, new_phase = state.phase + 1, True  # hand over to the next optimizer (fresh state)
        if new_phase:  # the next optimizer starts from the network the run reports (the average)
            averaging.adopt(model, state.average)
            state.optimizer = phase(state.phase, state.optimizer)
            state.restart_average()
        name = "adam" if getattr(state.optimizer, "gave_up", False) else schedule[state.phase][0]
        if not state.phases or (state.phases[-1]["index"], state.phases[-1]["name"]) != (state.phase, name):
            if state.phases and state.phases[-1]["index"] == state.phase:  # Gauss-Newton handed back to Adam
                state.restart_average()
            state.phases.append({"index": state.phase, "name": name, "from_step": step})
        lr = (learning_rate(config, t) if state.optimizer.scheduled else 1.0) * state.lr_scale
        beta = boundary_weight(config, t)
        resample = (step - 1) % config.resample_every == 0 and not state.optimizer.fixed_points
        if state.batch is None or resample or new_phase:
            x_in, x_bd = sampler.interior(config.n_interior), sampler.boundary(config.n_boundary)
            state.batch = (x_in, x_bd, problem.interior_data(x_in), problem.boundary_data(x_bd))
        loss, interior, bc = state.optimizer.step(state.batch, lr, beta)
        if not _finite(loss, model):  # caught at the step it appears; never reported as a result
            # first: a source or boundary data not finite at a point of the batch is the problem's fault
            x_in, x_bd, f, g = state.batch
            check_finite(problem, **{"the source f": (x_in, f), "the boundary data g": (x_bd, g)})
            retry = len(state.rollbacks) < config.max_retries
            scale = state.lr_scale * config.retry_lr_factor if retry else state.lr_scale
            event = {"step": step, "to_step": good["step"] if retry else None,
                     "lr_scale": scale if retry else None}
            events = state.rollbacks + [event]
            ckpt.restore(good, state, sampler, phase)  # its roll-back record and lr scale are older than ours
            state.rollbacks, state.lr_scale = events, scale
            if not retry:
                status = "diverged"
                break
            tqdm.write(f"mscale: warning: non-finite loss or parameters at step {step}; rolled back to step "
                       f"{event['to_step']} with the learning rate x{scale:g} (retry "
                       f"{len(events)} of {config.max_retries})", file=sys.stderr)
            continue
        if state.average is not None:
            state.average.update_parameters(model)
        # the slowest rank's time (the budget ends on the same step everywhere); a stop asked on any
        seconds, asked = world.max(time.perf_counter() - t0, float(stop is not None and stop()))
        state.step, state.train_time = step, state.train_time + seconds
        used = lambda seconds: budget_fraction(config.steps, config.time_limit, step, state.train_time + seconds)  # noqa: E731
        if adapt.due(model, used(0.0), state.adaptations):
            t1 = time.perf_counter()
            record = None if not world.is_main else adapt.adapt(
                model, problem, state.batch, beta, step, config.seed, len(state.adaptations), used,
                adapt.share_left(state.adaptations)).to_dict()
            state.adaptations.append(world.broadcast(record))  # rank 0 estimates, every rank gets its units
            world.broadcast_module(model)
            state.train_time += world.max(time.perf_counter() - t1)[0]  # the estimation is training time
            state.restart_average()  # new units: the average restarts at the new network
        done = step == config.steps or (config.time_limit is not None and state.train_time >= config.time_limit)
        # every row holds numbers measured at the parameters after ``step`` updates: this step's
        # loss was taken before its update, so it is the row of step - 1
        if (step - 1) % config.log_every == 0 and not (state.history and state.history[-1]["step"] == step - 1):
            state.history.append({"step": step - 1, "loss": loss.item(), "loss_interior": interior.item(),
                                  "loss_boundary": bc.item(), "beta": beta})
            bar.update(step, state.train_time, loss=state.history[-1]["loss"])
        else:
            bar.update(step, state.train_time)
        state.evaluated = step % config.eval_every == 0 or done or step == 1
        # the loss, errors and hooks see the reported network: the average where one is kept
        with averaging.swapped_in(model, state.average if state.evaluated or hooks else None):
            if state.evaluated:  # the loss again, at the parameters the errors are measured at; in a
                # forked generator, so that a recorded loss (Hutchinson's probes) cannot change training
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    interior_now, bc_now = objective.terms(state.batch)
                record = {"step": step, "loss": interior_now + beta * bc_now, "loss_interior": interior_now,
                          "loss_boundary": bc_now, "beta": beta, **evaluate(model, test, world=world), "lr": lr,
                          "train_time_s": state.train_time, "elapsed_s": time.perf_counter() - start}
                state.history.append(record)
                bar.update(step, state.train_time, loss=record["loss"], rel_l2=record["rel_l2"])
            for hook in hooks:
                hook(state)
        stopping = asked > 0
        if done or stopping or step % config.checkpoint_every == 0:
            save("completed" if done else "interrupted" if stopping else "running")
        if done or stopping:
            status = "completed" if done else "interrupted"
            break
    bar.close()
    averaging.adopt(model, state.average)  # the result is the network whose errors were reported
    wall = time.perf_counter() - start
    final = state.history[-1] if status == "completed" else {}  # the evaluation of the last step
    metrics = {"status": status, **{k: final.get(k) for k in ("rel_l2", "rel_max", "rel_h1", "loss")},
               "steps": state.step, "wall_time_s": wall, "train_time_s": state.train_time,
               "steps_per_s": state.step / max(state.train_time, 1e-12), "device": str(device),
               "world_size": world.size, "compiled": compiled,
               "dtype": config.dtype, "lr_scale": state.lr_scale, "rollbacks": state.rollbacks,
               "optimizer": [{**p, "to_step": (state.phases[i + 1]["from_step"] - 1 if i + 1 < len(state.phases)
                                               else state.step)} for i, p in enumerate(state.phases)],
               "loss_kind": config.loss, "derivatives": derivatives_of(config, problem, model), "reference": problem.reference_kind,
               "reference_error": None if problem.reference is None else problem.reference.error,
               "absolute_errors": test.absolute, "adaptations": state.adaptations,
               "output_scaling": {k: float(getattr(model, f"output_{k}", v)) for k, v in (("shift", 0.0), ("scale", 1.0))}}
    return SolveResult(model, state.history, metrics)
