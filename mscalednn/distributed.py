"""Data parallelism over processes: torch.distributed, launched by ``torchrun``.

    torchrun --nproc-per-node 2 -m mscalednn solve problems/poisson10d.yaml

Every process (rank) holds the whole network and draws its own collocation points (a stream of
its own from the run seed and the rank, :func:`mscalednn.sampling.stream`), so the effective
batch is ``world_size`` times ``train.n_interior`` and ``train.n_boundary``. After each backward
pass the gradients and the loss terms are averaged over the ranks in one all-reduce (a mean of
equal-sized means: the gradient of the loss on the union of the points), so every rank takes
the same optimizer step and the parameters stay identical. Everything that decides the control
flow is agreed on: the step's training time (the slowest rank's, so the time budget ends on
the same step everywhere), a stop request (a signal on any rank stops all), and the adaptive
MscaleDNN's wave estimation (made on rank 0, its result broadcast). Evaluation is sharded
over the ranks and reduced. Rank 0 alone prints and writes files; a checkpoint holds every
rank's random state and points, so a resume with the same number of processes continues
exactly.

This is what ``torch.nn.parallel.DistributedDataParallel`` does, done by hand because the loss
walks the network's layers itself (the forward Laplacian) and runs its backward pass in chunks
of points: one all-reduce per step, after the last chunk.

A single process is :data:`SINGLE`: every method returns its input, nothing is communicated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """The processes training one network: this one's ``rank`` of ``size``."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes files."""
        return self.rank == 0

    def average_gradients(self, params: list[torch.nn.Parameter], *scalars: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Replace every parameter's gradient by its mean over the ranks, and return the mean of
        each scalar tensor (the loss terms); one all-reduce of one flat buffer."""
        if self.size == 1:
            return scalars
        params = [p for p in params if p.grad is not None]  # the same on every rank: the same code ran
        dtype = params[0].grad.dtype if params else torch.float64
        flat = torch.cat([p.grad.reshape(-1) for p in params] + [s.detach().reshape(1).to(dtype) for s in scalars])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()
        return tuple(flat[offset + i].to(s.dtype) for i, s in enumerate(scalars))

    def mean(self, *values: float) -> tuple[float, ...]:
        """The mean over the ranks of each number."""
        return self._reduce(values, dist.ReduceOp.SUM, 1.0 / self.size)

    def sum(self, *values: float) -> tuple[float, ...]:
        return self._reduce(values, dist.ReduceOp.SUM)

    def max(self, *values: float) -> tuple[float, ...]:
        """The largest value over the ranks of each number (a time, a flag)."""
        return self._reduce(values, dist.ReduceOp.MAX)

    def _reduce(self, values, op, factor: float = 1.0) -> tuple[float, ...]:
        if self.size == 1:
            return tuple(values)
        t = torch.tensor(values, dtype=torch.float64, device=_device())
        dist.all_reduce(t, op=op)
        return tuple((t * factor).tolist())

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (any picklable value)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=_device())
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers into every rank's copy of ``module``."""
        if self.size == 1:
            return
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)
        for m in module.modules():  # plain attributes that follow a buffer (the wave units' span)
            if hasattr(m, "update_span"):
                m.update_span()

    def gather(self, obj) -> list | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


SINGLE = World()


def _device() -> torch.device:
    """Where this rank's collectives run: its GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> World:
    """The world of the default process group if one is initialised (by
    :func:`init_from_environment` or by the caller), else :data:`SINGLE`."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return SINGLE


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_rank() -> int:
    """This process's rank as the launcher gave it (0 without a launcher), before joining."""
    return int(os.environ.get("RANK", "0"))


def init_from_environment(device: str) -> World:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...): backend
    nccl where the run's device is a GPU (each rank on GPU LOCAL_RANK), gloo on the CPU. A process
    not started by a launcher stays :data:`SINGLE`."""
    if not launched() or dist.is_initialized():
        return current()
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return current()


def shutdown() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
