"""Frequency-adaptive MscaleDNN: a MscaleDNN plus plane-wave units placed where the residual says
the unresolved part of the solution lives.

MscaleDNN's fixed scales a_i make a high frequency low for some subnetwork only if some unit
also looks along the right direction; in d = 10 a random direction almost never lies near a
given one. Here the training loop (:func:`mscalednn.train.solve`) asks at a few points of the
budget (``adapt_at``) where the residual's power is (:func:`mscalednn.wavefinder.find_waves`:
wave vectors k, direction and magnitude) and gives each wave found two units of its own,

    u(x) = MscaleDNN(x) + sum_s [c_s cos(k_s . x) + s_s sin(k_s . x)],

with the wave vector k_s (placed at the estimate, then trained: estimates are off by about 1%)
and the amplitudes c_s, s_s (placed by least squares on the current loss) trained with the
rest. Where MscaleDNN scales the input by a_i along random directions and hopes one lands near
the oscillation, a placed unit is scaled by |k_s| exactly along k_s / |k_s|: it sees its wave
as the lowest frequency there is. Slots not yet placed are
inactive (masked: no output, zero gradients), so the parameter shapes never change and
checkpoints, optimizers and the forward Laplacian see one fixed network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .mscale import MscaleDNN


SPAN_BLOCK = 64  # the wave units' computed span grows in blocks of this many slots


class PlaneWaves(nn.Module):
    """``slots`` plane-wave units: sum over active slots s of c_s cos(k_s . x) + s_s sin(k_s . x).

    ``k`` [slots, d] (the wave vectors) and ``amplitude`` [slots, 2] (c_s, s_s) are parameters;
    ``active`` [slots] (bool) is a buffer set by :meth:`place`. The wave vector itself is the
    parameter (not a direction times a fixed scale) so that an optimizer step moves k by about
    the learning rate whatever |k|: a refinement, not a jump to another frequency."""

    def __init__(self, in_dim: int, slots: int):
        super().__init__()
        self.k = nn.Parameter(torch.zeros(slots, in_dim))
        self.amplitude = nn.Parameter(torch.zeros(slots, 2))
        self.register_buffer("active", torch.zeros(slots, dtype=torch.bool))
        self.span = min(slots, SPAN_BLOCK)  # slots [0, span) hold every active one (a plain int: no device read)

    def wave_vectors(self) -> torch.Tensor:
        """k_s for every slot, [slots, d] (zero rows for inactive slots)."""
        return self.k * self.active[:, None]

    def coefficients(self) -> torch.Tensor:
        """The amplitudes with inactive slots masked to zero, [slots, 2]."""
        return self.amplitude * self.active[:, None]

    def live(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(wave vectors [span, d], amplitudes [span, 2]) of the slots up to the last active one,
        inactive ones masked: what the forward passes compute with. Slots are placed in order and
        the span grows in blocks of ``SPAN_BLOCK``, so 256 slots with 40 placed cost 64 units, not
        256, and a compiled network sees a new shape (and recompiles) only when a block fills."""
        return self.wave_vectors()[:self.span], self.coefficients()[:self.span]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, c = self.live()
        z = x @ K.T
        return (torch.cos(z) @ c[:, 0] + torch.sin(z) @ c[:, 1]).unsqueeze(-1)

    def update_span(self) -> None:
        """Set ``span`` from the ``active`` buffer (after it was written from outside: a state
        dict, a broadcast from another process)."""
        placed = self.active.nonzero()
        last = int(placed.max()) + 1 if placed.numel() else 0
        self.span = min(self.k.shape[0], SPAN_BLOCK * max(1, math.ceil(last / SPAN_BLOCK)))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.update_span()

    @property
    def free(self) -> int:
        return int((~self.active).sum())

    @torch.no_grad()
    def place(self, K: torch.Tensor, amplitudes: torch.Tensor | None = None) -> list[int]:
        """Activate free slots for the wave vectors K [M, d] (at most as many as are free) with
        the given amplitudes [M, 2] (cos, sin; zero by default). Returns the slots used."""
        slots = (~self.active).nonzero().flatten()[:K.shape[0]].tolist()
        for i, s in enumerate(slots):
            self.k[s] = K[i]
            self.amplitude[s] = 0.0 if amplitudes is None else amplitudes[i]
            self.active[s] = True
        self.update_span()
        return slots


class AdaptiveMscaleDNN(MscaleDNN):
    """A :class:`MscaleDNN` (all its arguments) plus :class:`PlaneWaves` units whose wave vectors
    are estimated from the residual during training.

    Extra args:
        wave_slots: how many plane waves can be placed in all (each has two units, cos and sin).
        adapt_at: the budget fractions (in [0, 1), increasing) at which the training loop
            estimates waves from the residual and places the new ones. The default starts at 0
            (after the first step): the residual of the untrained network is about -f, whose
            waves are those of u* weighted by |k|^2, the cleanest signal there is. Later the
            network's own partial fits of the fast waves blur the peaks: on
            poisson2d_multiscale a first estimate at 5% of a 10-minute budget found nothing,
            one at 5% of 2 minutes found the waves (benchmarks/RESULTS.md).
        max_new_waves: at most this many waves placed per adaptation.

    Outside :func:`mscalednn.train.solve` it is an ordinary module: :meth:`place_waves` (or
    ``self.waves.place``) sets units by hand, e.g. at known wave vectors.
    """

    def __init__(self, in_dim: int, *args, wave_slots: int = 64,
                 adapt_at: Sequence[float] = (0.0, 0.05, 0.2, 0.4), max_new_waves: int = 32, **kwargs):
        super().__init__(in_dim, *args, **kwargs)
        adapt_at = tuple(float(t) for t in adapt_at)
        if any(not 0.0 <= t < 1.0 for t in adapt_at) or list(adapt_at) != sorted(set(adapt_at)):
            raise ConfigError("adapt_at", "expected increasing budget fractions in [0, 1)", list(adapt_at))
        if wave_slots < 1 or max_new_waves < 1:
            raise ConfigError("wave_slots", "expected wave_slots >= 1 and max_new_waves >= 1",
                              [wave_slots, max_new_waves])
        self.adapt_at, self.max_new_waves = adapt_at, max_new_waves
        self.waves = PlaneWaves(in_dim, wave_slots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_output(self.raw(x) + self.waves(x))

    def place_waves(self, K: torch.Tensor, amplitudes: torch.Tensor | None = None) -> list[int]:
        """Place waves with wave vectors K [M, d] and amplitudes [M, 2] in the network's output
        units (before the output scaling): ``self.waves.place``."""
        return self.waves.place(K, amplitudes)
