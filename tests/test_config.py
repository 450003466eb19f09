"""Bad input: every file in tests/bad/ gives one clear line, exit status 2, nothing written."""

import re
from pathlib import Path

import pytest

from mscalednn.cli import main
from mscalednn.config import apply_overrides, load_run_config
from mscalednn.errors import ConfigError
from mscalednn.fprinciple import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
BAD = sorted((ROOT / "tests" / "bad").glob("*.yaml"))
GOOD_PROBLEM = str(ROOT / "problems" / "poisson1d_multiscale.yaml")


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
    # speed-ups for the keys the file does not set (a case that is wrongly accepted trains briefly)
    fast = [arg for key, value in (("steps", 2), ("progress", "false"), ("n_test", 200))
            if f"{key}:" not in bad.read_text() for arg in ("--set", f"train.{key}={value}")]
    if bad.name.startswith("problem_"):
        args = ["solve", str(bad), "--out", str(out), *fast]
    elif bad.name.startswith("fprinciple_"):  # fprinciple_EXPERIMENT_what.yaml
        experiment = bad.stem.split("_")[1]
        assert experiment in EXPERIMENTS, bad.name
        args = ["fprinciple", experiment, "--config", str(bad), "--out", str(out)]
    else:
        assert bad.name.startswith(("model_", "train_")), bad.name
        args = ["solve", GOOD_PROBLEM, "--model", str(bad), "--out", str(out), *fast]
    rc, err = run(args, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mscale: error: {bad}: "), lines[0]
    assert re.search(expected(bad), lines[0]), lines[0]
    assert "Traceback" not in err
    assert not out.exists()  # nothing written


def test_bad_corpus_is_specific():
    """Every case of tests/bad/ names what is wrong: a key path (or a YAML position) and the
    expectation, not a catch-all pattern."""
    assert len(BAD) >= 45
    for bad in BAD:
        pattern = expected(bad)
        assert pattern.strip(".*^$ ") and not pattern.startswith(".*"), bad.name
        assert re.search(r"expected|unknown key|missing required key|bad expression|bad parameter|malformed YAML",
                         pattern), bad.name


@pytest.mark.parametrize("override, message", [
    ("train.steps=-1", r"train\.steps: expected an integer >= 1, got -1"),
    ("train.stpes=10", r"train\.stpes: unknown key \(did you mean 'steps'\?\)"),
    ("model.width=wide", r"model\.width: expected an integer, got 'wide'"),
    ("train.dtype=float16", r"train\.dtype: expected one of 'float32', 'float64', got 'float16'"),
    ("nonsense", r"--set: expected KEY\.PATH=VALUE"),
    ("train.steps.x=1", r"train\.steps: expected a mapping of keys to values, got [0-9]+ "
                        r"\(to apply --set train\.steps\.x=1\)"),
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


def test_model_options_by_dimension_replace_the_others_from_their_dimension_on(tmp_path):
    """model.by_dim: {d0: options} replaces those options where d >= d0, in increasing d0; the
    saved config reads back to the same networks (resume)."""
    from mscalednn.config import build_run_config
    from mscalednn.nn import count_parameters

    run_cfg = load_run_config(None, ["model.kind=mscale", "model.variant=first_layer", "model.width=12",
                                     "model.depth=3", "model.by_dim={20: {depth: 1, width: 30}, 50: {width: 40}}",
                                     "model.by_dim.30.scales=[1, 2]"])
    assert run_cfg.model.options_for(19) == run_cfg.model.options
    assert run_cfg.model.options_for(20)["depth"] == 1 and run_cfg.model.options_for(20)["width"] == 30
    assert run_cfg.model.options_for(30)["scales"] == (1, 2)
    assert run_cfg.model.options_for(50)["width"] == 40 and run_cfg.model.options_for(50)["depth"] == 1
    net = run_cfg.model.build(25)
    assert len(net.stack.layers) == 0 and net.first.out_features == 30
    again = build_run_config(run_cfg.to_dict())
    for d in (5, 20, 30, 60):
        assert again.model.options_for(d) == run_cfg.model.options_for(d)
        assert count_parameters(again.model.build(d)) == count_parameters(run_cfg.model.build(d))


def test_config_error_names_source_path_expected_and_value():
    err = ConfigError("train.steps", "expected an integer >= 1", -5, source="c.yaml")
    assert str(err) == "c.yaml: train.steps: expected an integer >= 1, got -5"
