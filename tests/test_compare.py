"""`mscale compare` and the per-frequency measurements it is built on."""

import json
import math
import sys

import numpy as np
import pytest
import torch

from mscalednn import PoissonProblem, TrainConfig, parse_expression, seed_everything, solve
from mscalednn.cli import main
from mscalednn.compare import _median_step, budget_overrides, load_contenders, verdict
from mscalednn.errors import ConfigError
from mscalednn.frequency import FrequencyMonitor, GridSpectrum, Projection, filter_delta
from mscalednn.nn import MLP

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _problem(expr, dim, lo=-1.0, hi=1.0):
    return PoissonProblem(parse_expression(expr, dim), (lo,) * dim, (hi,) * dim, "p")


class Scaled(torch.nn.Module):
    """c * u*(x): Delta_F = |1 - c| at every frequency."""

    def __init__(self, problem):
        super().__init__()
        self.problem, self.c = problem, torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x):
        return (self.c * self.problem.u(x.double()))[:, None]


def test_grid_spectrum_finds_the_two_scales_and_measures_delta_f():
    problem = _problem("sin(pi*x[0]) + 0.1*sin(23*pi*x[0])", 1)
    grid = GridSpectrum(problem)
    assert grid.rows == ["k=1", "k=23"]                   # cycles across [-1, 1]
    y = problem.u(torch.as_tensor(grid.x)).numpy()
    assert np.allclose(grid(y), 0.0, atol=1e-12)
    assert np.allclose(grid(0.9 * y), 0.1, atol=1e-12)
    assert np.allclose(grid(np.sin(np.pi * grid.x[:, 0])), [0.0, 1.0], atol=1e-12)  # only the low part fitted
    # a constant offset c is seen at the lowest peak (the Hann window moves it to k = 1): Delta_F = c
    assert np.allclose(grid(y + 0.5), [0.5, 0.0], atol=1e-9)


def test_grid_spectrum_2d_keeps_one_of_each_symmetric_pair_ordered_by_frequency():
    problem = _problem("prod(sin(pi*x)) + 0.05*prod(sin(20*pi*x))", 2)
    grid = GridSpectrum(problem)
    assert grid.rows == ["k=(-1,1)", "k=(1,1)", "k=(-20,20)", "k=(20,20)"]


@pytest.mark.parametrize("noise_seed", range(6))
def test_grid_spectrum_rows_do_not_depend_on_rounding_noise(noise_seed, monkeypatch):
    """Another CPU or FFT library rounds differently: peaks of equal height (the symmetric pairs
    here) must keep the same rows, in the same order (by |k|, then k), and the same count."""
    rng = np.random.default_rng(noise_seed)
    fftn = np.fft.fftn

    def noisy_fftn(a, *args, **kwargs):  # relative noise of 1e-13, as between machines
        out = fftn(a, *args, **kwargs)
        return out * (1 + 1e-13 * rng.standard_normal(out.shape))

    monkeypatch.setattr(np.fft, "fftn", noisy_fftn)
    problem = _problem("prod(sin(pi*x)) + 0.05*prod(sin(20*pi*x))", 2)
    assert GridSpectrum(problem).rows == ["k=(-1,1)", "k=(1,1)", "k=(-20,20)", "k=(20,20)"]
    # two equal peaks and room for one: the first in index order, always
    assert GridSpectrum(problem, count=1).rows == ["k=(-1,1)"]


def test_equal_peaks_are_chosen_and_ordered_the_same_under_rounding_noise():
    from mscalednn.spectral import by_height, peaks, principal_direction
    for seed in range(20):
        noise = 1 + 1e-14 * np.random.default_rng(seed).standard_normal(6)
        assert by_height(np.array([1.0, 3.0, 2.0, 3.0, 1.0, 2.0]) * noise).tolist() == [1, 3, 2, 5, 0, 4]
        spectrum = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]) * np.r_[noise, 1, 1]
        assert peaks(spectrum, count=1).tolist() == [2]       # the first of two equal peaks
        p = principal_direction(np.outer(np.linspace(-1, 1, 50), [1.0, -1.0]) * np.r_[noise[:2]])
        assert p.tolist() == pytest.approx([2 ** -0.5, -(2 ** -0.5)])  # the first largest entry positive


