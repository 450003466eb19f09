"""Property-based tests of the YAML boundary: whatever a problem file, a model/training config,
an F-Principle config, a ``--set`` override or an ``exact:`` expression holds, reading it either
succeeds or raises a one-line ConfigError naming its source; never another exception, never a hang.
"""

import dataclasses
import inspect
import signal
from contextlib import contextmanager

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mscalednn.config import MODELS, ProblemSpec, TrainConfig, load_problem, load_run_config
from mscalednn.errors import ConfigError, MscaleError
from mscalednn.fprinciple import EXPERIMENTS, load_settings

FUZZ = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
LIMIT_S = 20  # one example taking longer than this counts as a hang

PROBLEM_KEYS = [f.name for f in dataclasses.fields(ProblemSpec)]
TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
MODEL_KEYS = sorted({n for cls in MODELS.values() for n in inspect.signature(cls).parameters} - {"self"}) + ["kind"]
SETTINGS_KEYS = sorted({f.name for e in EXPERIMENTS.values() for f in dataclasses.fields(e.settings)})
TYPOS = ["", "stpes", "Dim", "model", "train", "__class__", "lo", "hi", "k", "x", "1", "null", "a.b"]

# scalars as YAML can state them, including the awkward ones
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-3, 300), st.sampled_from([0, -1, 10**6, 10**8, 2**32, 2**64, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e308, 0.5, 2.5]),
    st.text(max_size=12), st.sampled_from(["tanh", "relu", "mscale", "mlp", "geometric:6", "linear:0",
                                           "geometric:x", "geometric:99999", "auto", "sum(x)", "ritz"]),
)


def nested(keys):
    """Random nested data whose mapping keys are mostly ``keys``."""
    key = st.one_of(st.sampled_from(keys + TYPOS), st.text(max_size=8), st.integers(-2, 2), st.none())
    return st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(key, inner, max_size=4), max_leaves=12)


def _defaults(fields) -> dict:
    return {name: list(v) if isinstance(v, tuple) else v for name, v in fields if v is not inspect.Parameter.empty
            and v is not dataclasses.MISSING}


# a valid value for most keys, so that the checks past the first bad value run too
DEFAULTS = {
    **_defaults((p.name, p.default) for cls in MODELS.values() for p in inspect.signature(cls).parameters.values()),
    **_defaults((f.name, f.default) for f in dataclasses.fields(TrainConfig)),
    **_defaults((f.name, f.default) for e in EXPERIMENTS.values() for f in dataclasses.fields(e.settings)),
    "kind": "mlp", "scales": "linear:3", "width": 8, "widths": [8, 8], "fcn_widths": [8], "dim": 2,
    "exact": "sum(sin(pi*x))", "domain": [0, 1], "params": {"k": 2}, "name": "p", "description": "",
}


def mostly(good, bad, odds: int = 4):
    """``good`` ``odds`` times out of ``odds + 1``, else ``bad``."""
    return st.integers(0, odds).flatmap(lambda i: bad if i == 0 else good)


def section(keys, required=()):
    """A mapping of known keys (``required`` and a few others), most values valid."""
    return st.lists(st.sampled_from(keys), max_size=4, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: _value(k) for k in [*required, *chosen]}))


def _value(key):
    return mostly(st.just(DEFAULTS[key]) if key in DEFAULTS else SCALARS, st.one_of(SCALARS, nested([key])))


# random text built from YAML's punctuation, indentation (tabs too) and real key names
YAML_TEXT = st.lists(st.one_of(
    st.sampled_from(list(":-[]{},&*!|>'\"#%@`?~=.\t\n ") + ["\n  ", ": ", "- ", "&a ", "*a", "!!int ", "!!python/object ",
                                                              "<<: ", "---\n", "...\n", "? ", ".nan", ".inf", "0x1F", "1e400",
                                                              "1" * 5000]),
    st.sampled_from(PROBLEM_KEYS + TRAIN_KEYS + MODEL_KEYS + SETTINGS_KEYS + TYPOS),
    st.text(max_size=6)), max_size=40).map("".join)

# expressions: trees of the grammar, with forbidden pieces mixed in; and random token strings
LEAF = st.sampled_from(["x", "x[0]", "x[-1]", "x[1:]", "x[::2]", "i", "d", "pi", "e", "k", "2", "0.5", "0", "1e12",
                        "1e13", "-3", "__class__", "x.T", "'s'", "True", "y", "sinn(x)"])
