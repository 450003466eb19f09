"""Tests of mscalednn.expr: values against numpy, autograd, and error messages."""

from __future__ import annotations

import math
import string

import numpy as np
import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

from mscalednn.derivatives import value_grad_laplacian
from mscalednn.errors import ExpressionError
from mscalednn.expr import FUNCTIONS, NAMES, Expression, parse_expression

N = 50


def _points(dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + dim)
    return torch.rand(N, dim, generator=gen, dtype=torch.float64) * 2 - 0.5


def _check(text: str, dim: int, expected, params=None) -> None:
    x = _points(dim)
    out = parse_expression(text, dim, params)(x)
    assert out.shape == (N,)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected(x.numpy()), rtol=1e-12, atol=1e-12)


DIMS = [1, 3, 10]


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("text, expected", [
    ("sum(sin(pi*x) + 0.1*sin(10*pi*x))",
     lambda x: np.sum(np.sin(np.pi * x) + 0.1 * np.sin(10 * np.pi * x), axis=1)),
    ("prod(cos(x))", lambda x: np.prod(np.cos(x), axis=1)),
    ("mean(exp(x))", lambda x: np.mean(np.exp(x), axis=1)),
    ("norm(x)", lambda x: np.linalg.norm(x, axis=1)),
    ("min(x) + 2*max(x)", lambda x: x.min(axis=1) + 2 * x.max(axis=1)),
    ("x[0]", lambda x: x[:, 0]),
    ("x[-1]**2", lambda x: x[:, -1] ** 2),
    ("sum(i*x)", lambda x: np.sum(np.arange(1, x.shape[1] + 1) * x, axis=1)),
    ("sum(x**2)/d", lambda x: np.sum(x ** 2, axis=1) / x.shape[1]),
    ("dot(x, x+1)", lambda x: np.sum(x * (x + 1), axis=1)),
    ("sum(roll(x, 1) * i)",
     lambda x: np.sum(np.roll(x, 1, axis=1) * np.arange(1, x.shape[1] + 1), axis=1)),
    ("sum(roll(x, -2)**3)", lambda x: np.sum(np.roll(x, -2, axis=1) ** 3, axis=1)),
    ("roll(x, 1)[0]", lambda x: np.roll(x, 1, axis=1)[:, 0]),
    ("sum(x[0]*x)", lambda x: np.sum(x[:, :1] * x, axis=1)),
    ("sum(exp(-x[0]) + x / e)", lambda x: np.sum(np.exp(-x[:, :1]) + x / math.e, axis=1)),
    ("(abs(x[0]) + 1)**-1.5", lambda x: (np.abs(x[:, 0]) + 1) ** -1.5),
    ("sum(sqrt(abs(x)) + tanh(x) + atan(x) + sinh(x) - cosh(x))",
     lambda x: np.sum(np.sqrt(np.abs(x)) + np.tanh(x) + np.arctan(x) + np.sinh(x) - np.cosh(x), axis=1)),
    ("log(1 + norm(x)**2) + tan(x[0] / 4)",
     lambda x: np.log(1 + np.sum(x ** 2, axis=1)) + np.tan(x[:, 0] / 4)),
    ("-+x[0] - 2**3", lambda x: -x[:, 0] - 8),
])
def test_values(text, expected, dim):
    _check(text, dim, expected)


def test_slices():
    _check("sum(x[0:3])", 10, lambda x: x[:, 0:3].sum(axis=1))
    _check("sum(x[2:])", 10, lambda x: x[:, 2:].sum(axis=1))
    _check("sum(x[::3] * i[::3])", 10, lambda x: np.sum(x[:, ::3] * np.arange(1, 11)[::3], axis=1))
    _check("dot(x[1:], x[:-1])", 10, lambda x: np.sum(x[:, 1:] * x[:, :-1], axis=1))
    _check("norm(x[-2:])", 3, lambda x: np.linalg.norm(x[:, -2:], axis=1))


def test_params_and_constants():
    _check("a*sum(sin(k*pi*x))", 3, lambda x: 2.5 * np.sum(np.sin(4 * np.pi * x), axis=1),
           params={"a": 2.5, "k": 4})
    _check("x[0] + d + pi + e", 3, lambda x: x[:, 0] + 3 + math.pi + math.e)


@pytest.mark.parametrize("text, value", [("1.5", 1.5), (2, 2.0), (0.25, 0.25), ("2*pi - d", 2 * math.pi - 3),
                                          ("c**2", 9.0)])
def test_constant_expression(text, value):
    x = _points(3).requires_grad_(True)
    out = parse_expression(text, 3, {"c": 3})(x)
    assert out.shape == (N,)
    assert torch.all(out == value)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.all(grad == 0)


def test_expression_attributes():
    expr = parse_expression("sum(x)", 4)
    assert isinstance(expr, Expression)
    assert expr.text == "sum(x)" and expr.dim == 4
    assert "x" in NAMES and "sin" in FUNCTIONS and "roll" in FUNCTIONS
    with pytest.raises(ValueError):
        parse_expression("sum(x)", 0)


