"""Runs that survive: checkpoints and resume (in process and after a real SIGKILL), signals,
divergence roll-back, safe outputs, reproducibility and the record in metrics.json."""

import dataclasses
import errno
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from mscalednn import PoissonProblem, TrainConfig, load_model, load_problem, load_run_config, parse_expression, solve
from mscalednn import checkpoint as ckpt
from mscalednn import outputs
from mscalednn.cli import main
from mscalednn.errors import ConfigError, OutputError
from mscalednn.nn import MLP
from mscalednn.train import Checkpointing, learning_rate, seed_everything

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = str(ROOT / "problems" / "poisson1d_multiscale.yaml")
# a small MscaleDNN in float64 on the CPU, a step budget (a time budget follows the clock)
SMALL = ["train.dtype=float64", "train.device=cpu", "train.time_limit=null", "model.width=48",
         "model.hidden_width=24", "train.n_interior=256", "train.progress=false", "train.n_test=400"]
KEYS = ("rel_l2", "rel_max", "rel_h1", "loss", "steps")


def sets(items):
    return [a for item in items for a in ("--set", item)]


def train(overrides, *, path=None, resume=None, stop=None):
    problem, _ = load_problem(PROBLEM)
    run = load_run_config(ROOT / "configs" / "mscale.yaml", SMALL + overrides)
    seed_everything(run.train.seed)
    model = run.model.build(problem.dim)
    return solve(problem, model, run.train, checkpoint=Checkpointing(path) if path else None,
                 resume=resume, stop=stop)


def assert_same_run(a_history, b_history, a_metrics, b_metrics):
    assert [sorted(r) for r in a_history] == [sorted(r) for r in b_history]
    assert any("rel_l2" in r for r in a_history) and any("rel_l2" not in r for r in a_history)
    for ra, rb in zip(a_history, b_history):
        for k in set(ra) - {"train_time_s", "elapsed_s"}:
            assert abs(ra[k] - rb[k]) <= 1e-12 * max(1.0, abs(ra[k])), (k, ra, rb)
    for k in KEYS:
        assert abs(a_metrics[k] - b_metrics[k]) <= 1e-12 * max(1.0, abs(a_metrics[k])), (k, a_metrics, b_metrics)


@pytest.mark.parametrize("extra", [
    ["train.sampler=uniform", "train.resample_every=1"],
    ["train.sampler=sobol", "train.resample_every=7"],           # the batch and the Sobol position
    ["train.derivatives=hutchinson", "train.probes=4", "train.lr_schedule=cosine"],  # torch's RNG
    ["train.ema=0.9"],                                          # the parameter average
], ids=["uniform", "sobol-resample7", "hutchinson", "ema"])
def test_stop_and_resume_in_process_is_the_uninterrupted_run(extra, tmp_path):
    overrides = ["train.steps=60", "train.eval_every=10", "train.checkpoint_every=20", *extra]
    full = train(overrides)
    again = train(overrides)
    assert_same_run(full.history, again.history, full.metrics, again.metrics)  # reproducible
    calls = {"n": 0}

    def stop():  # a request to stop after step 33: between two checkpoints
        calls["n"] += 1
        return calls["n"] == 33

    part = train(overrides, path=tmp_path / "ck.pt", stop=stop)
    assert part.metrics["status"] == "interrupted" and part.metrics["steps"] == 33
    assert part.metrics["rel_l2"] is None  # an interrupted run reports no result
    saved = torch.load(tmp_path / "ck.pt", weights_only=True)  # plain data and tensors only
    assert saved["step"] == 33 and saved["status"] == "interrupted"
    resumed = train(overrides, resume=saved)
    assert resumed.metrics["status"] == "completed"
    assert_same_run(full.history, resumed.history, full.metrics, resumed.metrics)


def test_different_seeds_differ():
    a = train(["train.steps=5", "train.seed=1"])
    b = train(["train.steps=5", "train.seed=2"])
    assert a.metrics["rel_l2"] != b.metrics["rel_l2"]


# -- real processes: SIGKILL, SIGTERM, SIGINT ---------------------------------------------------

CLI_SETS = sets(SMALL + ["train.steps=1000", "train.eval_every=100", "train.checkpoint_every=25"])


