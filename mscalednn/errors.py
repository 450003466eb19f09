"""Errors raised for bad user input.

Every error a user can cause by a bad file, a bad option or a bad expression is a
:class:`MscaleError`; the command-line tool prints it as one line and exits with status 2.
"""

from __future__ import annotations


class MscaleError(Exception):
    """Base class of every user-facing error of mscalednn."""


class ExpressionError(MscaleError):
    """An expression string could not be parsed, or uses something not allowed."""


class ConfigError(MscaleError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    The message names the source file, the key path, the expected form and the value
    received, e.g. ``problems/p.yaml: train.steps: expected an integer >= 1, got -5``.
    """

    def __init__(self, path: str, expected: str, got: object = None, *, source: str | None = None,
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
        got = "" if self.got is None else f", got {_short(self.got)}"
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{key}{self.expected}{got}{hint}"


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OutputError(MscaleError):
    """An output file or directory could not be written (unwritable path, full disk)."""
