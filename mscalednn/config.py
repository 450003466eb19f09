"""The YAML boundary: problem files and model/training configs, strictly validated.

A problem file::

    name: poisson10d
    description: ...
    dim: 10
    domain: [0, 1]            # the same interval on every axis, or {lo: [...], hi: [...]}
    params: {k: 10}           # optional named constants for the expression
    exact: "sum(sin(pi*x) + 0.1*sin(k*pi*x))"

A model/training config::

    model: {kind: mscale, variant: first_layer, scales: "geometric:6", width: 120, ...}
    train: {loss: ritz, steps: 20000, lr: 1.0e-3, ...}

Every error is a :class:`~mscalednn.errors.ConfigError` naming the file, the key path, the
expected form and the value received.
"""

from __future__ import annotations

import copy
import inspect
import re
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import yaml

from .errors import ConfigError, ExpressionError, MscaleError, ProblemError, short_repr
from .expr import check_params, did_you_mean, parse_expression
from .nn import MLP, AdaptiveMscaleDNN, MscaleDNN, Piecewise, count_parameters
from .derivatives import value_and_grad
from .geometry import Ball, Box, Difference, Geometry, Intersection, Shell, Union
from .conditions import KINDS, Condition
from .operator import Operator
from .problem import PoissonProblem, check_finite
from .reference import read_points
from .sampling import Sampler, test_points
from .validate import (Length, Range, Seed, join_path, build_dataclass, check_keys, check_kwargs, check_value,
                       parameters_of)

MODELS = {"mscale": MscaleDNN, "adaptive": AdaptiveMscaleDNN, "mlp": MLP}
ModelKind = Literal["mscale", "adaptive", "mlp"]  # the keys of MODELS
# ranges of the networks' integer arguments (the constructors take plain ints)
MODEL_RANGES = {"out_dim": Range(1, 10**6), "width": Range(1, 10**6), "depth": Range(1, 10**4),
                "hidden_width": Range(1, 10**6), "fourier_features": Range(0, 10**6),
                "fourier_sigma": Range(0.0, lo_open=True)}
MAX_PARAMETERS = 10**9
Positive = Annotated[float, Range(0.0, lo_open=True)]
Count = Annotated[int, Range(1)]
Samples = Annotated[int, Range(1, 10**8)]  # points drawn at once


OptimizerName = Literal["adam", "lbfgs", "gauss_newton"]


