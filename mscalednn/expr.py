"""Safe arithmetic expressions of a point ``x`` in d dimensions, evaluated with torch.

A problem file states its exact solution as a string such as
``sum(sin(pi*x) + 0.1*sin(10*pi*x))``. :func:`parse_expression` turns it into an
:class:`Expression`, a callable mapping ``x`` of shape ``[N, d]`` to a tensor of shape ``[N]``
built only from torch operations, so autograd can differentiate it exactly.

User text is never executed: it is parsed with :func:`ast.parse`, every node is checked
against a whitelist, and the tree is compiled into small closures. Values are either
scalars (one number per point, or a constant) or vectors (a row per point, of a length known
at parse time). All checks happen at parse time; a bad expression raises
:class:`~mscalednn.errors.ExpressionError` with a one-line message.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import numbers
import reprlib
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from . import jet as jets
from .errors import ExpressionError, short_repr

NAMES: tuple[str, ...] = ("x", "i", "d", "pi", "e")
ELEMENTWISE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "tanh": torch.tanh, "sinh": torch.sinh, "cosh": torch.cosh,
    "abs": torch.abs, "atan": torch.atan,
}
REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": lambda v: v.sum(dim=1), "prod": lambda v: v.prod(dim=1),
    "mean": lambda v: v.mean(dim=1), "norm": lambda v: torch.linalg.vector_norm(v, dim=1),
    "min": lambda v: torch.amin(v, dim=1), "max": lambda v: torch.amax(v, dim=1),
}
FUNCTIONS: tuple[str, ...] = (*ELEMENTWISE, *REDUCTIONS, "dot", "roll", "where")
ARITY = {"dot": 2, "roll": 2, "where": 3}  # the others take one argument
_COMPARISONS: dict[type, tuple[str, Callable]] = {
    ast.Lt: ("<", torch.lt), ast.LtE: ("<=", torch.le), ast.Gt: (">", torch.gt), ast.GtE: (">=", torch.ge),
}
_JET_REDUCTIONS: dict[str, Callable[[jets.Jet], jets.Jet]] = {
    "sum": jets.total, "prod": jets.product, "mean": lambda a: jets.scale(jets.total(a), 1.0 / a.n),
    "norm": lambda a: jets.power(jets.total(jets.mul(a, a)), 0.5),
    "min": lambda a: jets.pick(a, a.v.argmin(dim=1, keepdim=True)),
    "max": lambda a: jets.pick(a, a.v.argmax(dim=1, keepdim=True)),
}

MAX_TEXT = 10_000
MAX_NODES = 10_000
MAX_DEPTH = 100
MAX_LITERAL = 1e12
MAX_EXPONENT = 64

_BINOPS: dict[type, tuple[str, Callable]] = {
    ast.Add: ("+", lambda a, b: a + b), ast.Sub: ("-", lambda a, b: a - b),
    ast.Mult: ("*", lambda a, b: a * b), ast.Div: ("/", lambda a, b: a / b),
}
_JET_BINOPS: dict[type, Callable[[jets.Jet, jets.Jet], jets.Jet]] = {
    ast.Add: jets.add, ast.Sub: lambda a, b: jets.add(a, b, -1.0), ast.Mult: jets.mul, ast.Div: jets.divide,
}
_OP_SYMBOLS = {ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<",
               ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^",
               ast.Not: "not", ast.Invert: "~"}
_FORBIDDEN = {
    ast.Lambda: "lambda expressions", ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "generator expressions",
    ast.Compare: "comparisons outside where(condition, a, b)", ast.BoolOp: "boolean operators (and/or)",
    ast.IfExp: "if-expressions", ast.JoinedStr: "f-strings", ast.FormattedValue: "f-strings",
    ast.Tuple: "tuples", ast.Dict: "dict literals",
    ast.Set: "set literals", ast.Starred: "starred arguments (*)",
    ast.NamedExpr: "assignment expressions (:=)", ast.Await: "await expressions",
    ast.Yield: "yield expressions", ast.YieldFrom: "yield expressions",
    ast.Slice: "slices outside of indexing",
}


@dataclass(frozen=True)
class _Node:
    """A compiled sub-expression: ``size`` is None for a scalar, else the vector length.

    A constant scalar has ``fn`` None and its value in ``const``.
    """

    fn: Callable[[torch.Tensor], torch.Tensor] | None
    size: int | None = None
    const: float = 0.0
    jet: Callable[[torch.Tensor], jets.Jet] | None = None

    def jet_of(self) -> Callable[[torch.Tensor], jets.Jet]:
        """The node's Taylor-mode evaluator (value, gradient, Laplacian); constants included."""
        if self.fn is None:
            value = self.const
            return lambda x: jets.constant(value, x)
        return self.jet