def start(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mscalednn.cli", "solve", PROBLEM, "--model",
                             str(ROOT / "configs" / "mscale.yaml"), "--out", str(out), *CLI_SETS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def resume(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mscalednn.cli", "solve", "--resume", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def wait_for_training(out: Path, proc: subprocess.Popen) -> None:
    """Wait until the step-0 checkpoint exists (training has started)."""
    deadline = time.monotonic() + 300  # a timeout for a hung start, not a measurement
    while not (out / ckpt.CHECKPOINT).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = start(out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads((out / "metrics.json").read_text()), (out / "history.csv").read_text()


def checkpoint_step(out: Path) -> int:
    """The step of the checkpoint on disk (written atomically: always a whole file)."""
    return torch.load(out / ckpt.CHECKPOINT, weights_only=True)["step"]


def interrupted_run(out: Path, share: float, send) -> tuple[subprocess.Popen, int, str]:
    """Start the reference config in ``out`` and call ``send(proc)`` once its checkpoint reaches
    ``share`` of the 1,000 steps: a moment inside training on a machine of any speed (at least 100
    steps remain). If the run still finished first, try again at half the share."""
    for _ in range(6):
        target = max(25, int(share * 1000) // 25 * 25)
        proc = start(out)
        wait_for_training(out, proc)
        deadline = time.monotonic() + 600  # a timeout for a hung run, not a measurement
        while checkpoint_step(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        send(proc)
        _, err = proc.communicate(timeout=300)
        if not (out / "metrics.json").exists() or metrics_of(out)["status"] != "completed":
            return proc, target, err
        shutil.rmtree(out)  # finished before the signal
        share /= 2
    pytest.fail("every run finished before its signal")


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def assert_matches_reference(out: Path, reference) -> None:
    ref, ref_history = reference
    got = metrics_of(out)
    assert got["status"] == "completed"
    for k in KEYS:
        assert abs(got[k] - ref[k]) <= 1e-12 * abs(ref[k]), (k, got[k], ref[k])
    strip = lambda text: [row.split(",")[:9] for row in text.splitlines()]  # all but the two times
    assert strip((out / "history.csv").read_text()) == strip(ref_history)


def test_sigkill_at_a_random_step_then_resume_gives_the_uninterrupted_result(reference, tmp_path):
    out = tmp_path / "run"
    proc, target, _ = interrupted_run(out, random.Random().uniform(0.05, 0.9), lambda p: p.kill())
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    step = ckpt.read(out)["step"]
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert f"resuming at step {step} of 1000" in done.stderr
    assert_matches_reference(out, reference), f"killed after checkpoint step {target}, resumed at {step}"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(sig, code, reference, tmp_path):
    out = tmp_path / "run"
    proc, _, err = interrupted_run(out, 0.3, lambda p: p.send_signal(sig))
    assert proc.returncode == code, err
    assert f"resume with: mscale solve --resume {out}" in err
    saved = ckpt.read(out)
    assert saved["status"] == "interrupted" and 0 < saved["step"] < 1000
    m = metrics_of(out)
    assert m["status"] == "interrupted" and m["rel_l2"] is None and m["steps"] == saved["step"]
    assert load_model(out)(torch.zeros(3, 1, dtype=torch.float64)).shape == (3, 1)  # usable meanwhile
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert_matches_reference(out, reference)


# -- divergence ---------------------------------------------------------------------------------

class Flaky(nn.Module):
    """An MLP whose output turns NaN while ``poison`` is set (``persistent``: it stays set)."""

    def __init__(self, persistent=False):
        super().__init__()
        self.net, self.poison, self.persistent = MLP(in_dim=1, width=16, depth=2), False, persistent

    def forward(self, x):
        y = self.net(x)
        if self.poison:
            self.poison = self.persistent
            return y * float("nan")
        return y


@pytest.fixture
def after_adam_step(monkeypatch):
    """Call ``callback(n, optimizer)`` after the n-th Adam step (n counts every step taken)."""
    callbacks = []

    class Counting(torch.optim.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.n = 0

        def step(self, closure=None):
            super().step(closure)
            self.n += 1
            for callback in callbacks:
                callback(self.n, self)

    monkeypatch.setattr(torch.optim, "Adam", Counting)
    return callbacks.append


SIMPLE = PoissonProblem(parse_expression("sin(pi*x[0])", 1), (0.0,), (1.0,))
CONFIG = TrainConfig(steps=40, eval_every=10, checkpoint_every=10, n_test=200, derivatives="autograd",
                     progress=False, dtype="float64", device="cpu")


def test_nan_rolls_back_to_the_last_checkpoint_with_a_lower_lr_and_finishes(after_adam_step, capsys):
    torch.manual_seed(0)
    net = Flaky()
    after_adam_step(lambda n, opt: n == 25 and setattr(net, "poison", True))  # the loss of step 26 is NaN
    result = solve(SIMPLE, net, CONFIG)
    m = result.metrics
    assert m["status"] == "completed" and math.isfinite(m["rel_l2"]) and m["steps"] == 40
    assert m["rollbacks"] == [{"step": 26, "to_step": 20, "lr_scale": 0.5}] and m["lr_scale"] == 0.5
    assert [r["step"] for r in result.history if "rel_l2" in r] == [1, 10, 20, 30, 40]
    # the loss every log_every = 10 steps (at the parameters of steps 0, 10, ...) where no evaluation row is
    assert [r["step"] for r in result.history if "rel_l2" not in r] == [0]
    assert result.history[-1]["lr"] == pytest.approx(0.5 * learning_rate(CONFIG, 39 / 40))
    at = {r["step"]: r for r in result.history if "lr" in r}
    assert at[10]["lr"] == pytest.approx(learning_rate(CONFIG, 9 / 40))  # before: unchanged
    assert "non-finite loss or parameters at step 26; rolled back to step 20" in capsys.readouterr().err


def test_persistent_nan_fails_after_bounded_retries_and_keeps_the_last_good_model(after_adam_step):
    torch.manual_seed(0)
    net = Flaky(persistent=True)
    after_adam_step(lambda n, opt: n == 25 and setattr(net, "poison", True))
    result = solve(SIMPLE, net, dataclasses.replace(CONFIG, max_retries=2, retry_lr_factor=0.25))
    m = result.metrics
    assert m["status"] == "diverged" and m["steps"] == 20
    assert all(m[k] is None for k in ("rel_l2", "rel_max", "rel_h1", "loss"))
    assert [r["lr_scale"] for r in m["rollbacks"]] == [0.25, 0.0625, None]
    assert m["lr_scale"] == 0.0625  # the last learning-rate scale tried
    assert [r["step"] for r in m["rollbacks"]] == [26, 21, 21]
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_inf_in_parameters_is_caught_at_its_step(after_adam_step):
    def blow_up(n, opt):
        if n == 7:
            with torch.no_grad():
                opt.param_groups[0]["params"][0].view(-1)[0] = float("inf")

    after_adam_step(blow_up)
    torch.manual_seed(0)
    result = solve(SIMPLE, MLP(in_dim=1, width=16, depth=2), dataclasses.replace(CONFIG, checkpoint_every=5))
    assert result.metrics["status"] == "completed"
    assert result.metrics["rollbacks"] == [{"step": 7, "to_step": 5, "lr_scale": 0.5}]


def test_cli_diverged_run_says_so_and_writes_no_result(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["solve", PROBLEM, "--out", str(out), *sets(["train.steps=20", "train.lr=1e30", "train.progress=false",
                                                           "train.n_test=200", "train.max_retries=2"])])
    err = capsys.readouterr().err
    assert rc == 1
    assert "mscale: error: training diverged" in err and "after 2 roll-backs" in err
    m = metrics_of(out)
    assert m["status"] == "diverged" and m["rel_l2"] is None and len(m["rollbacks"]) == 3
    assert not (out / "model.pt").exists() and not (out / "solution.png").exists()


# -- outputs ------------------------------------------------------------------------------------

def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mscale: error: "), err
    return lines[0]


def test_unwritable_output_path_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["solve", PROBLEM, "--out", str(blocker / "run")]) == 2
    assert "expected a writable directory" in one_line_error(capsys.readouterr().err)


def test_full_disk_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    out = tmp_path / "run"
    assert main(["solve", PROBLEM, "--out", str(out)]) == 2
    assert "free disk space" in one_line_error(capsys.readouterr().err)
    assert not out.exists()  # nothing created
    assert main(["compare", PROBLEM, "--models", str(ROOT / "configs" / "mscale.yaml"), "--out", str(out)]) == 2
    assert "free disk space" in one_line_error(capsys.readouterr().err) and not out.exists()


def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_training_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    real_write, calls = ckpt.write_torch, {"n": 0}

    def write_checkpoint(path, data):  # checkpoints of steps 0 and 5 are written; then the disk is full
        calls["n"] += 1
        if calls["n"] == 3:
            monkeypatch.setattr(outputs.os, "fsync", no_space)
        real_write(path, data)

    monkeypatch.setattr(ckpt, "write_torch", write_checkpoint)
    out = tmp_path / "run"
    rc = main(["solve", PROBLEM, "--out", str(out),
               *sets(SMALL + ["train.steps=50", "train.checkpoint_every=5", "train.eval_every=100"])])
    err = capsys.readouterr().err  # the run's header line, then the error
    line = one_line_error(err.strip().splitlines()[-1])
    assert rc == 2 and "No space left on device" in line and f"mscale solve --resume {out}" in line
    assert ckpt.read(out)["step"] == 5
    assert not list(out.glob(".*.tmp"))


def test_write_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    outputs.write_atomic(path, "old")
    monkeypatch.setattr(outputs.os, "fsync", no_space)
    with pytest.raises(OutputError, match="a.json: cannot write"):
        outputs.write_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "completed", "with-file"])
def test_bad_resume_is_one_line(case, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["solve", "--resume", str(run)]
    if case != "missing":
        run.mkdir()
    if case == "corrupt":
        (run / ckpt.CHECKPOINT).write_bytes(b"\x80not a pickle")
    if case == "completed":
        assert main(["solve", PROBLEM, "--out", str(run), *sets(SMALL + ["train.steps=2"])]) == 0
        capsys.readouterr()
    if case == "with-file":
        args.insert(1, PROBLEM)
    assert main(args) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("mscale: error: --resume: ") or "--resume" in line
    assert {"missing": "expected an existing run directory", "empty": "holding checkpoint.pt",
            "corrupt": "expected a model or checkpoint file written by mscale (it cannot be read", "completed": "expected an unfinished run",
            "with-file": "expected no FILE"}[case] in line


def test_solve_needs_a_file_or_resume(capsys):
    assert main(["solve"]) == 2
    assert "FILE: expected a problem file (or --resume RUN_DIR)" in one_line_error(capsys.readouterr().err)


def test_metrics_record_versions_device_and_commit(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["solve", PROBLEM, "--out", str(out), *sets(SMALL + ["train.steps=3"])]) == 0
    v = metrics_of(out)["versions"]
    assert v["python"] == ".".join(map(str, sys.version_info[:3])) and v["torch"] == torch.__version__
    assert {"numpy", "mscalednn", "device", "device_name"} <= set(v) and v["device"] == "cpu"
    if (ROOT / ".git").exists():
        assert len(v["git_commit"]) == 40 and isinstance(v["git_dirty"], bool)
    saved = ckpt.read(out)
    assert saved["status"] == "completed" and saved["config"]["train"]["steps"] == 3


def test_stop_request_turns_the_first_signal_into_a_request_and_the_second_into_an_interrupt():
    from mscalednn.runtime import StopRequest

    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_figures_and_files_leave_no_temporary_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["solve", PROBLEM, "--out", str(out), *sets(SMALL + ["train.steps=3"])]) == 0
    names = {p.name for p in out.iterdir()}
    # the default (adaptive) network places poisson1d_multiscale's fast wave at step 1: waves.*
    assert {"loss_error.png", "solution.png", "model.pt", "checkpoint.pt", "metrics.json", "history.csv",
            "config.yaml", ".lock", "waves.json", "waves.png"} == names
    assert (out / "solution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Payload:
    """A pickled object that runs a command when unpickled (what a poisoned file would hold)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("file", ["checkpoint.pt", "model.pt"])
def test_a_poisoned_run_directory_is_refused_and_runs_nothing(file, tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    assert main(["solve", PROBLEM, "--out", str(run), *sets(SMALL + ["train.steps=2"])]) == 0
    capsys.readouterr()
    saved = torch.load(run / file, weights_only=True)
    saved["status"] = "interrupted"
    saved["history"] = [Payload(marker)]
    torch.save(saved, run / file)
    if file == "checkpoint.pt":
        assert main(["solve", "--resume", str(run)]) == 2
        line = one_line_error(capsys.readouterr().err)
        assert "--resume: expected a file of tensors and plain data only; it holds" in line
        assert ("posix.system" in line or "nt.system" in line) and "refused and not run" in line
    with pytest.raises(ConfigError, match="plain data only"):
        load_model(run / file)
    assert not marker.exists()


def test_a_run_directory_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    stop = iter([False, False, True]).__next__  # stop at step 3: an unfinished run
    problem, _ = load_problem(PROBLEM)
    model = load_run_config(ROOT / "configs" / "mscale.yaml", SMALL).model.build(1)
    run.mkdir()
    config = load_run_config(ROOT / "configs" / "mscale.yaml", SMALL + ["train.steps=10"])
    meta = {"model": config.model.to_dict(), "in_dim": 1,
            "config": {"problem": load_problem(PROBLEM)[1], **config.to_dict(),
                       "source": {"problem": PROBLEM, "model": None}}}
    solve(problem, model, config.train, checkpoint=Checkpointing(run / ckpt.CHECKPOINT, meta), stop=stop)
    with outputs.RunLock(run):  # another process resuming it (flock: a second open file conflicts)
        assert main(["solve", "--resume", str(run)]) == 2
        line = one_line_error(capsys.readouterr().err)
        assert f"process {os.getpid()} on " in line and "holds it" in line
    assert main(["solve", "--resume", str(run)]) == 0  # free again


def stop_at(n, copy_first_checkpoint_to=None):
    """A stop request at the n-th step; optionally copy the step-0 checkpoint (on disk at the first
    call) aside first."""
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        if calls["n"] == 1 and copy_first_checkpoint_to is not None:
            shutil.copy(copy_first_checkpoint_to[0], copy_first_checkpoint_to[1])
        return calls["n"] == n
    return stop


def test_resume_from_the_step0_checkpoint_with_sobol_points(tmp_path):
    overrides = ["train.steps=12", "train.eval_every=4", "train.sampler=sobol", "train.resample_every=5"]
    full = train(overrides)
    train(overrides, path=tmp_path / "ck.pt", stop=stop_at(3, (tmp_path / "ck.pt", tmp_path / "ck0.pt")))
    step0 = outputs.load_plain(tmp_path / "ck0.pt", "--resume")
    assert step0["step"] == 0 and step0["rng"]["sampler"]["sobol"] == [0, 0]
    resumed = train(overrides, resume=step0)
    assert_same_run(full.history, resumed.history, full.metrics, resumed.metrics)


def test_rollback_to_step0_with_sobol_points(after_adam_step):
    torch.manual_seed(0)
    net = Flaky()
    after_adam_step(lambda n, opt: n == 2 and setattr(net, "poison", True))  # before the first checkpoint
    result = solve(SIMPLE, net, dataclasses.replace(CONFIG, sampler="sobol"))
    assert result.metrics["status"] == "completed"
    assert result.metrics["rollbacks"] == [{"step": 3, "to_step": 0, "lr_scale": 0.5}]


def test_a_zero_solution_run_checkpoints_and_resumes(tmp_path):
    """u* = 0: its errors are absolute, and the checkpoint holding them is plain data."""
    problem = PoissonProblem(parse_expression("0", 2), (0.0, 0.0), (1.0, 1.0), "zero")
    config = TrainConfig(steps=8, eval_every=2, n_test=100, n_interior=64, n_boundary=32, progress=False,
                         dtype="float64", device="cpu")

    def run(**kwargs):
        torch.manual_seed(0)
        return solve(problem, MLP(in_dim=2, width=8, depth=2), config, **kwargs)

    full = run()
    run(checkpoint=Checkpointing(tmp_path / "ck.pt"), stop=stop_at(5))
    resumed = run(resume=outputs.load_plain(tmp_path / "ck.pt", "--resume"))
    assert full.metrics["absolute_errors"] == ["rel_l2", "rel_max", "rel_h1"]
    assert_same_run(full.history, resumed.history, full.metrics, resumed.metrics)


def test_a_planted_lock_link_is_refused_and_its_target_untouched(tmp_path, capsys):
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_text("precious")
    (run / outputs.LOCK).symlink_to(victim)
    (run / ckpt.CHECKPOINT).write_bytes(b"anything")
    assert main(["solve", "--resume", str(run)]) == 2
    assert "is a plain file" in one_line_error(capsys.readouterr().err)
    assert victim.read_text() == "precious"