@dataclass(frozen=True)
class Phase:
    """One phase of ``train.optimizer``: the optimizer ``name`` until the share ``until`` of the
    budget (steps or time, whichever ends the run) has been used."""

    name: OptimizerName
    until: Annotated[float, Range(0.0, 1.0, lo_open=True)] = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (the ``train:`` section). See README, "Configs", for each key."""

    loss: Literal["auto", "residual", "ritz"] = "auto"
    steps: Count = 20000
    time_limit: Positive | None = None
    lr: Positive = 1e-3
    lr_schedule: Literal["exponential", "step", "cosine", "constant"] = "exponential"
    lr_final: Annotated[float, Range(0.0, 1.0, lo_open=True)] = 0.1
    lr_drops: Count = 3
    beta: Annotated[float, Range(0.0)] = 1000.0
    beta_schedule: Literal["fixed", "staged"] = "fixed"
    n_interior: Samples = 2000
    n_boundary: Samples = 1000
    resample_every: Count = 1
    sampler: Literal["uniform", "sobol"] = "uniform"
    eval_every: Count = 500
    log_every: Count = 10
    n_test: Annotated[int, Range(100, 10**8)] = 10000
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    derivatives: Literal["auto", "forward", "autograd", "hutchinson", "sampled"] = "auto"
    probes: Count = 16
    chunk: Count | None = None
    compile: bool | Literal["auto"] = "auto"
    tf32: bool = False
    progress: bool = True
    tensorboard: bool = False
    checkpoint_every: Count = 500
    max_retries: Annotated[int, Range(0)] = 3
    retry_lr_factor: Annotated[float, Range(0.0, 1.0, lo_open=True)] = 0.5
    optimizer: Literal["auto", "adam", "lbfgs", "gauss_newton"] | Annotated[tuple[Phase, ...], Length(1)] = "adam"
    scale_output: bool = True
    lbfgs_iterations: Annotated[int, Range(1, 10**4)] = 20
    damping: Annotated[float, Range(1e-12, 1e4)] = 1e-4
    ema: Annotated[float, Range(0.0, 0.9999, lo_open=True)] | None = None
    interface_weights: tuple[Annotated[float, Range(0.0)], Annotated[float, Range(0.0)]] | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The ``model:`` section: a registry ``kind`` and the constructor's keyword arguments."""

    kind: ModelKind = "mscale"
    options: dict = field(default_factory=dict)
    by_dim: tuple[tuple[int, dict], ...] = ()  # (d0, options): they replace ``options``' where d >= d0

    def options_for(self, in_dim: int) -> dict:
        """The constructor's options at input dimension ``in_dim``: ``options``, then every
        ``by_dim`` entry whose dimension ``in_dim`` reaches, in increasing order."""
        merged = dict(self.options)
        for d0, extra in sorted(self.by_dim, key=lambda entry: entry[0]):
            if in_dim >= d0:
                merged.update(extra)
        return merged

    def build(self, in_dim: int, interface: Geometry | None = None):
        """A new network for inputs of dimension ``in_dim``; with an ``interface`` shape, two of
        them, one inside it and one outside (:class:`mscalednn.nn.Piecewise`)."""
        if interface is not None:
            return Piecewise(self.build(in_dim), self.build(in_dim), interface)
        return MODELS[self.kind](in_dim=in_dim, **self.options_for(in_dim))

    def to_dict(self) -> dict:
        plain = lambda options: {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}  # noqa: E731
        by_dim = {"by_dim": {d0: plain(extra) for d0, extra in self.by_dim}} if self.by_dim else {}
        return {"kind": self.kind, **plain(self.options), **by_dim}


@dataclass(frozen=True)
class RunConfig:
    """A model and its training settings, as read from a config file (plus overrides)."""

    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": dataclasses.asdict(self.train)}


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys, and keys that are lists or mappings."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, IndexError, KeyError, AttributeError, TypeError) as exc:
            # 2020-13-45, an integer of 5000 digits, "!!int" with no digits
            what = short_repr(node.value, 40) if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {what} as {node.tag.rsplit(':', 1)[-1]} "
                f"({str(exc).split(';')[0][:100]})", node.start_mark) from None


def _mapping_no_duplicates(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        try:
            duplicate = key in keys
            keys.add(key)
        except TypeError:  # a list or a mapping as a key
            raise ConfigError("", f"expected plain keys (names or numbers), got a {type(key).__name__} "
                              f"as a key at line {line}") from None
        if duplicate:  # the same value spelled differently, e.g. 1 and 0x1 (else _find_duplicate)
            raise ConfigError(str(key)[:40], "expected each key once in a mapping, got a duplicate key "
                              f"at line {line}")
    return loader.construct_mapping(node, deep)


def _find_duplicate(root: yaml.Node) -> None:
    """A ConfigError naming the key path of the first key given twice in one mapping."""
    stack, seen = [(root, "")], set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: already checked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            children = []
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, where = (key_node.tag, key_node.value), join_path(path, key_node.value[:40])
                at = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in lines:
                    first = lines[key]
                    here, there = ((f"line {at[0]}, column {at[1]}", f"line {first[0]}, column {first[1]}")
                                   if first[0] == at[0] else (f"line {at[0]}", f"line {first[0]}"))
                    raise ConfigError(where, "expected each key once in a mapping, got a duplicate key "
                                      f"at {here} (first at {there})")
                lines[key] = at
                children.append((value_node, where))
            stack.extend(reversed(children))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed([(v, f"{path}[{i}]") for i, v in enumerate(node.value)]))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)
