"""Validation of plain data (from YAML) against Python type hints.

One mechanism checks every configuration: the fields of a dataclass, or the parameters of a
network constructor, are the schema. Unknown keys are errors with a "did you mean" hint, and
every message names the key path, the expected form and the value received.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Annotated, Any, Literal, Union

from .errors import ConfigError, short_repr


@dataclass(frozen=True)
class Range:
    """Bounds for a number: ``lo <= value`` (or ``<`` when ``lo_open``) and ``value <= hi``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def check(self, value: float, path: str, what: str) -> None:
        if (self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)) \
                or (self.hi is not None and value > self.hi):
            raise ConfigError(path, f"expected {what}{self.bounds()}", value)

    def bounds(self) -> str:
        """The bounds in words, e.g. `` >= 1`` or `` > 0 and <= 1``."""
        parts = ([f"{'>' if self.lo_open else '>='} {_num(self.lo)}"] if self.lo is not None else []) \
            + ([f"<= {_num(self.hi)}"] if self.hi is not None else [])
        return "".join(" " + p if i == 0 else " and " + p for i, p in enumerate(parts))


@dataclass(frozen=True)
class Length:
    """Bounds on the number of items of a list."""

    lo: int = 1

    def check(self, value: Sequence, path: str, what: str) -> None:
        if len(value) < self.lo:
            items = f"{self.lo} item{'s' if self.lo > 1 else ''}"
            raise ConfigError(path, f"expected {what} with at least {items}", list(value))


MAX_ITEMS = 100_000  # a longer list is refused before its items are checked (YAML aliases can
                     # make lists of billions of items from a few lines)
Seed = Annotated[int, Range(0, 2**32 - 1)]  # numpy's generators take seeds below 2^32


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _plural(text: str) -> str:
    """``"an integer >= 1"`` -> ``"integers >= 1"``, for "a list of ..."."""
    for article in ("a ", "an "):
        if text.startswith(article):
            head, _, rest = text[len(article):].partition(" ")
            return f"{head}s {rest}".rstrip()
    return f"values, each {text}"