TREE = st.recursive(LEAF, lambda a: st.one_of(
    st.tuples(a, st.sampled_from(["+", "-", "*", "/", "%", "@", "<", " and "]), a).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
    st.tuples(st.sampled_from(["sin", "exp", "log", "sqrt", "sum", "prod", "norm", "min", "mean", "abs", "__import__"]),
              a).map(lambda t: f"{t[0]}({t[1]})"),
    st.tuples(a, st.sampled_from(["2", "-1", "0.5", "64", "65", "x[0]", "k"])).map(lambda t: f"{t[0]}**{t[1]}"),
    st.tuples(a, a).map(lambda t: f"dot({t[0]}, {t[1]})"),
    st.tuples(a, st.sampled_from(["1", "-1", "0.5", "k"])).map(lambda t: f"roll({t[0]}, {t[1]})"),
    st.tuples(a, st.sampled_from(["0", "1", "-1", "5", "1:", "::0", "k"])).map(lambda t: f"({t[0]})[{t[1]}]"),
    a.map(lambda t: f"(lambda: {t})()"), a.map(lambda t: f"sum([{t} for v in x])"),
), max_leaves=12)
TOKENS = st.lists(st.sampled_from(
    ["x", "x", "[", "]", "0", "1", "2", "9", "-1", "+", "-", "*", "/", "**", "(", ")", ",", ".", ":", " ",
     "sin", "exp", "sum", "prod", "norm", "dot", "roll", "log", "pi", "k", "d", "i", "e", "1e308", "99999999999999",
     "__class__", "__import__", "lambda", "import", "for", "in", "if", "'s'", "x.T", "[v for v in x]", "=",
     "9**9**9", "**64", "**65", "0.5"]), max_size=25).map("".join)
EXPRESSION = st.one_of(TREE, TREE, TOKENS)


@contextmanager
def time_limit(seconds):
    def alarm(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def accepts_or_config_error(load, source):
    """``load()`` succeeds, or raises a one-line ConfigError naming ``source``."""
    try:
        with time_limit(LIMIT_S):
            return load()
    except MscaleError as exc:
        message = str(exc)
        assert isinstance(exc, ConfigError), f"{type(exc).__name__}: {message}"
        assert message.startswith(f"{source}: "), message
        assert "\n" not in message and "\r" not in message and len(message) < 2000, message
        return None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def write(workdir, text: str):
    path = workdir / "case.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


@FUZZ
@given(text=YAML_TEXT)
def test_random_text_to_every_loader(workdir, text):
    path = write(workdir, text)
    accepts_or_config_error(lambda: load_problem(path), path)
    accepts_or_config_error(lambda: load_run_config(path), path)
    accepts_or_config_error(lambda: load_settings("1d", config=path), path)


@FUZZ
@given(data=mostly(section(PROBLEM_KEYS, required=("dim", "exact")), st.one_of(section(PROBLEM_KEYS), nested(PROBLEM_KEYS))))
def test_random_problem_file(workdir, data):
    path = write(workdir, dump(data))
    accepts_or_config_error(lambda: load_problem(path), path)


@FUZZ
@given(dim=mostly(st.integers(1, 4), SCALARS), exact=mostly(EXPRESSION, SCALARS),
       params=st.one_of(st.just({"k": 3}), st.none(), st.dictionaries(
           st.sampled_from(["k", "a", "x", "sin", "_p", "pi", "1"]), SCALARS, max_size=2)))
def test_random_expression(workdir, dim, exact, params):
    data = {"dim": dim, "exact": exact, **({"params": params} if params is not None else {})}
    path = write(workdir, dump(data))
    accepts_or_config_error(lambda: load_problem(path), path)


@FUZZ
@given(data=mostly(st.fixed_dictionaries({}, optional={"model": section(MODEL_KEYS), "train": section(TRAIN_KEYS)}),
                   nested(["model", "train"] + MODEL_KEYS + TRAIN_KEYS)))
def test_random_run_config(workdir, data):
    path = write(workdir, dump(data))
    accepts_or_config_error(lambda: load_run_config(path), path)


@FUZZ
@given(case=st.sampled_from(sorted(EXPERIMENTS)).flatmap(lambda name: st.tuples(st.just(name), mostly(
    section([f.name for f in dataclasses.fields(EXPERIMENTS[name].settings)]), nested(SETTINGS_KEYS)))))
def test_random_fprinciple_config(workdir, case):
    name, data = case
    path = write(workdir, dump(data))
    accepts_or_config_error(lambda: load_settings(name, config=path), path)


OVERRIDE_KEY = mostly(
    st.sampled_from([f"train.{k}" for k in TRAIN_KEYS] + [f"model.{k}" for k in MODEL_KEYS]),
    st.one_of(st.sampled_from(["train", "model", "train.steps.x", "model.width.0", ".", "train.", "", "x=y"]),
              st.text(alphabet="trainmodel._=[]:", max_size=12)))
OVERRIDE_VALUE = mostly(st.sampled_from(sorted({str(v).lower() if isinstance(v, bool) else str(v)
                                                for v in DEFAULTS.values() if not isinstance(v, dict)})),
                        st.one_of(st.text(max_size=12), YAML_TEXT, SCALARS.map(lambda v: yaml.safe_dump(v).strip())),
                        odds=2)


@FUZZ
@given(key=OVERRIDE_KEY, value=OVERRIDE_VALUE, sep=mostly(st.just("="), st.sampled_from(["", "=="])))
def test_random_override(key, value, sep):
    accepts_or_config_error(lambda: load_run_config(None, [f"{key}{sep}{value}"]), "defaults")
