"""``image``: fit a gray image, (x, y) -> intensity, trained on every other column and tested on
all pixels. Coarse features appear first, fine detail last; the radially averaged spectrum of
the error shows it frequency by frequency."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import cbook  # noqa: E402
from PIL import Image  # noqa: E402

from ..errors import MscaleError  # noqa: E402
from ..nn import MLP  # noqa: E402
from ..outputs import save_figure  # noqa: E402
from ..validate import Range, Seed  # noqa: E402
from . import figures  # noqa: E402
from .fit import Activation, fit, initialize  # noqa: E402
from .oned import first_below, low_first  # noqa: E402

Count = Annotated[int, Range(1)]
Positive = Annotated[float, Range(0.0, lo_open=True)]


@dataclass(frozen=True)
class ImageFit:
    """Published set-up (docs/method.md section 5): image ~75 x 60, every other column for
    training, tanh 2-500-400-300-200-200-100-1, Adam lr 5e-5; here lr 1e-3 for 3,000 steps, to
    stay within minutes on 2 cores. ``image``: a file path, or ``grace_hopper`` (the photo
    matplotlib ships). ``threshold``: on the relative error of a band (0.5: the band is half
    learned; the highest bands of an image are not learned in minutes, nor can the columns left
    out be)."""

    image: str = "grace_hopper"
    height: Annotated[int, Range(8)] = 75
    width: Annotated[int, Range(8)] = 60
    widths: tuple[Count, ...] = (500, 400, 300, 200, 200, 100)
    activation: Activation = "tanh"
    init_scale: Positive = 1.0
    lr: Positive = 1e-3
    steps: Count = 3000
    record_every: Count = 50
    bands: Annotated[int, Range(2)] = 6
    snapshots: Annotated[int, Range(2)] = 6
    threshold: Positive = 0.5
    seed: Seed = 0


QUICK_IMAGE = {"height": 48, "width": 40, "widths": (200, 200, 100), "lr": 3e-3, "steps": 2000}


def load_gray(source: str, height: int, width: int) -> np.ndarray:
    """The image as gray values in [0, 1], resized to height x width."""
    try:
        if source == "grace_hopper":
            with cbook.get_sample_data("grace_hopper.jpg") as fh:
                img = Image.open(fh).convert("L")
        else:
            img = Image.open(source).convert("L")
        img = img.resize((width, height), Image.LANCZOS)
    except (OSError, ValueError) as exc:
        raise MscaleError(f"image: cannot read {source!r} as an image ({exc})") from None
    return np.asarray(img, dtype=np.float64) / 255.0


def radial_bands(shape: tuple[int, int], bands: int) -> tuple[np.ndarray, list[str]]:
    """Band index [H, W] of each 2D DFT coefficient by |k| (cycles across the image, DC
    excluded: -1), ``bands`` bands of equal width up to the largest |k|."""
    ky = np.fft.fftfreq(shape[0]) * shape[0]
    kx = np.fft.fftfreq(shape[1]) * shape[1]
    radius = np.hypot(*np.meshgrid(ky, kx, indexing="ij"))
    edges = np.linspace(0, radius.max() + 1e-9, bands + 1)
    index = np.digitize(radius, edges[1:-1])
    index[radius == 0] = -1
    labels = [f"|k| {edges[i]:.0f}-{edges[i + 1]:.0f}" for i in range(bands)]
    return index, labels


def band_errors(h: np.ndarray, y: np.ndarray, index: np.ndarray, bands: int) -> np.ndarray:
    """Per band: sqrt(sum |H - Y|^2 / sum |Y|^2) over the band's DFT coefficients."""
    E, Y = np.abs(np.fft.fft2(h - y)) ** 2, np.abs(np.fft.fft2(y)) ** 2
    return np.array([np.sqrt(E[index == b].sum() / Y[index == b].sum()) for b in range(bands)])


def train_image(s: ImageFit, progress: bool = True, desc: str = "image"):
    """Train on the even columns; returns (image, steps, band errors [snapshots, bands], band
    labels, held-out error history, snapshot images, snapshot steps)."""
    torch.manual_seed(s.seed)
    y = load_gray(s.image, s.height, s.width)
    rows, cols = np.meshgrid(np.linspace(-1, 1, s.height), np.linspace(-1, 1, s.width), indexing="ij")
    xy = torch.as_tensor(np.stack([rows.ravel(), cols.ravel()], axis=1), dtype=torch.float32)
    train = (np.arange(s.width)[None, :] % 2 == 0).repeat(s.height, axis=0).ravel()
    target = torch.as_tensor(y.ravel(), dtype=torch.float32)[:, None]
    model = initialize(MLP(2, width=list(s.widths), activation=s.activation), s.init_scale).float()
    index, labels = radial_bands(y.shape, s.bands)
    shots = {int(round(t / s.record_every)) * s.record_every
             for t in np.geomspace(s.record_every, s.steps, s.snapshots)}
    steps, errors, held_out, images, image_steps = [], [], [], [], []

    def record(step, net, _loss):
        with torch.no_grad():
            h = net(xy)[:, 0].double().numpy()
        steps.append(step)
        errors.append(band_errors(h.reshape(y.shape), y, index, s.bands))
        held_out.append(float(np.sqrt(np.mean((h[~train] - y.ravel()[~train]) ** 2))))
        if step in shots or step == s.steps:
            images.append(h.reshape(y.shape))
            image_steps.append(step)

    fit(model, xy[train], target[train], s.steps, s.lr, record, every=s.record_every, progress=progress, desc=desc)
    return y, np.array(steps), np.array(errors), labels, held_out, images, image_steps


def run_image(s: ImageFit, out: Path, progress: bool = True) -> dict:
    y, steps, errors, labels, held_out, images, image_steps = train_image(s, progress)
    converge = first_below(steps, errors, s.threshold)
    figures.heatmap(steps, errors.T, labels, out / "spectrum_error.png",
                    "relative error of the image's DFT, by radial frequency band")
    fig, axes = plt.subplots(1, len(images) + 1, figsize=(2.2 * (len(images) + 1), 2.8))
    for ax, img, title in zip(axes, [*images, y], [*(f"step {t}" for t in image_steps), "target"]):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    save_figure(fig, out / "snapshots.png", dpi=100)
    holds = low_first(converge)
    verdict = (f"bands low to high reached relative error < {s.threshold:g} at steps {converge}; held-out pixel "
               f"RMS error {held_out[-1]:.4f}: " + ("low bands first" if holds else "NOT low bands first"))
    return {"holds": holds, "verdict": verdict, "bands": labels, "steps_to_converge": converge,
            "held_out_rms": held_out[-1], "held_out_history": held_out, "steps": steps.tolist(),
            "band_errors": errors.tolist(), "figures": ["snapshots.png", "spectrum_error.png"],
            "check": "the radial frequency bands of the image reach the threshold in order, low first"}