# YAML 1.1 reads 1e-3 (no dot) as a string; read it as the number every user means
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str):
    """Parse YAML text with the strict loader (duplicate keys are errors, 1e-3 is a number);
    every failure is a one-line ConfigError (without a source)."""
    loader = None
    try:
        loader = _StrictLoader(text)  # checks the characters first
        node = loader.get_single_node()
        if node is None:
            return None
        _find_duplicate(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("", f"malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError("", "malformed YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError("", f"malformed YAML: a value cannot be read ({exc.__class__.__name__}"
                          + (f": {detail[:100]}" if detail else "") + ")") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; every failure is a ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read file ({exc.__class__.__name__}: {exc})", source=str(path)) from None
    try:
        data = parse_yaml(text)
    except ConfigError as exc:
        raise exc.with_source(str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", "expected a mapping of keys to values at the top level", data, source=str(path))
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of ``data`` with ``KEY.PATH=VALUE`` overrides applied (VALUE parsed as YAML)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError("--set", "expected KEY.PATH=VALUE, e.g. train.steps=2000", item)
        try:
            value = parse_yaml(text)
        except ConfigError:
            value = text
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if node.get(part) is None:  # an absent or empty section
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(".".join(parts[:i + 1]), "expected a mapping of keys to values", node,
                                  hint=f"to apply --set {item[:60]}")
        node[parts[-1]] = value
    return data


def build_run_config(data: dict) -> RunConfig:
    """A validated RunConfig from a mapping with ``model`` and ``train`` sections."""
    data = check_keys(data, ["model", "train"], "")
    model = dict(check_keys(data.get("model") or {}, ["kind", "by_dim", *_all_model_keys()], "model"))
    kind = check_value(model.pop("kind", "mscale"), ModelKind, "model.kind")
    by_dim_given = model.pop("by_dim", None) or {}
    options = _model_options(kind, model, "model")
    if not isinstance(by_dim_given, dict):
        raise ConfigError("model.by_dim", "expected a mapping of dimensions to model options, e.g. "
                          "{20: {depth: 1, width: 1000}}", by_dim_given)
    by_dim = []
    for key, extra in by_dim_given.items():
        path = f"model.by_dim.{key}"
        try:
            d0 = int(key)
        except (TypeError, ValueError):
            d0 = 0
        if isinstance(key, bool) or d0 < 1 or str(d0) != str(key).strip():
            raise ConfigError(path, "expected a dimension (an integer >= 1) as the key", key)
        if not isinstance(extra, dict) or not extra:
            raise ConfigError(path, "expected a mapping of model options, e.g. {depth: 1, width: 1000}", extra)
        given = check_kwargs(MODELS[kind], extra, path, skip=("in_dim",))
        _model_options(kind, {**model, **extra}, path, only=given)
        by_dim.append((d0, given))
    if isinstance(data.get("train"), dict) and "operator" in data["train"]:
        raise ConfigError("train.operator", "expected train.derivatives (the derivative method was renamed: "
                          "the PDE's operator is the problem file's business)", data["train"]["operator"],
                          hint=f"write derivatives: {data['train']['operator']}")
    train = build_dataclass(TrainConfig, data.get("train"), "train")
    if train.loss == "ritz" and train.derivatives in ("hutchinson", "sampled"):
        raise ConfigError("train.derivatives", "expected auto, forward or autograd with the Ritz loss (it needs "
                          f"grad u only; {train.derivatives} estimates a Laplacian)", train.derivatives)
    _check_phases(train)
    return RunConfig(ModelConfig(kind, options, tuple(by_dim)), train)


def _model_options(kind: str, given: dict, path: str, only: dict | None = None) -> dict:
    """The constructor's options from ``given``, checked against its signature and ranges, and by
    building the network on no memory (its own checks: scales, widths; its size). Errors name
    ``path``; ``only``: the keys that came from that path (the rest were checked already)."""
    options = check_kwargs(MODELS[kind], given, path, skip=("in_dim",))
    for key, bounds in MODEL_RANGES.items():
        value = options.get(key) if only is None or key in only else None
        if isinstance(value, tuple):
            Length(1).check(value, f"{path}.{key}", "an integer or a list of integers")
            for i, item in enumerate(value):
                bounds.check(item, f"{path}.{key}[{i}]", "an integer")
        elif value is not None:
            bounds.check(value, f"{path}.{key}", "an integer" if isinstance(value, int) else "a number")
    try:  # constructor checks (ranges, scales) run once here, at the boundary, on no memory
        with torch.device("meta"):
            size = count_parameters(MODELS[kind](in_dim=1, **options))
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc.path}", exc.expected, exc.got, hint=exc.hint) from None
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise ConfigError(path, f"expected a network that can be built, got {exc.__class__.__name__}: "
                          f"{str(exc)[:120]}") from None
    if size > MAX_PARAMETERS:
        raise ConfigError(path, f"expected a network of at most {MAX_PARAMETERS:.0e} parameters "
                          "(width, depth, scales)", f"{size:.3g} parameters")
    return options


def _check_phases(train: TrainConfig) -> None:
    """Phases end in increasing order, the last at 1."""
    if isinstance(train.optimizer, str):
        return
    phases = train.optimizer
    for i, (a, b) in enumerate(zip(phases, phases[1:])):
        if not a.until < b.until:
            raise ConfigError(f"train.optimizer[{i + 1}].until", f"expected a share above the previous phase's "
                              f"{a.until:g}", b.until)
    if phases[-1].until != 1.0:
        raise ConfigError(f"train.optimizer[{len(phases) - 1}].until", "expected 1 for the last phase (or no "
                          "until)", phases[-1].until)


def _all_model_keys() -> list[str]:
    return sorted({n for cls in MODELS.values() for n in parameters_of(cls)} - {"self", "in_dim"})


def load_run_config(path: str | Path | None, overrides: list[str] = (), seed: int | None = None) -> RunConfig:
    """Read a model/training config file (or defaults when ``path`` is None) with overrides."""
    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    try:
        data = apply_overrides(data, list(overrides) + ([f"train.seed={seed}"] if seed is not None else []))
        return build_run_config(data)
    except ConfigError as exc:
        raise exc.with_source(source) from None


@dataclass(frozen=True)
class OperatorSpec:
    """The ``operator:`` section: L u = -div(a grad u) + c u + kappa^2 sinh(u) (``eps`` is another
    name for ``a``, as in the Poisson-Boltzmann equation). Each an expression of x."""

    a: str | float | None = None
    eps: str | float | None = None
    c: str | float | None = None
    kappa: str | float | None = None


@dataclass(frozen=True)
class ProblemSpec:
    """A problem file's content, validated; :meth:`build` makes the PoissonProblem."""

    dim: Count
    exact: str | float | None = None
    domain: Any = (0.0, 1.0)
    name: str = "problem"
    description: str = ""
    params: dict[str, float] = field(default_factory=dict)
    operator: OperatorSpec = OperatorSpec()
    f: str | float | None = None
    g: str | float | None = None
    boundary: dict[str, Any] | None = None
    reference: Any = None
    interface: Any = None

    def expression(self, text: str | float | None, path: str):
        if text is None:
            return None
        try:
            return parse_expression(text, self.dim, self.params)
        except ExpressionError as exc:
            raise ConfigError(path, f"bad expression: {exc}") from None

    def build(self) -> PoissonProblem:
        domain = _domain(self.domain, self.dim)
        for name, value in self.params.items():
            try:
                check_params({name: value})
            except ExpressionError as exc:
                raise ConfigError(f"params.{name[:40]}", f"bad parameter: {exc}") from None
        if self.exact is None and (self.f is None or self.g is None):
            missing = " and ".join(k for k in ("f", "g") if getattr(self, k) is None)
            raise ConfigError("exact", "expected an exact solution, or the source f and the boundary data g "
                              f"(then the errors are measured against a reference solution); {missing} missing")
        reference = self.reference_points(domain)
        if self.exact is None and reference is None and not (self.dim <= 3 if isinstance(domain, Box) else
                                                               self.dim in (2, 3)):
            raise ConfigError("exact", "expected an exact solution or a reference file: without them the errors are "
                              "measured against a computed reference, finite differences on a box in 1, 2 or 3 "
                              "dimensions or finite elements on another domain in 2 or 3 (this domain: "
                              f"{type(domain).__name__.lower()} in {self.dim} dimensions)")
        spec = self.operator
        if spec.a is not None and spec.eps is not None:
            raise ConfigError("operator.eps", "expected a or eps (two names of one coefficient), not both", spec.eps)
        op = Operator(*(self.expression(text, f"operator.{key}")
                        for key, text in (("eps" if spec.a is None else "a", spec.a if spec.eps is None else spec.eps),
                                          ("c", spec.c), ("kappa", spec.kappa))))
        u = self.expression(self.exact, "exact")
        conditions = self.conditions(domain, op)
        parts = {"operator": op, "source": self.expression(self.f, "f"), "boundary": self.expression(self.g, "g"),
                 "conditions": conditions, "interface": self.interface_shape(op)}
        try:
            problem = PoissonProblem.on(domain, u, self.name, self.description, **parts, reference=reference)
        except ValueError as exc:
            raise ConfigError("domain", str(exc)) from None
        if problem.interface is not None:
            try:
                problem.interface_points(16, 0)
            except ValueError as exc:
                raise ConfigError("interface", str(exc), self.interface) from None
        return problem

    def interface_shape(self, op: Operator) -> Geometry | None:
        """The ``interface:`` section: a shape (as in ``domain:``) whose boundary is where the
        coefficient a jumps; None without one."""
        if self.interface is None:
            return None
        if not op.jumps:
            raise ConfigError("interface", "expected a coefficient a (or eps) that jumps, written with where(...): "
                              "an interface separates its two values", self.interface)
        return _domain(self.interface, self.dim, "interface")

    def reference_points(self, domain: Geometry):
        """The ``reference:`` section: a user's solution at points, ``FILE.npz`` or ``{file: FILE.npz,
        error: E}`` (E: its own estimated relative L2 error, where known); None without one."""
        if self.reference is None:
            return None
        given = {"file": self.reference} if isinstance(self.reference, str) else self.reference
        given = check_keys(given, ["file", "error"], "reference", required=["file"])
        if self.exact is not None:
            raise ConfigError("reference", "expected exact or a reference file, not both (the errors are measured "
                              "against one of them)", given["file"])
        if not isinstance(given["file"], str):
            raise ConfigError("reference.file", "expected the path of a .npz file", given["file"])
        error = given.get("error")
        if error is not None and not (isinstance(error, (int, float)) and not isinstance(error, bool) and error >= 0):
            raise ConfigError("reference.error", "expected a number >= 0 (the reference's relative L2 error)", error)
        try:
            return read_points(given["file"], domain, None if error is None else float(error))
        except ProblemError as exc:
            raise ConfigError("reference", str(exc)) from None


    def conditions(self, domain: Geometry, op: Operator) -> tuple[tuple[str, Condition], ...]:
        """The ``boundary:`` section: a condition for every named part of the domain's boundary,
        ``dirichlet`` / ``neumann`` (g from the exact solution, or for Dirichlet the top-level g),
        ``{dirichlet: G}``, ``{neumann: G}`` or ``{robin: {alpha: A, g: G}}``."""
        if self.boundary is None:
            return ()
        parts = list(domain.parts)
        for name in self.boundary:
            if name not in parts:
                raise ConfigError(join_path("boundary", str(name)), f"expected a part of the domain's boundary "
                                  f"({', '.join(parts)}){did_you_mean(str(name), parts)}")
        missing = [name for name in parts if name not in self.boundary]
        if missing:
            raise ConfigError("boundary", f"expected a condition for every part of the boundary ({', '.join(parts)}); "
                              f"none for {', '.join(missing)}")
        out = []
        for name in parts:
            path, given = join_path("boundary", name), self.boundary[name]
            entry = {given: None} if isinstance(given, str) else given
            if not (isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in KINDS):
                raise ConfigError(path, "expected dirichlet, neumann, {dirichlet: G}, {neumann: G} or {robin: {alpha: A, "
                                  "g: G}}", given)
            kind, value = next(iter(entry.items()))
            path = join_path(path, kind)
            if kind == "robin":
                value = check_keys(value, ["alpha", "g"], path, required=["alpha"])
                alpha, g = self.expression(value["alpha"], join_path(path, "alpha")), value.get("g")
                g = self.expression(g, join_path(path, "g"))
            else:
                alpha, g = None, self.expression(value, path)
            if self.exact is None and g is None and (kind != "dirichlet" or self.g is None):
                raise ConfigError(path, f"expected the {kind} data g (there is no exact solution to derive it from)")
            out.append((name, Condition(kind, g, alpha)))
        if all(c.kind == "neumann" for _, c in out) and op.c is None and op.kappa is None:
            raise ConfigError("boundary", "expected a dirichlet or robin part: with neumann conditions alone and no c or "
                              "kappa, u is fixed only up to a constant")
        return tuple(out)


SHAPES = ("box", "ball", "shell")
COMBINATIONS = {"difference": Difference, "union": Union, "intersection": Intersection}


def read_shape(value: Any, dim: int, path: str = "domain") -> Geometry:
    """A shape written as in a problem file's ``domain:`` (README, "Problem files"), e.g. what
    :meth:`mscalednn.geometry.Geometry.spec` returns; ConfigError naming ``path`` if it is not one."""
    return _domain(value, dim, path)


def _domain(value: Any, dim: int, path: str = "domain") -> Geometry:
    """The domain a problem file states (README, "Problem files"): ``[a, b]`` (the box [a, b]^d),
    ``{lo: [...], hi: [...]}``, one shape ``{box | ball | shell: {...}}``, or a combination
    ``{difference | union | intersection: [domain, domain, ...]}`` (difference: the first minus
    all the others)."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in (*SHAPES, *COMBINATIONS):
        kind, spec = next(iter(value.items()))
        if kind in COMBINATIONS:
            items = check_value(spec, tuple[Any, ...], join_path(path, kind))
            if len(items) < 2:
                raise ConfigError(join_path(path, kind), "expected a list of at least two domains", list(items))
            shapes = [_domain(item, dim, f"{join_path(path, kind)}[{i}]") for i, item in enumerate(items)]
            out = shapes[0]
            for i, shape in enumerate(shapes[1:], 1):
                if kind == "difference" and not _overlaps(shape, shapes[0]):
                    raise ConfigError(f"{join_path(path, kind)}[{i}]", f"expected a shape that overlaps "
                                      f"{join_path(path, kind)}[0] (this one removes nothing)", items[i])
                out = COMBINATIONS[kind](out, shape)
            if path == "domain" and _empty(out):
                raise ConfigError(path, "expected a domain with volume (this combination is empty)", value)
            return out
        return _shape(kind, spec, dim, join_path(path, kind))
    if isinstance(value, dict):
        value = check_keys(value, ["lo", "hi", "name", "faces"], path, required=["lo", "hi"])
        return _shape("box", value, dim, path)
    a, b = check_value(value, tuple[float, float], path)
    if a >= b:
        raise ConfigError(path, "expected lo < hi on every axis", {"lo": [a] * dim, "hi": [b] * dim})
    return Box((a,) * dim, (b,) * dim)


def _faces(value: Any, dim: int, path: str) -> tuple[tuple[int, str], ...]:
    """A box's named faces: ``{x0_lo: inlet, x1_hi: top, ...}`` (face x_k = lo_k or hi_k, k from 0
    as in the expressions' x[k]) -> ((2k or 2k + 1, name), ...)."""
    if not isinstance(value, dict):
        raise ConfigError(path, "expected a mapping from faces (x0_lo, x0_hi, x1_lo, ...) to part names", value)
    out = []
    for key, name in value.items():
        match = re.fullmatch(r"x(\d+)_(lo|hi)", str(key))
        if not match or int(match[1]) >= dim:
            raise ConfigError(join_path(path, str(key)[:40]), f"expected a face x<k>_lo or x<k>_hi with k from 0 to "
                              f"{dim - 1} (the face x[k] = lo or hi)")
        out.append((2 * int(match[1]) + (match[2] == "hi"), check_value(name, str, join_path(path, str(key)))))
    return tuple(out)


def _point(value: Any, dim: int, path: str) -> tuple[float, ...]:
    """A point: a list of ``dim`` numbers, or one number for every coordinate."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * dim
    point = check_value(value, tuple[float, ...], path)
    if len(point) != dim:
        raise ConfigError(path, f"expected a list of {dim} numbers (dim is {dim}), or one number", list(point))
    return point


def _shape(kind: str, spec: Any, dim: int, path: str) -> Geometry:
    positive = Annotated[float, Range(0.0, lo_open=True)]
    if kind == "box":
        spec = check_keys(spec, ["lo", "hi", "name", "faces"], path, required=["lo", "hi"])
        lo, hi = (_point(spec[k], dim, join_path(path, k)) for k in ("lo", "hi"))
        if any(x >= y for x, y in zip(lo, hi)):
            raise ConfigError(path, "expected lo < hi on every axis", {"lo": list(lo), "hi": list(hi)})
        return Box(lo, hi, check_value(spec.get("name", "boundary"), str, join_path(path, "name")),
                   _faces(spec.get("faces") or {}, dim, join_path(path, "faces")))
    if kind == "ball":
        spec = check_keys(spec, ["center", "radius", "name"], path, required=["center", "radius"])
        return Ball(_point(spec["center"], dim, join_path(path, "center")),
                    check_value(spec["radius"], positive, join_path(path, "radius")),
                    check_value(spec.get("name", "boundary"), str, join_path(path, "name")))
    spec = check_keys(spec, ["center", "inner", "outer", "inner_name", "outer_name"], path,
                      required=["center", "inner", "outer"])
    inner, outer = (check_value(spec[k], positive, join_path(path, k)) for k in ("inner", "outer"))
    if inner >= outer:
        raise ConfigError(path, "expected inner < outer", {"inner": inner, "outer": outer})
    names = (check_value(spec.get(f"{k}_name", k), str, join_path(path, f"{k}_name")) for k in ("inner", "outer"))
    return Shell(_point(spec["center"], dim, join_path(path, "center")), inner, outer, *names)


def _overlaps(hole: Geometry, domain: Geometry, n: int = 20000) -> bool:
    """Whether some of ``hole`` lies inside ``domain`` (sampled)."""
    return bool(domain.interior(hole.sample_interior(n, np.random.default_rng(0))).any())


def _empty(domain: Geometry) -> bool:
    try:
        domain.sample_interior(1, np.random.default_rng(0))
    except ValueError:
        return True
    return False


def load_problem(path: str | Path) -> tuple[PoissonProblem, dict]:
    """The problem stated in a YAML file, and the file's validated content (for the record)."""
    data = read_yaml(path)
    if isinstance(data, dict) and data.get("reference") is not None:  # a file named relative to the problem file
        given = data["reference"]
        name = given if isinstance(given, str) else given.get("file") if isinstance(given, dict) else None
        if isinstance(name, str) and not Path(name).is_absolute():
            resolved = str(Path(path).resolve().parent / name)
            data = {**data, "reference": resolved if isinstance(given, str) else {**given, "file": resolved}}
    return problem_from_dict(data, str(path))


def problem_from_dict(data: dict, source: str) -> tuple[PoissonProblem, dict]:
    """The problem stated by a problem file's mapping (errors name ``source``), and the
    validated content."""
    try:
        spec = build_dataclass(ProblemSpec, data, "")
        if spec.dim > 10000:
            raise ConfigError("dim", "expected an integer between 1 and 10000", spec.dim)
        problem = spec.build()
        check_samples(problem)
    except MscaleError as exc:
        if isinstance(exc, ConfigError):
            raise exc.with_source(source) from None
        raise ConfigError("", str(exc), source=source) from None
    return problem, dataclasses.asdict(spec)


def check_samples(problem: PoissonProblem) -> None:
    """ProblemError unless u* and grad u* (on the test points, or 1,024 random ones for d > 2, and
    on 1,024 boundary points) and f (16 interior points: f costs d backward passes) are finite: a
    singular problem is refused before a run starts, with the place it fails. (Every training
    batch's f and g are checked again in :func:`mscalednn.solve`.) ConfigError where the
    coefficient a is not positive (on 4,096 interior points), or where a given f or g disagrees
    with the exact solution (on 256 interior and 256 boundary points)."""
    x_test = torch.as_tensor(test_points(problem, 10000 if problem.dim <= 2 else 1024), dtype=torch.float64)
    sampler = Sampler(problem, seed=0, dtype=torch.float64)
    x_in, x_bd = sampler.interior(16), sampler.boundary(1024)
    x = torch.cat([x_test, x_bd])
    fields = {"the source f": (x_in, problem.f(x_in)), "the boundary data g": (x_bd, problem.g(x_bd))}
    if problem.has_exact:
        u, grad_u = value_and_grad(problem.exact, x, create_graph=False)
        fields = {"the exact solution u*": (x, u.detach()), "grad u*": (x, grad_u), **fields}
    check_finite(problem, **fields)
    op = problem.operator
    if not op.is_laplace:
        x_many = sampler.interior(4096)
        a, grad_a, c, kappa2 = (t.detach() for t in op.coefficients(x_many))
        check_finite(problem, **{"the coefficient a": (x_many, a), "grad a": (x_many, grad_a),
                                 "the coefficient c": (x_many, c), "kappa": (x_many, kappa2)})
        if float(a.min()) <= 0:
            i = int(a.argmin())
            raise ConfigError("operator.a", f"expected a > 0 in the domain (found {float(a[i]):.4g} at x = "
                              f"{_where(x_many[i])})")
    if problem.has_exact:
        _agree(problem, "f", sampler.interior(256), problem.source, dataclasses.replace(problem, source=None).f)
        _agree(problem, "g", sampler.boundary(256), problem.boundary, problem.exact)
        x_bd = sampler.boundary(1024)
        part, names = problem.geometry.part_of(x_bd.numpy()), list(problem.geometry.parts)
        normal = torch.as_tensor(problem.geometry.boundary_normal(x_bd.numpy()))
        for name, condition in problem.conditions:
            rows = torch.as_tensor(part == names.index(name))
            if condition.g is not None and bool(rows.any()):
                _agree(problem, f"boundary.{name}.{condition.kind}", x_bd[rows], condition.g,
                       lambda y, rows=rows: condition.derived_g(y, normal[rows], *value_and_grad(problem.exact, y, False)))


def _where(x: torch.Tensor) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in x.tolist()[:6]) + (", ...)" if x.numel() > 6 else ")")


def _agree(problem: PoissonProblem, key: str, x: torch.Tensor, given, derived) -> None:
    """ConfigError unless the ``given`` field (f or g; None: nothing to check) equals the one
    ``derived`` from the exact solution to 1e-6 of its size."""
    if given is None:
        return
    a, b = given(x).detach(), derived(x).detach()
    bad = (a - b).abs() > 1e-6 * (1 + float(b.abs().max()))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        what = {"f": "f = L u* (the operator applied to the exact solution)", "g": "g = u* on the boundary"}.get(
            key, "g = alpha u* + beta du*/dn of the exact solution")
        raise ConfigError(key, f"expected {what}: {float(a[i]):.6g} given, {float(b[i]):.6g} from u* at x = "
                          f"{_where(x[i])} ({int(bad.sum())} of {x.shape[0]} sample points disagree); give one of them, "
                          "or correct either")
