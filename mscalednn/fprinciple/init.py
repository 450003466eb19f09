"""``init``: the role of the initial weights. The ``1d`` fit and a reduced ``image`` fit, each
with small and with large initial weights: with large weights the low-first ordering weakens
and the fit between training points (held-out points / pixels) degrades."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from ..validate import Range, Seed
from . import figures
from .image import QUICK_IMAGE, ImageFit, train_image
from .oned import OneD, first_below, in_order, sum_of_sines, train_1d

Positive = Annotated[float, Range(0.0, lo_open=True)]


@dataclass(frozen=True)
class Init:
    """Initial scales (W, b ~ N(0, scale^2 / fan_in)): ``small`` and ``large``. The 1d part uses
    the ``1d`` defaults with ``steps_1d``; the image part the reduced (quick) image settings."""

    small: Positive = 1.0
    large: Positive = 10.0
    steps_1d: Annotated[int, Range(1)] = 4000
    steps_image: Annotated[int, Range(1)] = 2000
    image: bool = True
    seed: Seed = 0


QUICK_INIT = {"steps_1d": 1500, "steps_image": 600}


def run_init(s: Init, out: Path, progress: bool = True) -> dict:
    parts, rows = {}, []
    for name, scale in (("small", s.small), ("large", s.large)):
        one = OneD(init_scale=scale, steps=s.steps_1d, seed=s.seed)
        x, y, at, steps, deltas, _, _, model = train_1d(one, progress, desc=f"1d {name}")
        midpoints = x + (x[1] - x[0]) / 2                   # between the training points
        with torch.no_grad():
            h = model(torch.as_tensor(midpoints)[:, None])[:, 0].numpy()
        truth = sum_of_sines(midpoints, one.frequencies, one.amplitudes)
        converge = first_below(steps, deltas, one.threshold)
        part = {"scale": scale, "steps_to_converge": converge, "ordered": in_order(converge),
                "held_out_rms_1d": float(np.sqrt(np.mean((h - truth) ** 2)))}
        if s.image:
            img = dataclasses.replace(ImageFit(), **{**QUICK_IMAGE, "init_scale": scale, "steps": s.steps_image,
                                                      "seed": s.seed})
            *_, held_out, _, _ = train_image(img, progress, desc=f"image {name}")
            part["held_out_rms_image"] = held_out[-1]
        parts[name] = part
        rows += [f"{name}: k={k}" for k in at]
        figures.heatmap(steps, deltas.T, [f"k={k}" for k in at], out / f"init_{name}_1d.png",
                        f"1d, {name} initial weights (scale {scale:g})")
    worse = [key for key in ("held_out_rms_1d", "held_out_rms_image") if key in parts["small"]]
    holds = all(parts["large"][k] > parts["small"][k] for k in worse)
    verdict = ("held-out error small vs large init: "
               + ", ".join(f"{k.replace('held_out_rms_', '')} {parts['small'][k]:.4f} vs {parts['large'][k]:.4f}"
                           for k in worse)
               + f"; 1d ordering small: {parts['small']['ordered']}, large: {parts['large']['ordered']}"
               + (": holds" if holds else ": does NOT hold"))
    return {**parts, "holds": holds, "verdict": verdict,
            "figures": ["init_small_1d.png", "init_large_1d.png"],
            "check": "large initial weights give a larger held-out error than small ones"}
