"""The benchmarks count the work of the step the training loop runs (not of another method)."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from mscalednn import load_problem, load_run_config

ROOT = Path(__file__).resolve().parents[1]


def _bench_throughput():
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "benchmarks" / "bench_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, estimated", [("poisson50d", True), ("poisson10d", False)])
def test_step_flops_follow_the_derivative_method_of_the_run(name, estimated):
    """``train.loss: auto`` with ``derivatives: auto`` takes Hutchinson's estimate above d = 32 and
    the exact forward Laplacian below; the counted step follows (it once counted the exact
    Laplacian at d = 1000, 10x the work the run did)."""
    bench = _bench_throughput()
    problem, _ = load_problem(ROOT / "problems" / f"{name}.yaml")
    run = load_run_config(ROOT / "configs" / "mscale.yaml", [])
    assert run.train.loss == "auto" and run.train.derivatives == "auto"
    model = run.model.build(problem.dim)
    counted = bench.step_flops(*bench.step_objective(problem, run.train, model, 64))
    exact = bench.step_flops(*bench.step_objective(
        problem, dataclasses.replace(run.train, derivatives="forward"), model, 64))
    if estimated:
        assert counted < exact / 2
    else:
        assert counted == exact
