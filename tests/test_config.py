"""Bad input: every file in tests/bad/ gives one clear line, exit status 2, nothing written."""

import re
from pathlib import Path

import pytest

from mscalednn.cli import main
from mscalednn.config import apply_overrides, load_run_config
from mscalednn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BAD = sorted((ROOT / "tests" / "bad").glob("*.yaml"))
GOOD_PROBLEM = str(ROOT / "problems" / "poisson1d_multiscale.yaml")
FAST = ["--set", "train.progress=false", "--set", "train.n_test=200"]


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: ")
    return first[len("# expect: "):]


def run(args, capsys):
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.err


@pytest.mark.parametrize("bad", BAD, ids=lambda p: p.stem)
def test_bad_file(bad, tmp_path, capsys):
    out = tmp_path / "run"
    if bad.name.startswith("problem_"):
        args = ["solve", str(bad), "--out", str(out), "--set", "train.steps=2", *FAST]
    else:
        args = ["solve", GOOD_PROBLEM, "--model", str(bad), "--out", str(out), *FAST]
    rc, err = run(args, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mscale: error: {bad}: "), lines[0]
    assert re.search(expected(bad), lines[0]), lines[0]
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("override, message", [
    ("train.steps=-1", r"train\.steps: expected an integer >= 1, got -1"),
    ("train.stpes=10", r"train\.stpes: unknown key \(did you mean 'steps'\?\)"),
    ("model.width=wide", r"model\.width: expected an integer, got 'wide'"),
    ("train.dtype=float16", r"train\.dtype: expected one of 'float32', 'float64', got 'float16'"),
    ("nonsense", r"--set: expected KEY\.PATH=VALUE"),
    ("train.steps.x=1", r"train\.steps\.x: cannot set a key inside a non-mapping value"),
])
def test_bad_override(override, message, tmp_path, capsys):
    rc, err = run(["solve", GOOD_PROBLEM, "--out", str(tmp_path / "r"), "--set", override], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_missing_file(tmp_path, capsys):
    rc, err = run(["solve", str(tmp_path / "nope.yaml")], capsys)
    assert rc == 2 and "nope.yaml: file not found" in err
    rc, err = run(["solve", GOOD_PROBLEM, "--model", str(tmp_path / "cfg.yaml")], capsys)
    assert rc == 2 and "cfg.yaml: file not found" in err


def test_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["solve", GOOD_PROBLEM, "--bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mscale: error:") and len(err.strip().splitlines()) == 1


def test_overrides_parse_yaml_values():
    data = apply_overrides({"train": {"steps": 5}}, ["train.lr=3e-4", "model.scales=[1, 2]", "train.progress=false"])
    assert data == {"train": {"steps": 5, "lr": 3e-4, "progress": False}, "model": {"scales": [1, 2]}}
    run_cfg = load_run_config(None, ["train.lr=3e-4", "model.scales=linear:3"], seed=7)
    assert run_cfg.train.lr == 3e-4 and run_cfg.train.seed == 7
    assert run_cfg.model.options["scales"] == "linear:3"


def test_config_error_names_source_path_expected_and_value():
    err = ConfigError("train.steps", "expected an integer >= 1", -5, source="c.yaml")
    assert str(err) == "c.yaml: train.steps: expected an integer >= 1, got -5"
