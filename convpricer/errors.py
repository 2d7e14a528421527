"""Typed errors. Every user-facing error names the field and the bad value."""

from __future__ import annotations

from typing import Any


class ConvPricerError(Exception):
    """Base class of every error convpricer raises on purpose."""


class InputError(ConvPricerError, ValueError):
    """Bad input: a field is missing, mistyped or out of range.

    ``field`` is a dotted path (``instruments[2].maturity``), ``value`` the
    offending value, ``source`` the file it came from (if any).
    """

    def __init__(self, field: str, value: Any, reason: str, source: str | None = None):
        self.field = field
        self.value = value
        self.reason = reason
        self.source = source
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.field} = {self.value!r}: {self.reason}"

    def within(self, prefix: str | None = None, source: str | None = None) -> InputError:
        """The same error with a field-path prefix and/or the file name added."""
        field = f"{prefix}.{self.field}" if prefix else self.field
        return type(self)(field, self.value, self.reason, source or self.source)


class SchemaError(InputError):
    """The file is not a valid convpricer/1 document (bad TOML, schema, kind, keys)."""


class EngineError(ConvPricerError, ValueError):
    """An engine was asked for something it cannot do (unknown engine, bad option,
    instrument kind it does not value)."""
