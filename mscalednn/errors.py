"""Errors raised for bad user input.

Every error a user can cause by a bad file, a bad option or a bad expression is a
:class:`MscaleError`; the command-line tool prints it as one line and exits with status 2.
"""

from __future__ import annotations

import reprlib


class MscaleError(Exception):
    """Base class of every user-facing error of mscalednn."""


class ExpressionError(MscaleError):
    """An expression string could not be parsed, or uses something not allowed."""


NOTHING = type("Nothing", (), {"__repr__": lambda self: "NOTHING"})()  # ConfigError without a value


class ConfigError(MscaleError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    The message names the source file, the key path, the expected form and the value
    received, e.g. ``problems/p.yaml: train.steps: expected an integer >= 1, got -5``.
    """

    def __init__(self, path: str, expected: str, got: object = NOTHING, *, source: str | None = None,
                 hint: str = ""):
        self.path = path
        self.expected = expected
        self.got = got
        self.source = source
        self.hint = hint
        super().__init__(self._format())

    def with_source(self, source: str) -> "ConfigError":
        """The same error, naming the file it came from."""
        return ConfigError(self.path, self.expected, self.got, source=source, hint=self.hint)

    def _format(self) -> str:
        where = f"{self.source}: " if self.source else ""
        key = f"{self.path}: " if self.path else ""
        got = "" if self.got is NOTHING else f", got {'null' if self.got is None else short_repr(self.got)}"
        hint = f" ({self.hint})" if self.hint else ""
        return " ".join(f"{where}{key}{self.expected}{got}{hint}".splitlines())  # always one line


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to about ``limit`` characters; bounded work even for
    huge or self-referencing values (YAML aliases can make both)."""
    text = _REPR.repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Repr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr of a huge int is slow, or refused beyond 4300 digits
            return f"an integer of about {int(x.bit_length() * 0.30103) + 1} digits"
        return repr(x)


_REPR = _Repr()
_REPR.maxstring, _REPR.maxother = 78, 78


class OutputError(MscaleError):
    """An output file or directory could not be written (unwritable path, full disk)."""


class ProblemError(MscaleError):
    """The problem is not one that can be solved as stated (e.g. its exact solution or source is
    not finite at points of the domain)."""