def describe(hint: Any) -> str:
    """A short human description of a type hint, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return describe(args[0]) + "".join(m.bounds() for m in args[1:] if isinstance(m, Range))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is dict:
        return f"a mapping of {_plural(describe(args[0]))} to {_plural(describe(args[1]))}"
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(inner) > 1 and Ellipsis not in args:
            kinds = {describe(a) for a in inner}
            return f"a list of {len(inner)} " + (_plural(kinds.pop()) if len(kinds) == 1 else "items")
        return f"a list of {_plural(describe(inner[0]))}" if inner else "a list"
    if dataclasses.is_dataclass(hint):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(hint))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null", dict: "a mapping"}.get(hint, getattr(hint, "__name__", str(hint)))


def check_value(value: Any, hint: Any, path: str) -> Any:
    """``value`` converted to the type ``hint`` describes, or a :class:`ConfigError`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, path)
    if origin is Annotated:
        try:
            out = check_value(value, args[0], path)
        except ConfigError as exc:  # say the bounds too: "an integer >= 1", not "an integer"
            if exc.path != path or exc.expected != f"expected {describe(args[0])}":
                raise
            raise ConfigError(path, f"expected {describe(hint)}", value, hint=exc.hint) from None
        for meta in args[1:]:
            if isinstance(meta, (Range, Length)):
                meta.check(out, path, describe(args[0]))
        return out
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        close = get_close_matches(value, [str(a) for a in args], n=1) if isinstance(value, str) else []
        raise ConfigError(path, f"expected {describe(hint)}", value,
                          hint=f"did you mean {close[0]!r}?" if close else "")
    if origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return check_value(value, option, path)
            except ConfigError as exc:
                errors.append((option, exc))
        # a list given where one option is a list: that option's own message says what is wrong inside
        shaped = [exc for option, exc in errors if isinstance(value, (list, tuple)) and _is_sequence(option)]
        if len(shaped) == 1 and shaped[0].path != path:
            raise shaped[0]
        raise ConfigError(path, f"expected {describe(hint)}", value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected {describe(hint)}", value)
        key_hint, value_hint = args
        return {check_value(k, key_hint, path): check_value(v, value_hint, join_path(path, str(k)[:40]))
                for k, v in value.items()}
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected {describe(hint)}", value)
        if len(value) > MAX_ITEMS:
            raise ConfigError(path, f"expected {describe(hint)} of at most {MAX_ITEMS} items",
                              f"a list of {len(value)} items")
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(inner) > 1 and Ellipsis not in args:
            if len(value) != len(inner):
                raise ConfigError(path, f"expected a list of {len(inner)} items", value)
            return tuple(check_value(v, h, f"{path}[{i}]") for i, (v, h) in enumerate(zip(value, inner)))
        item = inner[0] if inner else Any
        return tuple(check_value(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(path, "expected a finite number", value)
            try:
                return float(value)
            except OverflowError:  # an integer beyond 1e308
                raise ConfigError(path, "expected a finite number", value) from None
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is dict:
        if isinstance(value, dict):
            return value
    else:
        raise TypeError(f"validate: unsupported type hint {hint!r} at {path}")
    raise ConfigError(path, f"expected {describe(hint)}", value)


def _is_sequence(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _is_sequence(typing.get_args(hint)[0])
    return origin in (list, tuple, Sequence) or hint in (list, tuple)


def check_keys(data: Any, known: Sequence[str], path: str, required: Sequence[str] = ()) -> dict:
    """``data`` as a mapping whose keys are all in ``known`` and include ``required``."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, "expected a mapping of keys to values", data)
    for key in data:
        if not isinstance(key, str) or key not in known:
            close = get_close_matches(key, known, n=1) if isinstance(key, str) and len(key) < 100 else []
            hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known)
            name = key if isinstance(key, str) and len(key) <= 40 and key.isprintable() else short_repr(key, 40)
            raise ConfigError(join_path(path, name), "unknown key", hint=hint)
    for key in required:
        if key not in data:
            raise ConfigError(join_path(path, key), "missing required key")
    return dict(data)


def build_dataclass(cls: type, data: Any, path: str = "") -> Any:
    """An instance of dataclass ``cls`` from a mapping, every field checked against its hint."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    data = check_keys({} if data is None else data, [f.name for f in fields], path, required)
    return cls(**{k: check_value(v, hints[k], join_path(path, k)) for k, v in data.items()})


def parameters_of(func: Callable) -> dict[str, inspect.Parameter]:
    """The named parameters of ``func``; for a class whose constructor passes ``**kwargs`` on,
    its base class's parameters too (a subclass that adds options to its base's)."""
    params = dict(inspect.signature(func).parameters)
    variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    if not (inspect.isclass(func) and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())):
        return params
    base = next(c for c in func.__mro__[1:] if "__init__" in vars(c))
    own = {n: p for n, p in params.items() if p.kind not in variadic}
    return {**{n: p for n, p in parameters_of(base).items() if p.kind not in variadic}, **own}


def check_kwargs(func: Callable, data: Any, path: str = "", skip: Sequence[str] = ()) -> dict:
    """Keyword arguments for ``func`` from a mapping, checked against its signature's hints."""
    params = {name: p for name, p in parameters_of(func).items() if name not in skip and name != "self"}
    hints = {}
    for f in ([c.__init__ for c in reversed(func.__mro__) if "__init__" in vars(c)] if inspect.isclass(func)
              else [func]):
        hints.update(typing.get_type_hints(f, include_extras=True))
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    data = check_keys({} if data is None else data, list(params), path, required)
    return {k: check_value(v, hints.get(k, Any), join_path(path, k)) for k, v in data.items()}


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
