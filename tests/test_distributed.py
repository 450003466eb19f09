"""Data-parallel training over 2 gloo processes on the CPU (torchrun; mscalednn.distributed):
the averaged gradient is the gradient on the union of the ranks' points, the parameters stay
identical on every rank after every step, the sharded evaluation is the whole one, rank 0 alone
writes, and a run killed on one rank resumes to the uninterrupted result (float64)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from mscalednn import checkpoint as ckpt
from mscalednn import load_problem, load_run_config, seed_everything
from mscalednn.cli import main
from mscalednn.metrics import EvalSet, evaluate
from mscalednn.optimizers import Objective
from mscalednn.sampling import Sampler
from mscalednn.train import _interior_loss

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import ROOT, SETTINGS  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available in this torch build")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Both ranks' records from tests/ddp_worker.py."""
    out = tmp_path_factory.mktemp("ddp")
    done = subprocess.run(TORCHRUN + [str(ROOT / "tests" / "ddp_worker.py"), str(out)], capture_output=True,
                          text=True, timeout=600, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_the_averaged_gradient_is_the_gradient_on_the_union_of_the_points(ranks):
    problem, _ = load_problem(ROOT / "problems" / "poisson2d_multiscale.yaml")
    run = load_run_config(ROOT / "configs" / "adaptive.yaml", SETTINGS)
    seed_everything(run.train.seed)
    model = run.model.build(problem.dim).double()
    union = tuple(torch.cat([r["batch"][i] for r in ranks]) for i in range(4))
    interior, bc_weight = _interior_loss(problem, model, run.train)
    loss, loss_in, loss_bd = Objective(model, interior, interior, bc_weight, chunk=24).backward(union, beta=10.0)
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    for r in ranks:
        assert (r["grad"] - grad).abs().max() <= 1e-10 * grad.abs().max()
        assert r["loss"] == pytest.approx([float(loss), float(loss_in), float(loss_bd)], rel=1e-12)
    # each rank drew its own points; rank 0 the single process's
    assert not torch.equal(ranks[0]["batch"][0], ranks[1]["batch"][0])
    assert torch.equal(ranks[0]["batch"][0], Sampler(problem, "uniform", 7, dtype=torch.float64).interior(64))


def test_parameters_are_identical_on_both_ranks_after_every_step(ranks):
    a, b = ranks[0]["steps"], ranks[1]["steps"]
    assert len(a) == len(b) == 6
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(not torch.equal(x, y) for x, y in zip(a, a[1:]))  # and they moved
    m = ranks[0]["metrics"]
    assert m["world_size"] == 2 and m["status"] == "completed"
    assert len(m["adaptations"]) == 2 and ranks[1]["metrics"]["adaptations"] == m["adaptations"]


def test_the_sharded_evaluation_is_the_whole_one(ranks):
    problem, _ = load_problem(ROOT / "problems" / "poisson2d_multiscale.yaml")
    run = load_run_config(ROOT / "configs" / "adaptive.yaml", SETTINGS)
    model = run.model.build(problem.dim).double()
    model.load_state_dict(ranks[0]["model"])
    whole = evaluate(model, EvalSet.build(problem, run.train.n_test))
    for r in ranks:
        for k in ("rel_l2", "rel_max", "rel_h1"):
            assert r["metrics"][k] == pytest.approx(whole[k], rel=1e-12)


# -- the command line under torchrun ------------------------------------------------------------

PROBLEM = str(ROOT / "problems" / "poisson1d_multiscale.yaml")
CLI_SETS = [a for s in ["train.dtype=float64", "train.device=cpu", "train.time_limit=null", "model.width=48",
                        "model.hidden_width=24", "train.n_interior=256", "train.progress=false", "train.n_test=400",
                        "train.steps=400", "train.eval_every=50", "train.checkpoint_every=25"] for a in ("--set", s)]


def solve_command(out: Path, *, processes: int = 2) -> list[str]:
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    return launcher + ["-m", "mscalednn", "solve", PROBLEM, "--model", str(ROOT / "configs" / "mscale.yaml"),
                       "--out", str(out), *CLI_SETS]


def resume(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(TORCHRUN + ["-m", "mscalednn", "solve", "--resume", str(out)], capture_output=True,
                          text=True, timeout=600, cwd=out.parent)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-ref") / "run"
    done = subprocess.run(solve_command(out), capture_output=True, text=True, timeout=600, cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_torchrun_writes_one_run_directory_like_a_single_process(reference, tmp_path):
    single = tmp_path / "single"
    done = subprocess.run(solve_command(single, processes=1), capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in reference.parent.iterdir()) == ["run"]  # nothing else, from no rank
    assert sorted(p.name for p in reference.iterdir()) == sorted(p.name for p in single.iterdir())
    two, one = (json.loads((d / "metrics.json").read_text()) for d in (reference, single))
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["steps"] == one["steps"] == 400
    for d, m in ((reference, two), (single, one)):  # both trained: the loss fell 100-fold
        first = float((d / "history.csv").read_text().splitlines()[1].split(",")[1])
        assert m["loss"] < first / 100
    assert "world_size" in ckpt.read(reference) and "world_size" not in ckpt.read(single)


def worker_pid(tag: str, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` whose environment holds ``tag``."""
    for entry in Path("/proc").iterdir():
        try:
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError):
            continue
        if env.get("MSCALE_TEST_TAG") == tag and env.get("RANK") == str(rank):
            return int(entry.name)
    return None


def signalled_run(out: Path, sig: int) -> tuple[subprocess.Popen, str]:
    """Start the reference run in ``out`` and send ``sig`` to rank 1 alone once the checkpoint
    reaches step 100 (if the run finishes first, again at an earlier step)."""
    for target in (100, 50, 25):
        tag = uuid.uuid4().hex
        proc = subprocess.Popen(solve_command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=out.parent, env={**os.environ, "MSCALE_TEST_TAG": tag})
        deadline = time.monotonic() + 300  # a timeout for a hung run, not a measurement
        while proc.poll() is None and time.monotonic() < deadline:
            path = out / ckpt.CHECKPOINT
            if path.exists() and torch.load(path, weights_only=True)["step"] >= target:
                break
            time.sleep(0.005)
        pid = worker_pid(tag, 1)
        if pid is not None and proc.poll() is None:
            os.kill(pid, sig)
        _, err = proc.communicate(timeout=300)
        metrics = out / "metrics.json"
        if not metrics.exists() or json.loads(metrics.read_text())["status"] != "completed":
            return proc, err
        for p in sorted(out.iterdir()):
            p.unlink()
        out.rmdir()
    pytest.fail("every run finished before its signal")


def assert_same_result(out: Path, reference: Path) -> None:
    got, ref = (json.loads((d / "metrics.json").read_text()) for d in (out, reference))
    assert got["status"] == "completed"
    for k in ("rel_l2", "rel_max", "rel_h1", "loss", "steps"):
        assert got[k] == pytest.approx(ref[k], rel=1e-12, abs=0), k
    strip = lambda text: [row.split(",")[:9] for row in text.splitlines()]  # noqa: E731 (all but the times)
    assert strip((out / "history.csv").read_text()) == strip((reference / "history.csv").read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds rank 1's process through /proc")
def test_sigkill_of_one_rank_then_resume_gives_the_uninterrupted_result(reference, tmp_path):
    out = tmp_path / "run"
    proc, err = signalled_run(out, signal.SIGKILL)
    assert proc.returncode != 0 and not (out / "metrics.json").exists(), err[-2000:]
    step = ckpt.read(out)["step"]
    assert 0 < step < 400
    done = resume(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at step {step} of 400" in done.stderr
    assert_same_result(out, reference)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds rank 1's process through /proc")
def test_sigterm_on_one_rank_stops_all_cleanly_and_resumes(reference, tmp_path):
    out = tmp_path / "run"
    proc, err = signalled_run(out, signal.SIGTERM)
    saved = ckpt.read(out)
    assert saved["status"] == "interrupted" and 0 < saved["step"] < 400 and saved["world_size"] == 2
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["steps"] == saved["step"]
    assert f"SIGTERM at step {saved['step']}" in err and f"resume with: mscale solve --resume {out}" in err
    done = resume(out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_result(out, reference)


def test_resume_with_another_number_of_processes_is_refused(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    saved = ckpt.read(run)
    ckpt.write(run / ckpt.CHECKPOINT, {**saved, "status": "interrupted"})
    assert main(["solve", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "torchrun --nproc-per-node 2" in err and "1 process(es)" in err