class Expression:
    """A parsed expression; call it on ``x`` of shape ``[N, dim]`` to get shape ``[N]``."""

    def __init__(self, text: str, dim: int, node: _Node, piecewise: bool = False):
        self.text = text
        self.dim = dim
        self._node = node
        self.piecewise = piecewise  # built with where(...): it may jump

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x of shape [N, {self.dim}], got {list(x.shape)}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self._node.fn is None:
            return x[:, 0] * 0 + self._node.const
        return self._node.fn(x)

    def value_grad_laplacian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u(x) [N], grad u(x) [N, d] and Laplace u(x) [N], exact, in one Taylor-mode pass with
        sparse Jacobians (:mod:`mscalednn.jet`): O(N d) where nested autograd is O(N d^2).
        Differentiable in x when x requires grad (e.g. for the Hessian of the source term)."""
        self._check(x)
        with torch.set_grad_enabled(x.requires_grad):
            jet = self._node.jet_of()(x)
            return jet.v[:, 0], jets.gradient(jet), jet.lap[:, 0]

    def __repr__(self) -> str:
        return f"Expression({self.text!r}, dim={self.dim})"


def parse_expression(text: str, dim: int, params: Mapping[str, float] | None = None) -> Expression:
    """Parse and check ``text`` as an expression of ``x`` in ``dim`` dimensions.

    ``params`` names extra scalar constants. Raises ExpressionError for any bad text or
    parameter, and ValueError if ``dim`` is not an integer >= 1.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    text = _as_text(text)
    consts = {"d": float(dim), "pi": math.pi, "e": math.e, **check_params(params)}
    tree = _parse(text)
    compiler = _Compiler(dim, consts)
    node = compiler.visit(tree.body)
    if node.size is not None:
        raise ExpressionError(
            f"the expression gives a vector of length {node.size} per point; reduce it to one "
            f"number with sum(...), prod(...), norm(...) or index it like x[0]")
    return Expression(text, dim, node, compiler.piecewise)


def _as_text(text: object) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not abs(text) <= MAX_LITERAL:  # also catches nan and huge ints
            small = isinstance(text, float) or abs(text) < 10**50
            got = repr(text) if small else "an integer with more than 50 digits"
            raise ExpressionError(f"expected an expression string or a finite number of size "
                                  f"at most {MAX_LITERAL:g}, got {got}")
        return str(text)
    raise ExpressionError(f"expected an expression string, got {type(text).__name__} "
                          f"{short_repr(repr(text))}")


def check_params(params: Mapping[str, float] | None) -> dict[str, float]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ExpressionError(f"params must be a mapping of names to numbers, got "
                              f"{type(params).__name__}")
    out = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
                or name.startswith("_"):
            raise ExpressionError(f"parameter name {short_repr(str(name))} is not allowed; use a "
                                  f"Python identifier that does not start with '_'")
        if name in NAMES or name in FUNCTIONS:
            raise ExpressionError(f"parameter name '{name}' clashes with a built-in name or "
                                  f"function ({', '.join(NAMES + FUNCTIONS)})")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not abs(value) <= MAX_LITERAL:  # also nan, and ints too large for a float
            got = "a number beyond 1e12" if isinstance(value, numbers.Real) and not isinstance(value, bool) \
                and abs(value) > MAX_LITERAL else reprlib.repr(value)
            raise ExpressionError(f"parameter '{name}' must be a finite real number of size at most "
                                  f"{MAX_LITERAL:g}, got {got}")
        out[name] = float(value)
    return out


