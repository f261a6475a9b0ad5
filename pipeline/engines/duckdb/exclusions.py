"""Opt-out and deleted-account lists (``exclude_units``): their people's rows are removed before
anything else reads the source.

Guarantees:
- ``__src`` becomes the source minus every row whose privacy unit is listed (an anti-join on the
  unit, its values cast to the unit column's type); the unfiltered view is ``__src_all``. Every
  later statement (aggregation, bounding, quality counts, the gate's recount) reads ``__src``.
- A listed value that cannot be a privacy unit (text in an integer id list) is refused with the
  file, column and value: a list that silently matched nobody would break the policy.
- :func:`remaining_sql` is the gate's own check, written separately: it re-reads the lists and
  counts rows of ``__src`` whose unit is on one (must be 0).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ...config import ReportConfig
from ...errors import ConfigError, SourceError, first_line
from .sql import ident


def _lists(cfg: ReportConfig) -> list[tuple[Path, str]]:
    out = []
    for i, entry in enumerate(cfg.exclude_units):
        path = Path(os.path.normpath(cfg.resolve(entry.path)))  # "a/../b" → "b": one name per list
        if not path.is_file():
            raise ConfigError(f"{cfg.where('exclude_units', i, 'path')}: file not found ({path}); "
                              "the list of people to exclude must exist (an empty file with a header is fine)")
        out.append((path, entry.column))
    return out


def apply_exclusions(cfg: ReportConfig, con: Any, schema: dict[str, str]) -> list[dict[str, Any]]:
    """Filter ``__src`` (module docstring); returns per list its path, column, sha256 and how many
    values it lists (facts about the list, not about the data)."""
    if not cfg.exclude_units:
        return []
    unit_type = schema[cfg.privacy_unit]
    unit = ident(cfg.privacy_unit)
    selects, entries = [], []
    for i, (path, column) in enumerate(_lists(cfg)):
        view = f"__excl_list{i}"
        try:  # the list is read by the engine (it names people), never into Python
            con.file_view(view, str(path))
            cols = [c[0] for c in con.execute(f"SELECT * FROM {view} LIMIT 0").description]
        except con.Error as exc:
            raise SourceError(f"{cfg.where('exclude_units', i, 'path')}: cannot read {path}: {first_line(exc)}") from None
        if column not in cols:
            raise ConfigError(f"{cfg.where('exclude_units', i, 'column')}: column {column!r} is not in {path} "
                              f"(columns: {', '.join(cols)})")
        value = f"trim(CAST({ident(column)} AS VARCHAR))"
        bad = con.execute(
            f"SELECT {value} FROM {view} WHERE {ident(column)} IS NOT NULL AND {value} <> '' "
            f"AND TRY_CAST({value} AS {unit_type}) IS NULL LIMIT 1").fetchall()
        if bad:
            raise SourceError(f"{cfg.where('exclude_units', i, 'column')}: {path} lists {bad[0][0]!r}, which is not "
                              f"a {unit_type} privacy unit; fix the list (one {cfg.privacy_unit} value per row)")
        selects.append(f"SELECT TRY_CAST({value} AS {unit_type}) AS u FROM {view} "
                       f"WHERE {ident(column)} IS NOT NULL AND {value} <> ''")
        n = con.execute(f"SELECT count(*) FROM ({selects[-1]})").fetchall()[0][0]
        entries.append({"path": str(path), "column": column, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                        "units_listed": int(n)})
    con.execute(f"CREATE OR REPLACE TEMP TABLE __excluded AS SELECT DISTINCT u FROM ({' UNION ALL '.join(selects)})")
    con.execute(f"CREATE OR REPLACE VIEW __src AS SELECT s.* FROM __src_all s "
                f"WHERE NOT EXISTS (SELECT 1 FROM __excluded e WHERE e.u = s.{unit})")
    return entries


def remaining_sql(cfg: ReportConfig, schema: dict[str, str], con: Any) -> str:
    """The gate's check: rows of ``__src`` whose unit is on an exclusion list (the lists re-read
    here, into views of the gate's own, by the engine)."""
    unit_type = schema[cfg.privacy_unit]
    parts = []
    for i, (path, column) in enumerate(_lists(cfg)):
        view = f"__gate_excl{i}"
        con.file_view(view, str(path))
        v = f"trim(CAST({ident(column)} AS VARCHAR))"
        parts.append(f"SELECT TRY_CAST({v} AS {unit_type}) AS u FROM {view} WHERE {ident(column)} IS NOT NULL")
    return (f"SELECT count(*) FROM __src s JOIN ({' UNION '.join(parts)}) x "
            f"ON s.{ident(cfg.privacy_unit)} = x.u")
