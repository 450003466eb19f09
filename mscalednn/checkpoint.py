"""Checkpoints: the complete state of a training run, to continue it exactly where it stopped.

A checkpoint holds the network's weights, the optimizer (Adam's moments and step counts), the
learning-rate state (the schedule is a function of the step; a divergence retry scales it by
``lr_scale``), the random states (torch, NumPy, Python and the collocation sampler's own
generators), the step, the training time, the history, the current collocation batch, the
parameter average (``train.ema``) and,
from the caller (``meta``), the resolved config. Training from a checkpoint of step s gives the
same numbers as never stopping (CPU, float64: tests/test_reliability.py). A data-parallel run's
checkpoint (rank 0 writes it) also holds every rank's random state and points (``ranks``).

:func:`capture` takes a copy in memory (the training loop keeps the last good one to roll back
to after a divergence); :func:`write` puts it on disk atomically (temporary file, fsync,
rename), so a run killed while writing keeps its previous checkpoint. The file also carries
``model``/``in_dim``/``dtype``, so :func:`mscalednn.load_model` reads it like ``model.pt``.
Everything in it is plain data (numbers, strings, lists, dicts) and tensors, read with
``torch.load(weights_only=True)``: a file that holds anything else (a pickled object, which
could run code when loaded) is refused with one line, and nothing in it is run.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .outputs import load_plain, write_torch

CHECKPOINT = "checkpoint.pt"
FORMAT = 2  # 2: plain data only (format 1 pickled the random generators)


def _cpu_copy(obj):
    """A deep copy with every tensor detached and moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _numpy_state() -> dict:
    """NumPy's global generator state as plain data (lists, not arrays)."""
    state = np.random.get_state(legacy=False)
    return {**state, "state": {"key": state["state"]["key"].tolist(), "pos": state["state"]["pos"]}}


def capture(state, sampler) -> dict:
    """The training state (a :class:`mscalednn.train.TrainState`) and the sampler, copied."""
    return {"format": FORMAT, "step": state.step, "train_time": state.train_time,
            "history": [dict(row) for row in state.history], "lr_scale": state.lr_scale,
            "rollbacks": [dict(r) for r in state.rollbacks],
            "state_dict": _cpu_copy(state.model.state_dict()),
            "optimizer": _cpu_copy(state.optimizer.state_dict()), "phase": state.phase,
            "phases": [dict(p) for p in state.phases],
            "adaptations": [dict(a) for a in state.adaptations],
            "average": None if state.average is None else _cpu_copy(state.average.state_dict()),
            "batch": _cpu_copy(state.batch),
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(),
                    "python": random.getstate(), "sampler": sampler.state_dict(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}}


def restore(ckpt: dict, state, sampler, make_phase=None) -> None:
    """Put ``state`` (model, optimizer phase, step, history, batch), the sampler and the global
    random generators back to the checkpoint ``ckpt``; ``make_phase(index)`` builds the optimizer
    of a phase (needed when the checkpoint's phase is not the current one)."""
    weights = next((t for t in ckpt["state_dict"].values() if t.is_floating_point()), None)
    if weights is not None:  # a Gauss-Newton phase trains a float32 run's network in float64
        state.model.to(weights.dtype)
    state.model.load_state_dict(ckpt["state_dict"])
    if ckpt["phase"] != state.phase:
        state.phase, state.optimizer = ckpt["phase"], make_phase(ckpt["phase"])
    state.optimizer.load_state_dict(_cpu_copy(ckpt["optimizer"]))
    state.phases = [dict(p) for p in ckpt["phases"]]
    state.adaptations = [dict(a) for a in ckpt.get("adaptations", [])]
    average = ckpt.get("average")  # the parameter average (train.ema), restarted where none was kept
    state.restart_average()
    if state.average is not None and average is not None:
        state.average.load_state_dict(average)
    state.step, state.train_time, state.lr_scale = ckpt["step"], ckpt["train_time"], ckpt["lr_scale"]
    state.history = [dict(row) for row in ckpt["history"]]
    state.rollbacks = [dict(r) for r in ckpt["rollbacks"]]
    device = next(state.model.parameters()).device
    state.batch = None if ckpt["batch"] is None else tuple(t.to(device) for t in ckpt["batch"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state({**rng["numpy"], "state": {"key": np.asarray(rng["numpy"]["state"]["key"], dtype=np.uint32),
                                                   "pos": rng["numpy"]["state"]["pos"]}})
    random.setstate(rng["python"])
    sampler.load_state_dict(rng["sampler"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def rank_part(ckpt: dict) -> dict:
    """What differs between the ranks of a data-parallel run: the random state and the points."""
    return {"rng": ckpt["rng"], "batch": ckpt["batch"]}


def with_ranks(ckpt: dict, parts: list[dict]) -> dict:
    """``ckpt`` (rank 0's) holding every rank's :func:`rank_part` too, where there are several."""
    return ckpt if len(parts) == 1 else {**ckpt, "world_size": len(parts), "ranks": parts}


def for_rank(ckpt: dict, rank: int, size: int) -> dict:
    """The checkpoint as rank ``rank`` of ``size`` resumes it: its own random state and points. A
    resume needs as many processes as wrote the checkpoint (a ConfigError otherwise)."""
    written = ckpt.get("world_size", 1)
    if written != size:
        raise ConfigError("--resume", f"expected to resume with the {written} process(es) that wrote the checkpoint "
                          f"(torchrun --nproc-per-node {written}, or no torchrun for 1)", f"{size} process(es)")
    return ckpt if size == 1 else {**ckpt, **ckpt["ranks"][rank]}


def write(path: str | Path, ckpt: dict, meta: dict | None = None) -> None:
    """Write ``ckpt`` (plus ``meta``: model config, input dimension, resolved config, status)
    atomically to ``path``."""
    write_torch(Path(path), {**(meta or {}), **ckpt})


def read(run_dir: str | Path) -> dict:
    """The checkpoint of the run in ``run_dir``; a clear ConfigError if there is none or it is
    not readable."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not run_dir.is_dir():
        raise ConfigError("--resume", "expected an existing run directory", str(run_dir))
    if not path.is_file():
        raise ConfigError("--resume", f"expected a run directory holding {CHECKPOINT} (written by "
                          "mscale solve)", str(run_dir))
    ckpt = load_plain(path, "--resume")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError("--resume", f"expected a checkpoint of format {FORMAT}",
                          ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__,
                          source=str(path))
    return ckpt
