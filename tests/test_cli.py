"""The command line: help, smoke runs on every shipped problem, outputs, bad input."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mscalednn import load_model, load_problem
from mscalednn.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = sorted((ROOT / "problems").glob("*.yaml"))
FAST = ["--set", "train.steps=6", "--set", "train.eval_every=3", "--set", "train.n_test=400",
        "--set", "train.n_interior=64", "--set", "train.n_boundary=32", "--set", "train.progress=false"]
# the default (adaptive) config estimating its waves once, not 4 times (~10 s each at d = 10)
ONE_ESTIMATION = ["--set", "model.adapt_at=[0.0]"]


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "mscalednn.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_help_exits_zero():
    for args in (["--help"], ["solve", "--help"]):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        assert "usage" in r.stdout


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.stem)
@pytest.mark.parametrize("model", ["mscale", "vanilla"])
def test_smoke_every_problem(problem, model, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    rc = main(["solve", str(problem), "--model", f"configs/{model}.yaml", "--out", str(out), *FAST])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "completed" and m["steps"] == 6
    for key in ("rel_l2", "rel_max", "rel_h1", "wall_time_s", "steps_per_s"):
        assert math.isfinite(m[key]) and m[key] > 0
    assert m["params"] > 1000
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 3, 6]           # the loss at step 0, then evaluations
    assert rows[0]["rel_l2"] == "" and all(float(r["rel_l2"]) > 0 for r in rows[1:])
    assert {"loss_error.png", "solution.png", "model.pt", "config.yaml"} <= {p.name for p in out.iterdir()}
    # the checkpoint reloads with one call and reproduces the reported error
    net = load_model(out)
    prob, _ = load_problem(problem)
    if not prob.has_exact:  # measured against the reference kept in the run directory
        from mscalednn.reference import Reference
        kind = "finite-difference" if prob.is_box else "finite-element"
        assert m["reference"] == kind and 0 < m["reference_error"] < 1e-3 and (out / "reference.npz").is_file()
        prob = prob.with_reference(Reference.load(out))
    else:
        assert m["reference"] == "exact" and m["reference_error"] is None
    from mscalednn.metrics import EvalSet, evaluate
    assert math.isclose(evaluate(net, EvalSet.build(prob, 400))["rel_l2"], m["rel_l2"], rel_tol=1e-5)


def test_default_config_by_dimension_reloads(tmp_path, monkeypatch):
    """The default config changes the network's shape from d = 10 on (model.by_dim): the saved
    model reloads with that shape and reproduces the reported error."""
    monkeypatch.chdir(ROOT)
    from mscalednn import count_parameters
    from mscalednn.forward_laplacian import one_pass
    from mscalednn.metrics import EvalSet, evaluate
    for problem, one_layer in (("poisson5d_product", False), ("poisson10d", True)):
        out = tmp_path / problem
        assert main(["solve", f"problems/{problem}.yaml", "--out", str(out), *FAST, *ONE_ESTIMATION]) == 0
        m = json.loads((out / "metrics.json").read_text())
        net = load_model(out)
        assert count_parameters(net) == m["params"] and one_pass(net) is one_layer
        prob, _ = load_problem(ROOT / "problems" / f"{problem}.yaml")
        assert math.isclose(evaluate(net, EvalSet.build(prob, 400))["rel_l2"], m["rel_l2"], rel_tol=1e-5)


def test_seed_and_set_are_applied(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    outs = []
    for i, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"r{i}"
        assert main(["solve", "problems/poisson1d_multiscale.yaml", "--seed", str(seed), "--out", str(out), *FAST]) == 0
        outs.append(json.loads((out / "metrics.json").read_text())["rel_l2"])
    assert outs[0] == outs[1] != outs[2]


def test_default_run_directory_is_new(tmp_path):
    # outside the repo there is no configs/mscale.yaml: built-in defaults are used
    for _ in range(2):
        r = run_cli("solve", ROOT / "problems/poisson1d_multiscale.yaml", *FAST, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all((d / "metrics.json").exists() for d in runs)


def test_out_must_be_new(tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = run_cli("solve", "problems/poisson1d_multiscale.yaml", "--out", out, *FAST)
    assert r.returncode == 2
    assert r.stderr.startswith("mscale: error:") and len(r.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("d", [1, 2, 10])
def test_shipped_configs_have_comparable_parameter_counts(d):
    from mscalednn import count_parameters, load_run_config
    counts = [count_parameters(load_run_config(ROOT / f"configs/{name}.yaml").model.build(d))
              for name in ("mscale", "vanilla", "adaptive")]
    assert abs(counts[0] - counts[1]) <= 0.1 * max(counts), counts


@pytest.mark.parametrize("operator", ["forward", "autograd", "hutchinson", "auto"])
def test_every_operator_runs_from_the_command_line(operator, tmp_path, monkeypatch):
    """--set train.derivatives=... is accepted; the exact operators train identically (float64)."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / operator
    rc = main(["solve", "problems/poisson10d.yaml", "--out", str(out), *FAST, *ONE_ESTIMATION,
               "--set", f"train.derivatives={operator}", "--set", "train.dtype=float64", "--set", "train.chunk=40"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and math.isfinite(metrics["rel_l2"])
    if operator != "hutchinson":
        ref = tmp_path / "ref"
        if not ref.exists():
            assert main(["solve", "problems/poisson10d.yaml", "--out", str(ref), *FAST, *ONE_ESTIMATION,
                         "--set", "train.derivatives=autograd", "--set", "train.dtype=float64"]) == 0  # unchunked
        expected = json.loads((ref / "metrics.json").read_text())["rel_l2"]
        assert abs(metrics["rel_l2"] - expected) < 1e-9 * expected


def test_bad_operator_is_one_line_error():
    r = run_cli("solve", "problems/poisson10d.yaml", "--set", "train.derivatives=fastest")
    assert r.returncode == 2
    assert r.stderr.startswith("mscale: error:") and "hutchinson" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_tensorboard_gets_the_logged_losses_errors_and_learning_rate(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["solve", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--model", str(ROOT / "configs/vanilla.yaml"),
                 "--set", "train.steps=20", "--set", "train.eval_every=10", "--set", "train.log_every=5",
                 "--set", "train.n_interior=64", "--set", "train.n_test=200", "--set", "train.progress=false",
                 "--set", "train.tensorboard=true", "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "loss_interior", "loss_boundary", "rel_l2", "rel_h1", "lr"} <= set(tags)
    history = list(csv.DictReader((out / "history.csv").open()))
    logged = [(int(r["step"]), float(r["rel_l2"])) for r in history if r["rel_l2"]]
    written = events.Scalars("rel_l2")
    assert [e.step for e in written] == [step for step, _ in logged]
    assert [e.value for e in written] == pytest.approx([value for _, value in logged], rel=1e-6)
    assert [e.step for e in events.Scalars("loss")] == [int(r["step"]) for r in history]


def test_tensorboard_without_the_package_is_a_one_line_error_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    out = tmp_path / "run"
    assert main(["solve", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--set", "train.steps=2",
                 "--set", "train.tensorboard=true", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mscalednn[tensorboard]" in err[0] and not out.exists()