@pytest.mark.parametrize("text", ["where(norm(x) < 0.7, 1 + sum(x**2), 5*sin(x[0]))",
                                  "where(x[0] < 0.2 < x[1], x[1]**3, 2)", "sum(where(x <= 0, x**2, sin(x)))",
                                  "where(x >= 0, x**2, sin(x))[1]", "where(norm(x) < 0.5, 1, 1/norm(x))"])
def test_where_takes_the_branch_and_its_derivatives(text):
    """where(cond, a, b): the value of the branch taken, and its exact gradient and Laplacian
    (Taylor mode against nested autograd, float64), also where the other branch is infinite."""
    x = torch.cat([_points(3) * 2 - 1, torch.zeros(1, 3, dtype=torch.float64)])
    e = parse_expression(text, 3)
    u, grad, lap = e.value_grad_laplacian(x)
    u2, grad2, lap2 = value_grad_laplacian(e, x.clone(), create_graph=False)
    assert torch.isfinite(u).all() and torch.isfinite(grad).all() and torch.isfinite(lap).all()
    torch.testing.assert_close(u, e(x), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(grad[:-1], grad2[:-1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lap[:-1], lap2[:-1], rtol=1e-12, atol=1e-12)


def test_where_is_piecewise():
    e = parse_expression("where(norm(x) < 0.5, 1, 5)", 2)
    x = torch.tensor([[0.1, 0.2], [0.4, 0.4], [-0.3, 0.0], [0.5, 0.0]], dtype=torch.float64)
    assert e(x).tolist() == [1.0, 5.0, 1.0, 5.0]
    assert parse_expression("where(1 < 2, x[0], x[1])", 2)(x).tolist() == x[:, 0].tolist()


@pytest.mark.parametrize("dim", DIMS)
def test_laplacian_by_autograd(dim):
    x = _points(dim).requires_grad_(True)
    u = parse_expression("sum(sin(pi*x))", dim)(x)
    (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    lap = torch.zeros(N, dtype=x.dtype)
    for k in range(dim):
        (g2,) = torch.autograd.grad(grad[:, k].sum(), x, create_graph=True)
        lap = lap + g2[:, k]
    expected = -math.pi ** 2 * torch.sin(math.pi * x).sum(dim=1)
    assert torch.allclose(lap, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("text", ["sum(sin(x))", "x[0]*i[1]", "3.0", "prod(x**2)"])
def test_dtype_follows_input(text):
    x = _points(3).float()
    out = parse_expression(text, 3)(x)
    assert out.dtype == torch.float32 and out.device == x.device and out.shape == (N,)


@pytest.mark.parametrize("text, match", [
    ("sum(sn(x))", r"unknown function 'sn' \(did you mean 'sin'\?\)"),
    ("sum(sinn(x))", r"did you mean 'sin'"),
    ("xx[0] + sn", r"unknown name 'xx' \(did you mean 'x'\?\)"),
    ("sn + x[0]", r"unknown name 'sn' \(did you mean 'sin'\?\); known names: x, i, d, pi, e"),
    ("sin + x[0]", r"'sin' is a function"),
    ("x(1)", r"'x' is not a function"),
    ("x.__class__", r"attribute access \('x.__class__'\) is not allowed"),
    ("x.shape", r"attribute access"),
    ("__import__('os')", r"dunder names are not allowed"),
    ("__builtins__", r"dunder names are not allowed"),
    ("torch.sin(x[0])", r"only calls of named functions"),
    ("(lambda: 1)()", r"only calls of named functions"),
    ("lambda: 1", r"lambda expressions are not allowed"),
    ("sum([a for a in x])", r"comprehensions are not allowed"),
    ("sum(a for a in x)", r"generator expressions are not allowed"),
    ("x[0] < 1", r"comparisons outside where\(condition, a, b\) are not allowed"),
    ("where(x[0], 1, 2)", r"the first argument of where\(\) must be a comparison such as norm\(x\) < 0.5, got 'x\[0\]'"),
    ("where(x[0] == 0, 1, 2)", r"where\(\) compares with < <= > >= only, got 'x\[0\] == 0'"),
    ("where(x[0] < 0, 1)", r"where\(\) takes 3 arguments, got 2"),
    ("where(x < x[:2], 1, 2)", r"vector lengths differ in 'where\(x < x\[:2\], 1, 2\)': 2, 3"),
    ("where(x[0] < 0, x, 1)", r"the expression gives a vector of length 3"),
    ("x[0] and x[1]", r"boolean operators"),
    ("x[0] if x[1] else 1", r"if-expressions are not allowed"),
    ("'abc'", r"string literals cannot be used"),
    ("f'{x}'", r"f-strings are not allowed"),
    ("True", r"True/False cannot be used"),
    ("None", r"None cannot be used"),
    ("1j", r"complex numbers cannot be used"),
    ("(x[0], 1)", r"tuples are not allowed"),
    ("dot([x[0], 1, 2], x)", r"the entries of a vector literal must be numbers \(constants\), got 'x\[0\]'"),
    ("sum([])", r"a vector literal needs at least one number"),
    ("dot([1, 2], x)", r"dot\(\) needs vectors of equal length, got 2 and 3"),
    ("{1: 2}", r"dict literals are not allowed"),
    ("(y := 1)", r"assignment expressions"),
    ("sum(*x)", r"starred arguments"),
    ("x[0] % 2", r"operator '%' is not allowed"),
    ("not x[0]", r"operator 'not' is not allowed"),
    ("sum(x, a=1)", r"keyword arguments are not allowed in sum"),
    ("sin(x[0], x[1])", r"sin\(\) takes 1 argument, got 2"),
    ("dot(x)", r"dot\(\) takes 2 arguments, got 1"),
    ("2**1000", r"the exponent of \*\* must be a number between -64 and 64"),
    ("x[0]**x[1]", r"the exponent of \*\* must be a number between -64 and 64"),
    ("x[0]**(1+1)", r"the exponent of \*\*"),
    ("1e13 * x[0]", r"too large"),
    ("x[3]", r"index 3 is out of range for a vector of length 3; valid indices are 0\.\.2"),
    ("x[-4]", r"out of range"),
    ("x[i]", r"an index must be an integer"),
    ("x[0.5]", r"an index must be an integer"),
    ("x[0:a]", r"a slice bound must be an integer"),
    ("sum(x[2:1])", r"is empty"),
    ("sum(x[::-1])", r"slice step must be a positive integer"),
    ("roll(x, x[0])[0]", r"the shift of roll\(\) must be an integer"),
    ("x", r"the expression gives a vector of length 3 per point; reduce it"),
    ("sin(x)*2", r"vector of length 3"),
    ("x[0:2]", r"vector of length 2"),
    ("sum(1)", r"sum\(\) expects a vector argument \(an expression involving x\), got a scalar"),
    ("norm(x[0])", r"norm\(\) expects a vector argument"),
    ("dot(x, 2)", r"dot\(\) expects a vector argument"),
    ("x[0][0]", r"only vectors can be indexed"),
    ("sum(x[0:2] + x)", r"vector lengths differ"),
    ("dot(x[1:], x)", r"dot\(\) needs vectors of equal length"),
    ("x[0] +", r"invalid syntax in expression 'x\[0\] \+' at (column|the end)"),
    ("x[0] + )", r"invalid syntax in expression 'x\[0\] \+ \)' at column 8"),
    ("(" * 500 + "x[0]" + ")" * 500, r"invalid syntax|nested too deeply|cannot parse"),
    ("-" * 5000 + "x[0]", r"nested too deeply|cannot parse|invalid syntax"),
    ("sum(" * 150 + "x" + ")" * 150, r"nested too deeply|cannot parse|invalid syntax"),
    ("+".join(["x[0]"] * 1000), r"too large|nested too deeply"),
    ("x[0]+" * 2000 + "1", r"too long"),
    ("", r"invalid syntax"),
])
def test_errors(text, match):
    with pytest.raises(ExpressionError, match=match) as info:
        parse_expression(text, 3)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("params, match", [
    ({"_a": 1.0}, r"parameter name '_a' is not allowed"),
    ({"a b": 1.0}, r"parameter name 'a b' is not allowed"),
    ({"lambda": 1.0}, r"is not allowed"),
    ({"sin": 1.0}, r"clashes with a built-in"),
    ({"pi": 3.0}, r"clashes with a built-in"),
    ({"a": "1"}, r"parameter 'a' must be a finite real number"),
    ({"a": True}, r"must be a finite real number"),
    ({"a": float("nan")}, r"must be a finite real number"),
    ({"a": float("inf")}, r"must be a finite real number"),
    ({"a": None}, r"must be a finite real number"),
])
def test_bad_params(params, match):
    with pytest.raises(ExpressionError, match=match):
        parse_expression("x[0]", 3, params)


@pytest.mark.parametrize("text, match", [
    (None, r"expected an expression string, got NoneType"),
    ([1, 2], r"expected an expression string, got list"),
    (True, r"expected an expression string, got bool"),
    (float("nan"), r"finite number"),
    (10**400, r"finite number"),
    (-1e300, r"finite number"),
])
def test_bad_text_type(text, match):
    with pytest.raises(ExpressionError, match=match):
        parse_expression(text, 3)


def _parses_or_expression_error(text: str) -> None:
    try:
        expr = parse_expression(text, 3, {"a": 1.0})
    except ExpressionError as err:
        assert "\n" not in str(err)
        return
    out = expr(_points(3))
    assert out.shape == (N,)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_random_text_never_crashes(text):
    _parses_or_expression_error(text)


_ALPHABET = "x[]()0123456789.,+-*/ ie:dpa_" + "sincoqrtlgmuxb"


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(alphabet=string.printable, max_size=60), st.text(alphabet=_ALPHABET, max_size=40)))
def test_random_printable_never_crashes(text):
    _parses_or_expression_error(text)