def test_projection_along_axes_finds_each_axis_frequency_and_the_mean():
    problem = _problem("3 + sin(2*pi*3*x[0]) + 0.2*sin(2*pi*8*x[1])", 3, 0.0, 1.0)
    rng = np.random.default_rng(0)
    x = rng.random((16384, 3))
    y = problem.u(torch.as_tensor(x)).numpy()
    proj = Projection(x, y, [(f"x{i + 1}", np.eye(3)[i]) for i in range(3)], np.zeros(3), np.ones(3))
    assert proj.rows == ["mean", "x1: k=3", "x2: k=8"]     # nothing along x3
    assert proj.freqs == [0.0, 3.0, 8.0]                    # cycles per unit length
    assert np.allclose(proj(y), 0.0, atol=1e-12)
    m = y.mean()                                            # spectra are of h - mean u*
    assert np.allclose(proj(m + 0.9 * (y - m)), [0.0, 0.1, 0.1], atol=1e-12)
    assert proj(0.9 * y)[0] == pytest.approx(0.1)           # the mean row


def test_filter_delta_splits_between_the_peaks_and_respects_the_sample_spacing():
    x = np.linspace(0, 1, 2001)[:, None]
    delta = filter_delta(x, [1.0, 16.0])                    # k_c = 4 cycles per unit
    assert delta == pytest.approx(np.log(2) / (2 * np.pi ** 2 * 16))
    sparse = np.random.default_rng(0).random((500, 10))    # 10-D: neighbours are far apart
    assert filter_delta(sparse, [1.0, 16.0]) > 10 * delta


def _drive_monitor(max_columns, schedule):
    """A FrequencyMonitor fed the model c u* at each (step, c) of ``schedule`` (Delta_F = |1 - c|)."""
    problem = _problem("sin(pi*x[0]) + 0.1*sin(23*pi*x[0])", 1)
    monitor = FrequencyMonitor(problem, n_sample=8192, n_filter=500, max_columns=max_columns)  # both peaks clear the noise
    model = Scaled(problem)

    class State:
        pass

    state = State()
    state.model = model
    for step, c in schedule:
        model.c.data.fill_(c)
        state.step, state.train_time = step, 0.01 * step
        monitor(state)
    return monitor


def test_monitor_keeps_evenly_spaced_columns_and_the_first_crossing():
    monitor = _drive_monitor(8, [(step, step / 100) for step in range(1, 201)])
    steps = [s["step"] for s in monitor.snapshots]
    assert 8 <= len(steps) < 16 and len(set(np.diff(steps))) == 1
    # step 91 has Delta_F 0.09 but snapshots were 8 apart by then: 96 is the first one seen
    assert monitor.every == 16
    assert monitor.first_below["grid"] == [96, 96] and monitor.first_below["projection"] == [96, 96]


def test_monitor_forgets_the_steps_abandoned_by_a_rollback():
    # steps 1-30 with Delta_F falling to 0 at step 30; roll back to 20; steps 21-40 far off
    monitor = _drive_monitor(64, [(s, s / 30) for s in range(1, 31)] + [(s, 0.5) for s in range(21, 41)])
    steps = [s["step"] for s in monitor.snapshots]
    assert steps == sorted(steps) and steps[-1] == 40 and len(steps) == len(set(steps))
    assert monitor.first_below["grid"] == [None, None]      # the crossings at 28-30 were abandoned


