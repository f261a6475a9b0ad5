"""Small, pure helpers for building SQL safely: quoted identifiers and positional parameters.

Guarantee: user text (column names from the config, filter values) only ever reaches SQL as a
quoted identifier (after it was checked against the source schema) or as a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def ident(name: str) -> str:
    """A DuckDB identifier, double-quoted with embedded quotes doubled."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A single-quoted SQL string literal (only for DDL such as ATTACH, where binding is not allowed)."""
    if "\x00" in text:
        raise ValueError("string contains a NUL byte")
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Params:
    """Collects bound values; :meth:`add` returns the ``$n`` placeholder for one value."""

    values: list[Any] = field(default_factory=list)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass(frozen=True)
class Query:
    """SQL text plus the values bound to its ``$n`` placeholders."""

    sql: str
    params: tuple[Any, ...] = ()