def _parse(text: str) -> ast.Expression:
    """``ast.parse`` with size limits, turning every failure into ExpressionError."""
    if len(text) > MAX_TEXT:
        raise ExpressionError(f"expression is too long ({len(text)} characters; "
                              f"at most {MAX_TEXT})")
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes in strings, rejected anyway
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        msg = str(err.msg).replace("\n", " ")
        where = "" if err.offset is None else (
            f" at column {err.offset}" if 0 < err.offset <= len(text) else " at the end")
        raise ExpressionError(f"invalid syntax in expression {short_repr(text)}{where}: {msg}") from None
    except (RecursionError, MemoryError):  # CPython's parser gives up on deep nesting
        raise ExpressionError(f"expression {short_repr(text)} is nested too deeply to parse") from None
    except (ValueError, OverflowError, TypeError) as err:
        raise ExpressionError(f"cannot parse expression {short_repr(text)}: "
                              f"{type(err).__name__}: {short_repr(str(err))}") from None
    count, stack = 0, [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ExpressionError(f"expression is too large (more than {MAX_NODES} syntax nodes)")
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _fold(op: Callable, node: ast.AST, *values: float) -> float:
    """Apply a torch operation to constants in float64; an inf or nan result (1/0, log(0),
    9**9**9...) is an ExpressionError naming the sub-expression ``node``."""
    value = float(op(*(torch.tensor(v, dtype=torch.float64) for v in values)))
    if not math.isfinite(value):
        raise ExpressionError(f"the constant {short_repr(ast.unparse(node))} is not a finite number "
                              f"(it evaluates to {value})")
    return value


def _number(node: ast.AST) -> float | int | None:
    """The value of a number literal, optionally with unary sign, or None."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * node.value
    return None


def _int_literal(node: ast.AST, what: str) -> int:
    value = _number(node)
    if not isinstance(value, int):
        raise ExpressionError(f"{what} must be an integer number like 0, 2 or -1, got "
                              f"{short_repr(ast.unparse(node))}")
    return value


class _Compiler:
    """Turns a checked AST into a tree of :class:`_Node` closures."""

    def __init__(self, dim: int, consts: dict[str, float]):
        self.dim = dim
        self.consts = consts
        self.piecewise = False

    def visit(self, node: ast.AST) -> _Node:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is not None:
            return method(node)
        if isinstance(node, ast.Attribute):
            raise ExpressionError(f"attribute access ({short_repr(ast.unparse(node))}) is not "
                                  f"allowed in expressions")
        what = _FORBIDDEN.get(type(node), f"{type(node).__name__} nodes")
        raise ExpressionError(f"{what} are not allowed (found "
                              f"{short_repr(ast.unparse(node))}); allowed: numbers, names, + - * / **, "
                              f"function calls, x[j] indexing and vectors of numbers [a, b, ...]")

    def visit_Constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if type(value) not in (int, float):
            kind = {str: "string literals", bytes: "bytes literals", bool: "True/False",
                    complex: "complex numbers"}.get(type(value), repr(value))
            raise ExpressionError(f"{kind} cannot be used in expressions; only real numbers "
                                  f"like 2, 0.5 or 1e-3 are allowed")
        if abs(value) > MAX_LITERAL or not math.isfinite(value):
            raise ExpressionError(f"number {short_repr(ast.unparse(node))} is too large; "
                                  f"literals must be at most {MAX_LITERAL:g} in size")
        return _Node(None, const=float(value))

    def visit_List(self, node: ast.List) -> _Node:
        """[c_1, ..., c_n]: a constant vector of n numbers (constant expressions), e.g. a
        direction in dot([0.6, 0.8], x)."""
        values = []
        for elt in node.elts:
            item = self.visit(elt)
            if item.fn is not None:
                raise ExpressionError(f"the entries of a vector literal must be numbers (constants), got "
                                      f"{short_repr(ast.unparse(elt))}")
            values.append(item.const)
        if not values:
            raise ExpressionError("a vector literal needs at least one number, got []")
        vector = torch.tensor(values, dtype=torch.float64)

        def const(x):
            return vector.to(dtype=x.dtype, device=x.device).expand(x.shape[0], len(values))
        return _Node(const, len(values), jet=lambda x: jets.constant(const(x), x))

    def visit_Name(self, node: ast.Name) -> _Node:
        name = node.id
        if name.startswith("__"):
            raise ExpressionError(f"dunder names are not allowed ('{name}')")
        if name == "x":
            return _Node(lambda x: x, self.dim, jet=jets.variable)
        if name == "i":
            dim = self.dim

            def index(x):
                return torch.arange(1, dim + 1, dtype=x.dtype, device=x.device).expand(x.shape[0], dim)
            return _Node(index, dim, jet=lambda x: jets.constant(index(x), x))
        if name in self.consts:
            return _Node(None, const=self.consts[name])
        if name in FUNCTIONS:
            raise ExpressionError(f"'{name}' is a function; call it like {name}(...)")
        known = list(NAMES) + sorted(set(self.consts) - set(NAMES))
        hint = did_you_mean(name, known + list(FUNCTIONS))
        raise ExpressionError(f"unknown name '{name}'{hint}; "
                              f"known names: {', '.join(NAMES)}, and params "
                              f"({', '.join(sorted(set(self.consts) - set(NAMES))) or 'none'})")

    def visit_UnaryOp(self, node: ast.UnaryOp) -> _Node:
        if not isinstance(node.op, (ast.UAdd, ast.USub)):
            raise ExpressionError(f"operator '{_OP_SYMBOLS.get(type(node.op), '?')}' is not "
                                  f"allowed; allowed operators: + - * / ** and unary + -")
        a = self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return a
        if a.fn is None:
            return _Node(None, const=-a.const)
        f, j = a.fn, a.jet
        return _Node(lambda x: -f(x), a.size, jet=lambda x: jets.scale(j(x), -1.0))

    def visit_BinOp(self, node: ast.BinOp) -> _Node:
        if isinstance(node.op, ast.Pow):
            return self._pow(node)
        if type(node.op) not in _BINOPS:
            raise ExpressionError(f"operator '{_OP_SYMBOLS.get(type(node.op), '?')}' is not "
                                  f"allowed; allowed operators: + - * / **")
        symbol, op = _BINOPS[type(node.op)]
        a, b = self.visit(node.left), self.visit(node.right)
        if a.fn is None and b.fn is None:
            return _Node(None, const=_fold(op, node, a.const, b.const))
        if a.size is not None and b.size is not None and a.size != b.size:
            raise ExpressionError(f"vector lengths differ in {short_repr(ast.unparse(node))}: "
                                  f"{a.size} {symbol} {b.size}")
        size = a.size if a.size is not None else b.size
        fa, fb = self._operand(a, size), self._operand(b, size)
        ja, jb, jop = a.jet_of(), b.jet_of(), _JET_BINOPS[type(node.op)]
        return _Node(lambda x: op(fa(x), fb(x)), size, jet=lambda x: jop(ja(x), jb(x)))

    @staticmethod
    def _operand(node: _Node, size: int | None) -> Callable[[torch.Tensor], object]:
        """The evaluator of ``node``, broadcast to a vector if ``size`` says so."""
        if node.fn is None:
            value = node.const
            return lambda x: value
        f = node.fn
        if node.size is None and size is not None:
            return lambda x: f(x)[:, None]
        return f

    def _pow(self, node: ast.BinOp) -> _Node:
        exponent = _number(node.right)
        if exponent is None or abs(exponent) > MAX_EXPONENT:
            raise ExpressionError(f"the exponent of ** must be a number between -{MAX_EXPONENT} "
                                  f"and {MAX_EXPONENT}, got {short_repr(ast.unparse(node.right))}")
        base = self.visit(node.left)
        p = exponent
        if base.fn is None:
            return _Node(None, const=_fold(torch.pow, node, base.const, p))
        f, j = base.fn, base.jet
        return _Node(lambda x: f(x) ** p, base.size, jet=lambda x: jets.power(j(x), p))

    def visit_Call(self, node: ast.Call) -> _Node:
        if not isinstance(node.func, ast.Name):
            raise ExpressionError(f"only calls of named functions are allowed, got "
                                  f"{short_repr(ast.unparse(node.func))}; functions: {', '.join(FUNCTIONS)}")
        name = node.func.id
        if name.startswith("__"):
            raise ExpressionError(f"dunder names are not allowed ('{name}')")
        if name not in FUNCTIONS:
            hint = did_you_mean(name, list(FUNCTIONS))
            is_name = name in NAMES or name in self.consts
            head = f"'{name}' is not a function" if is_name else f"unknown function '{name}'"
            raise ExpressionError(f"{head}{hint}; known functions: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ExpressionError(f"keyword arguments are not allowed in {name}(...)")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise ExpressionError(f"starred arguments (*) are not allowed in {name}(...)")
        arity = ARITY.get(name, 1)
        if len(node.args) != arity:
            raise ExpressionError(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, "
                                  f"got {len(node.args)}")
        if name == "roll":
            return self._roll(node)
        if name == "where":
            return self._where(node)
        args = [self.visit(arg) for arg in node.args]
        if name in ELEMENTWISE:
            fn, (a,) = ELEMENTWISE[name], args
            if a.fn is None:
                return _Node(None, const=_fold(fn, node, a.const))
            f, j = a.fn, a.jet
            return _Node(lambda x: fn(f(x)), a.size, jet=lambda x: jets.elementwise(name, j(x)))
        for arg in args:
            if arg.size is None:
                raise ExpressionError(f"{name}() expects a vector argument (an expression "
                                      f"involving x), got a scalar")
        if name == "dot":
            a, b = args
            if a.size != b.size:
                raise ExpressionError(f"dot() needs vectors of equal length, got {a.size} "
                                      f"and {b.size}")
            fa, fb, ja, jb = a.fn, b.fn, a.jet, b.jet
            return _Node(lambda x: (fa(x) * fb(x)).sum(dim=1), jet=lambda x: jets.total(jets.mul(ja(x), jb(x))))
        fn, f, j, jr = REDUCTIONS[name], args[0].fn, args[0].jet, _JET_REDUCTIONS[name]
        return _Node(lambda x: fn(f(x)), jet=lambda x: jr(j(x)))

    def _roll(self, node: ast.Call) -> _Node:
        v = self.visit(node.args[0])
        if v.size is None:
            raise ExpressionError("roll() expects a vector argument (an expression involving x), "
                                  "got a scalar")
        shift = _int_literal(node.args[1], "the shift of roll()")
        f, j = v.fn, v.jet
        return _Node(lambda x: torch.roll(f(x), shift, dims=1), v.size, jet=lambda x: jets.roll(j(x), shift))

    def _where(self, node: ast.Call) -> _Node:
        """where(condition, a, b): a where the condition holds, else b; the condition is a
        comparison (``<``, ``<=``, ``>``, ``>=``, chains like ``0.2 < r < 0.5`` allowed) of
        expressions. Derivatives are those of the branch taken (a coefficient that jumps across
        an interface has no derivative there)."""
        self.piecewise = True
        test = node.args[0]
        if not isinstance(test, ast.Compare):
            raise ExpressionError(f"the first argument of where() must be a comparison such as "
                                  f"norm(x) < 0.5, got {short_repr(ast.unparse(test))}")
        terms = [self.visit(test.left)] + [self.visit(t) for t in test.comparators]
        for op in test.ops:
            if type(op) not in _COMPARISONS:
                raise ExpressionError(f"where() compares with < <= > >= only, got "
                                      f"{short_repr(ast.unparse(test))}")
        a, b = self.visit(node.args[1]), self.visit(node.args[2])
        sizes = {n.size for n in (*terms, a, b) if n.size is not None}
        if len(sizes) > 1:
            raise ExpressionError(f"vector lengths differ in {short_repr(ast.unparse(node))}: "
                                  f"{', '.join(map(str, sorted(sizes)))}")
        size = next(iter(sizes), None)
        parts = [self._operand(t, size) for t in terms]
        ops = [_COMPARISONS[type(op)][1] for op in test.ops]

        def mask(x):
            values = [torch.as_tensor(p(x), dtype=x.dtype, device=x.device) for p in parts]
            out = ops[0](values[0], values[1])
            for op, left, right in zip(ops[1:], values[1:], values[2:]):
                out = out & op(left, right)
            if out.dim() == 1:  # a scalar condition [N]
                out = out[:, None]
            return out.expand(x.shape[0], size or 1)

        if all(t.fn is None for t in terms):  # a constant condition picks a branch now
            return a if bool(mask(torch.zeros(1, self.dim, dtype=torch.float64)).all()) else b
        fa, fb = self._operand(a, size), self._operand(b, size)
        ja, jb = a.jet_of(), b.jet_of()
        squeeze = size is None

        def value(x):
            m = mask(x)[:, 0] if squeeze else mask(x)
            out = torch.where(m, torch.as_tensor(fa(x), dtype=x.dtype, device=x.device),
                              torch.as_tensor(fb(x), dtype=x.dtype, device=x.device))
            return out

        return _Node(value, size, jet=lambda x: jets.choose(mask(x).reshape(x.shape[0], -1), ja(x), jb(x)))

    def visit_Subscript(self, node: ast.Subscript) -> _Node:
        v = self.visit(node.value)
        if v.size is None:
            raise ExpressionError(f"only vectors can be indexed, but {short_repr(ast.unparse(node.value))} "
                                  f"is a scalar")
        f, n, jv = v.fn, v.size, v.jet
        if isinstance(node.slice, ast.Slice):
            bounds = [None if part is None else _int_literal(part, "a slice bound")
                      for part in (node.slice.lower, node.slice.upper, node.slice.step)]
            if bounds[2] is not None and bounds[2] < 1:
                raise ExpressionError(f"the slice step must be a positive integer, got {bounds[2]}")
            sl = slice(*bounds)
            size = len(range(n)[sl])
            if size == 0:
                raise ExpressionError(f"the slice {short_repr(ast.unparse(node))} is empty for a vector "
                                      f"of length {n}")
            return _Node(lambda x: f(x)[:, sl], size, jet=lambda x: jets.select(jv(x), sl))
        j = _int_literal(node.slice, "an index")
        if not -n <= j < n:
            raise ExpressionError(f"index {j} is out of range for a vector of length {n}; "
                                  f"valid indices are 0..{n - 1} (or -{n}..-1)")
        j %= n
        return _Node(lambda x: f(x)[:, j], jet=lambda x: jets.select(jv(x), j))


def did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