def test_the_monitor_does_not_change_training():
    problem = _problem("sin(pi*x[0]) + 0.1*sin(23*pi*x[0])", 1)
    config = TrainConfig(steps=20, n_interior=128, n_boundary=2, lr=1e-2, progress=False, n_test=200,
                         dtype="float64", seed=3)
    errors = []
    for hooks in ([], [FrequencyMonitor(problem, n_sample=1024, n_filter=200)]):
        seed_everything(3)
        errors.append(solve(problem, MLP(1, width=16, depth=2), config, hooks=hooks).metrics["rel_l2"])
    assert errors[0] == errors[1]


def test_budget_parses_seconds_and_steps():
    assert budget_overrides("300s") == ["train.time_limit=300", "train.steps=1000000000"]
    assert budget_overrides("5min")[0] == "train.time_limit=300"
    assert budget_overrides("2000") == ["train.steps=2000", "train.time_limit=null"]
    for bad in ("fast", "-3s", "0", "2.5"):
        with pytest.raises(ConfigError, match="--budget"):
            budget_overrides(bad)


def test_contenders_share_the_first_configs_training_settings(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("model: {kind: mlp, width: 8, depth: 1}\ntrain: {lr: 0.5, steps: 7}\n")
    contenders, notes = load_contenders([str(ROOT / "configs/vanilla.yaml"), str(other)], ["train.n_interior=64"], "40")
    a, b = (c.run.train for c in contenders)
    assert a == b and a.steps == 40 and a.lr == 3e-3 and a.n_interior == 64 and a.time_limit is None
    assert len(notes) == 1 and "lr" in notes[0] and "steps" in notes[0]
    assert [c.name for c in contenders] == ["vanilla", "other"]


def test_median_step_needs_a_majority_of_seeds():
    assert _median_step([10, 30, 20]) == 20
    assert _median_step([10, None, 20]) == 20
    assert _median_step([10, None, None]) is None
    assert _median_step([None]) is None


def _record(model, seed, status, rel_l2, first_below):
    return {"model": model, "seed": seed, "params": 10, "status": status, "rel_l2": rel_l2, "rel_max": rel_l2,
            "rel_h1": rel_l2, "wall_time_s": 2.0, "train_time_s": 1.0, "steps_per_s": 5.0 if rel_l2 else 0.0,
            "steps": 5 if rel_l2 else 1,
            "frequency": {"measurements": {"projection": {"rows": ["mean", "x1: k=9", "x2: k=2"],
                                                          "freqs": [0.0, 9.0, 2.0], "first_below": first_below}}}}


def test_summary_leaves_diverged_runs_out_and_the_verdict_says_so():
    from mscalednn.compare import Contender, summarize
    from mscalednn.config import build_run_config
    run = build_run_config({"model": {"kind": "mlp"}})
    contenders = [Contender("a", "a.yaml", run), Contender("b", "b.yaml", run)]
    records = [_record("a", 0, "completed", 1e-2, [1, 4, 2]), _record("a", 1, "completed", 3e-2, [1, 6, 2]),
               _record("b", 0, "completed", 2e-3, [1, 3, 1]), _record("b", 1, "diverged", None, [1, 1, 1])]
    a, b = summarize(contenders, records, "projection")
    assert a["rel_l2_mean"] == pytest.approx(2e-2) and a["rel_l2_std"] == pytest.approx(np.std([1e-2, 3e-2], ddof=1))
    assert b["completed"] == 1 and b["rel_l2_mean"] == 2e-3 and b["rel_l2_std"] == 0.0 and b["steps_mean"] == 5
    assert a["freq_steps"] == {"mean": 1, "x1: k=9": 6, "x2: k=2": 2}
    assert b["freq_steps"] == {"mean": None, "x1: k=9": None, "x2: k=2": None}   # 1 of 2 seeds: no majority
    text = verdict(_problem("x[0]", 1), [a, b], "5 steps")
    assert "b reached the lowest rel L2 error" in text and "1 of 2 seeds completed" in text
    assert "within the spread" not in text                 # one completed seed has no spread
    assert "(x1: k=9): b: not reached, a: step 6" in text    # the highest frequency, not the last row


def test_verdict_names_the_winner_with_its_ratio():
    problem = _problem("x[0]", 1)
    freqs = {"k=1": 0.5, "k=9": 4.5}
    entries = [{"model": "a", "rel_l2_mean": 1e-2, "rel_l2_std": 1e-3, "seeds": [0, 1], "completed": 2,
                "freq_steps": {"k=1": 5, "k=9": None}, "freqs": freqs},
               {"model": "b", "rel_l2_mean": 1e-3, "rel_l2_std": 1e-4, "seeds": [0, 1], "completed": 2,
                "freq_steps": {"k=1": 3, "k=9": 40}, "freqs": freqs},
               {"model": "c", "rel_l2_mean": 1.05e-3, "rel_l2_std": 2e-4, "seeds": [0, 1], "completed": 2,
                "freq_steps": {"k=1": 3, "k=9": 50}, "freqs": freqs}]
    text = verdict(problem, entries, "100 steps")
    assert text.startswith("On p (100 steps, 2 seeds), b reached the lowest rel L2 error, 1.00e-03")
    assert "10x lower than a (1.00e-02)" in text and "1.05x lower than c (1.05e-03, within the spread" in text
    assert "(k=9): b: step 40, c: step 50, a: not reached" in text


def test_tiny_compare_on_a_1d_problem_writes_every_output(tmp_path, capsys):
    out = tmp_path / "cmp"
    models = [str(ROOT / f"configs/{c}.yaml") for c in ("mscale", "vanilla", "fourier")]
    code = main(["compare", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--models", *models, "--seeds", "2",
                 "--set", "train.steps=12", "--set", "train.n_interior=256", "--set", "train.n_boundary=2",
                 "--set", "train.n_test=500", "--set", "train.progress=false", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [e["model"] for e in summary["models"]] == ["mscale", "vanilla", "fourier"]
    for e in summary["models"]:
        assert e["params"] > 30000 and e["completed"] == 2 and e["steps_mean"] == 12
        assert 0 < e["rel_l2_mean"] < 10 and e["rel_l2_std"] >= 0 and e["wall_time_s_mean"] > 0
        assert list(e["freq_steps"]) == ["k=1", "k=23"]
        assert all(v is None or 1 <= v <= 12 for v in e["freq_steps"].values())
    assert summary["verdict"] in capsys.readouterr().out
    md = (out / "summary.md").read_text()
    assert "| mscale |" in md and "| fourier |" in md and summary["verdict"] in md
    for png in ("errors.png", "grid.png", "projection.png", "filter.png"):
        assert (out / png).stat().st_size > 10000 and png in summary["figures"]
    for model in ("mscale", "vanilla", "fourier"):
        for seed in (0, 1):
            run = json.loads((out / "runs" / f"{model}-seed{seed}" / "run.json").read_text())
            assert run["seed"] == seed and run["frequency"]["snapshots"][-1]["step"] == 12
            assert (out / "runs" / f"{model}-seed{seed}" / "model.pt").exists()


def test_compare_rejects_bad_input_with_one_line(tmp_path, capsys):
    args = ["compare", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--models", str(ROOT / "configs/mscale.yaml")]
    assert main([*args, "--budget", "soon", "--out", str(tmp_path / "a")]) == 2
    assert main([*args, "--seeds", "0", "--out", str(tmp_path / "b")]) == 2
    assert main([*args, "--set", "train.lr=-1", "--out", str(tmp_path / "c")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("mscale: error:") for line in lines)


def test_a_constant_solution_has_only_the_mean_row_and_no_filter():
    problem = _problem("2 + 0*x[0]", 1)
    monitor = FrequencyMonitor(problem, n_sample=1024, n_filter=200)
    assert [m.name for m in monitor.measurements] == ["grid", "projection"]
    assert all(m.rows == ["mean"] for m in monitor.measurements)
    model = Scaled(problem)
    model.c.data.fill_(0.95)
    monitor.snapshot(model, 1, 0.0)
    assert monitor.snapshots[0]["grid"] == pytest.approx([0.05]) and monitor.first_below["grid"] == [1]


def _tiny_compare(*extra):
    models = [str(ROOT / f"configs/{c}.yaml") for c in ("mscale", "vanilla")]
    return main(["compare", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--models", *models, "--seeds", "2",
                 "--set", "train.steps=8", "--set", "train.n_interior=128", "--set", "train.n_boundary=2",
                 "--set", "train.n_test=300", "--set", "train.dtype=float64", "--set", "train.progress=false",
                 "--set", "train.eval_every=4", *extra])


def _errors(out):
    summary = json.loads((out / "summary.json").read_text())
    runs = {p.name: json.loads((p / "run.json").read_text()) for p in sorted((out / "runs").iterdir())}
    return summary, {name: (r["rel_l2"], r["rel_h1"], r["loss"]) for name, r in runs.items()}


def test_parallel_compare_gives_the_sequential_summary(tmp_path, capsys):
    """--jobs 2 (two spawned processes, one torch thread each) against the sequential run: the
    same seeds give the same runs (float64, a budget in steps), the same summary."""
    assert _tiny_compare("--out", str(tmp_path / "seq")) == 0
    assert _tiny_compare("--out", str(tmp_path / "par"), "--jobs", "2") == 0
    assert "4 runs in 2 processes" in capsys.readouterr().err
    (seq, seq_runs), (par, par_runs) = _errors(tmp_path / "seq"), _errors(tmp_path / "par")
    assert list(seq_runs) == list(par_runs) and len(seq_runs) == 4
    for name in seq_runs:
        assert np.allclose(seq_runs[name], par_runs[name], rtol=1e-9, atol=0), name
    for a, b in zip(seq["models"], par["models"]):
        assert a["model"] == b["model"] and np.isclose(a["rel_l2_mean"], b["rel_l2_mean"], rtol=1e-9)
    assert seq["verdict"].split(" in ")[0] == par["verdict"].split(" in ")[0]


def test_compare_on_a_local_ray_instance_gives_the_sequential_summary(tmp_path, capsys):
    """--ray on a local Ray instance with 2 workers: the runs come back as files, the same as
    the sequential ones (float64, a budget in steps)."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mscalednn[ray]'; the dev install "
                                            "has it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert _tiny_compare("--out", str(tmp_path / "ray"), "--ray", "auto") == 0
    finally:
        ray.shutdown()
    assert "4 runs on Ray (2 CPUs), 1 torch thread(s) each" in capsys.readouterr().err
    assert _tiny_compare("--out", str(tmp_path / "seq")) == 0
    (seq, seq_runs), (par, par_runs) = _errors(tmp_path / "seq"), _errors(tmp_path / "ray")
    assert list(seq_runs) == list(par_runs) and len(seq_runs) == 4
    assert sorted(p.name for p in (tmp_path / "ray" / "runs" / "mscale-seed0").iterdir()) == sorted(
        p.name for p in (tmp_path / "seq" / "runs" / "mscale-seed0").iterdir())
    for name in seq_runs:
        assert np.allclose(seq_runs[name], par_runs[name], rtol=1e-9, atol=0), name
    assert [e["rel_l2_mean"] for e in seq["models"]] == pytest.approx([e["rel_l2_mean"] for e in par["models"]],
                                                                      rel=1e-9)


def test_ray_without_the_package_or_with_jobs_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as where it is not installed
    assert _tiny_compare("--out", str(tmp_path / "a"), "--ray", "auto") == 2
    assert _tiny_compare("--out", str(tmp_path / "b"), "--ray", "auto", "--jobs", "2") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("mscale: error: --ray:") for line in lines)
    assert "pip install 'mscalednn[ray]'" in lines[0] and "--jobs" in lines[1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_stopped_compare_resumes_running_only_what_is_missing(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert _tiny_compare("--out", str(out)) == 0
    before, runs = _errors(out)
    kept = out / "runs" / "mscale-seed0" / "run.json"
    stamp = kept.stat().st_mtime_ns
    (out / "runs" / "vanilla-seed1" / "run.json").unlink()  # stopped while writing this run
    (out / "runs" / "vanilla-seed1" / "model.pt").unlink()
    capsys.readouterr()
    assert _tiny_compare("--resume", str(out)) == 0
    assert "3 of 4 runs finished, 1 to run" in capsys.readouterr().err
    after, runs_after = _errors(out)
    assert kept.stat().st_mtime_ns == stamp  # finished runs are not run again
    assert (out / "runs" / "vanilla-seed1" / "model.pt").exists()
    for name in runs:
        assert np.allclose(runs[name], runs_after[name], rtol=1e-12, atol=0), name
    assert [e["rel_l2_mean"] for e in before["models"]] == pytest.approx([e["rel_l2_mean"] for e in after["models"]])
    # a resume with other models, or with --out as well, is refused with one line
    assert main(["compare", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--models",
                 str(ROOT / "configs/fourier.yaml"), "--resume", str(out)]) == 2
    assert main(["compare", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--models",
                 str(ROOT / "configs/mscale.yaml"), "--resume", str(out), "--out", str(tmp_path / "x")]) == 2
    assert main(["compare", str(ROOT / "problems/poisson1d_multiscale.yaml"), "--models",
                 str(ROOT / "configs/mscale.yaml"), "--jobs", "0", "--out", str(tmp_path / "y")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("mscale: error:") for line in lines)


def test_compare_on_a_domain_with_holes_skips_only_the_grid_spectrum(tmp_path):
    """Off a box: projection and filter are measured on points inside the domain; the grid
    spectrum (which needs u* on the whole box) is left out."""
    models = [str(ROOT / f"configs/{c}.yaml") for c in ("mscale", "vanilla")]
    out = tmp_path / "cmp"
    assert main(["compare", str(ROOT / "problems/perforated2d.yaml"), "--models", *models, "--set", "train.steps=8",
                 "--set", "train.n_interior=128", "--set", "train.n_boundary=64", "--set", "train.n_test=300",
                 "--set", "train.progress=false", "--set", "train.eval_every=4", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [e["model"] for e in summary["models"]] == ["mscale", "vanilla"]
    assert (out / "projection.png").exists() and not (out / "grid.png").exists()
    run = json.loads((out / "runs" / "mscale-seed0" / "run.json").read_text())
    assert list(run["frequency"]["measurements"]) == ["projection", "filter"]


def test_compare_on_a_problem_without_exact_solution_uses_one_reference(tmp_path, monkeypatch):
    """f and g given: the compare computes the finite-difference reference once, keeps it in its
    directory, and every run measures against it (none computes it again)."""
    import mscalednn.reference
    calls, original = [], mscalednn.reference.finite_difference

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(mscalednn.reference, "finite_difference", counted)
    problem = tmp_path / "p.yaml"
    problem.write_text("name: p\ndim: 1\noperator: {a: '1 + x[0]**2'}\nf: 'exp(x[0])'\ng: 'x[0]'\n")
    models = [str(ROOT / f"configs/{c}.yaml") for c in ("mscale", "vanilla")]
    out = tmp_path / "cmp"
    assert main(["compare", str(problem), "--models", *models, "--set", "train.steps=6", "--set", "train.n_test=200",
                 "--set", "train.progress=false", "--set", "train.eval_every=3", "--out", str(out)]) == 0
    assert (out / "reference.npz").is_file() and len(calls) == 1
    for name in ("mscale", "vanilla"):
        run = json.loads((out / "runs" / f"{name}-seed0" / "run.json").read_text())
        assert run["reference"] == "finite-difference" and 0 < run["reference_error"] < 1e-6
        assert math.isfinite(run["rel_l2"])
