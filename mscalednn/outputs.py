"""A run directory: resolved config, metrics, history, checkpoint and plots.

A run directory is always new: an existing non-empty directory is never written into.
Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from .config import ModelConfig, read_shape
from .nn import Piecewise
from .errors import ConfigError, OutputError


def new_run_dir(out: str | Path | None, stem: str, root: str | Path = "runs", need: int = 32 * 2**20) -> Path:
    """Create the run directory: exactly ``out`` (must not exist or be empty), or a fresh
    ``root/stem-YYYYmmdd-HHMMSS[-n]``. Fails before training, creating nothing, if it cannot be
    written or its file system has less than ``need`` bytes free."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError("--out", "expected a new or empty directory (runs are never overwritten)",
                              str(path))
    else:
        base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 1
        while path.exists():
            path, n = Path(f"{base}-{n}"), n + 1
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and existing.is_dir():
        check_free_space(existing, need)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError("--out", f"expected a writable directory ({exc.strerror})", str(path)) from None
    return path


LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run directory, held while a process trains in it: a second
    ``mscale solve --resume`` of the same directory is refused with a line naming the holder.
    ``flock`` on ``DIR/.lock`` (a regular file: a symbolic link planted there is refused, never
    followed); the system releases the lock when the holder exits, even when killed. ``flag``
    names the option the directory came from, for the messages. (Where ``fcntl`` does not exist,
    e.g. on Windows, there is no lock.)"""

    def __init__(self, run_dir: str | Path, flag: str = "--resume"):
        self.path, self.flag, self.fh = Path(run_dir) / LOCK, flag, None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        where = str(self.path.parent)
        if not self.path.parent.is_dir():
            raise ConfigError(self.flag, "expected an existing run directory", where)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise ConfigError(self.flag, f"expected a writable run directory whose {LOCK} is a plain file "
                              f"({exc.strerror})", where) from None
        fh = os.fdopen(fd, "r+")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            fh.close()
            raise ConfigError(self.flag, f"expected a run directory whose {LOCK} is a plain file", where)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = fh.read(200).strip() or "another process"
            fh.close()
            raise ConfigError(self.flag, f"expected a run directory that no other process is using; {holder} "
                              "holds it (wait for it to finish, or stop it)", where) from None
        fh.truncate()
        fh.write(f"process {os.getpid()} on {platform.node() or 'this machine'} (since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        fh.flush()
        self.fh = fh
        return self

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # closing the file releases the lock
            self.fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file via a new temporary file (never an existing one, nor a link planted in its
    place), fsync and a rename, so a reader never sees half of it and a failed write (full disk)
    leaves the previous file as it was: OutputError then."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def save_figure(fig, path: Path, **savefig_kwargs) -> None:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def check_free_space(path: Path, need: int) -> None:
    """OutputError unless the file system holding ``path`` has ``need`` bytes free."""
    free = shutil.disk_usage(path).free
    if free < need:
        raise OutputError(f"{path}: expected at least {need / 2**20:.0f} MiB of free disk space for the "
                          f"run's checkpoints and plots, got {free / 2**20:.1f} MiB free")


def write_json(path: Path, obj) -> None:
    """Strict JSON: NaN and infinities (a diverged run's numbers) are written as null."""
    write_atomic(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_yaml(path: Path, obj) -> None:
    write_atomic(path, yaml.safe_dump(_jsonable(obj), sort_keys=False))


def write_history(path: Path, history: list[dict]) -> None:
    """history.csv, header first: the loss rows and the evaluation rows (``step``, losses, errors,
    lr, times), empty fields where a row has no such number."""
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, buf.getvalue())


class TensorBoardLog:
    """``train.tensorboard``: a training hook that writes every new history row's loss terms,
    errors and learning rate to ``folder`` as TensorBoard scalars (``tensorboard --logdir
    RUN/tensorboard``). TensorBoard is an optional dependency (``pip install 'mscalednn[tensorboard]'``);
    without it the run stops before training with a one-line error. A resumed run appends to
    the same folder; rows rolled back by a divergence are written again from where they restart."""

    KEYS = ("loss", "loss_interior", "loss_boundary", "rel_l2", "rel_max", "rel_h1", "lr")

    @staticmethod
    def require():
        """torch's SummaryWriter, or the one-line error that says how to install TensorBoard."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.tensorboard", "expected the tensorboard package for train.tensorboard: true "
                              "(pip install 'mscalednn[tensorboard]')", "not installed") from None
        return SummaryWriter

    def __init__(self, folder: Path):
        self.writer, self.written = self.require()(str(folder)), 0

    def __call__(self, state) -> None:
        self.written = min(self.written, len(state.history))
        for row in state.history[self.written:]:
            for key in self.KEYS:
                if row.get(key) is not None:
                    self.writer.add_scalar(key, row[key], row["step"])
        self.written = len(state.history)

    def close(self) -> None:
        self.writer.close()


def environment(device: torch.device | str | None = None) -> dict:
    """Versions, the device and the git commit (when the package runs from a checkout), for the
    record in metrics.json."""
    from . import __version__
    device = torch.device(device or "cpu")
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "mscalednn": __version__, "platform": platform.platform(), "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else _cpu_name()),
            "torch_threads": torch.get_num_threads()}
    here = Path(__file__).parent
    for key, cmd in (("git_commit", ["git", "rev-parse", "HEAD"]),
                     ("git_dirty", ["git", "status", "--porcelain", "--untracked-files=no"])):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=5, cwd=here)
        except (OSError, subprocess.SubprocessError):
            break
        if done.returncode != 0:
            break
        info[key] = done.stdout.strip() if key == "git_commit" else bool(done.stdout.strip())
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_record(model: torch.nn.Module, model_config: ModelConfig, in_dim: int) -> dict:
    """What :func:`load_model` needs besides the weights to rebuild ``model``: its config, the
    input dimension and, for a network per side of an interface, the interface's shape."""
    shape = {"interface": model.shape.spec()} if isinstance(model, Piecewise) else {}
    return {"model": model_config.to_dict(), "in_dim": in_dim, **shape}


def save_checkpoint(path: Path, model: torch.nn.Module, model_config: ModelConfig, in_dim: int,
                    extra: dict | None = None) -> None:
    """A checkpoint that :func:`load_model` turns back into the network with one call."""
    write_torch(path, {**model_record(model, model_config, in_dim),
                       "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       **(extra or {})})


def write_torch(path: Path, obj: dict) -> None:
    """``torch.save(obj)`` atomically, with ``dtype`` (of the first ``state_dict`` tensor) added:
    the layout :func:`load_model` reads."""
    first = next(iter(obj["state_dict"].values()), None)
    dtype = first.dtype if first is not None else torch.float32
    buf = io.BytesIO()
    torch.save(_plain({**obj, "dtype": str(dtype).replace("torch.", "")}), buf)
    write_atomic(path, buf.getvalue())


def _plain(obj):
    """``obj`` as tensors and plain data only (what ``torch.load(weights_only=True)`` reads back):
    NumPy scalars become Python numbers; anything else that is not plain is a bug, caught here
    when writing rather than when resuming."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (torch.Tensor, bool, int, float, str, torch.dtype)):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} into a checkpoint: tensors and plain data only")


def load_plain(path: Path, what: str, map_location: str = "cpu") -> dict:
    """A file written by :func:`write_torch`, read with ``torch.load(weights_only=True)``: only
    tensors and plain data are accepted, so a file from someone else cannot run code. Any other
    content, or a file that cannot be read, is a one-line ConfigError naming ``what``."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols, then refuses
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # refused content, a truncated or foreign file, an unreadable path
        text = " ".join(str(exc).split())
        refused = re.search(r"unsupported GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", text)
        if refused:
            name = refused.group(1) or refused.group(2)
            raise ConfigError(what, f"expected a file of tensors and plain data only; it holds {name}, refused "
                              "and not run (checkpoints of format 1, from earlier versions, hold pickled "
                              "generators and cannot be resumed)", str(path)) from None
        reason = str(exc).split("\n\n")[-2 if "Check the documentation" in str(exc) else -1]
        raise ConfigError(what, f"expected a model or checkpoint file written by mscale (it cannot be read: "
                          f"{type(exc).__name__}: {' '.join(reason.split())[:120]})", str(path)) from None
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise ConfigError(what, "expected a model or checkpoint file written by mscale", str(path))
    return obj


def load_model(path: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """The trained network saved in a model file (``model.pt``), a checkpoint (``checkpoint.pt``)
    or a run directory (a :class:`mscalednn.nn.Piecewise` pair where the run trained one network
    per side of an interface)."""
    path = Path(path)
    if path.is_dir():  # the final model, else the last checkpoint of an unfinished run
        path = path / "model.pt" if (path / "model.pt").exists() else path / "checkpoint.pt"
    ckpt = load_plain(path, "model", map_location)
    options = dict(ckpt["model"])
    kind = options.pop("kind")
    by_dim = tuple((int(d0), dict(extra)) for d0, extra in (options.pop("by_dim", None) or {}).items())
    interface = None if ckpt.get("interface") is None else read_shape(ckpt["interface"], ckpt["in_dim"], "interface")
    model = ModelConfig(kind, options, by_dim).build(ckpt["in_dim"], interface)
    model.to(getattr(torch, ckpt.get("dtype", "float32")))  # before the weights: no rounding on the way
    # a model.pt from before the output scaling has no output_shift/output_scale: they keep 0 and 1
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if unexpected or set(missing) - {"output_shift", "output_scale"}:
        raise ConfigError("model", "expected the weights of the network its config describes (missing "
                          f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})", str(path))
    return model.eval()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
