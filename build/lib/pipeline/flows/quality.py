"""Data-quality counts of a run, and the refusals they call for (every mode and ``plan``)."""

from __future__ import annotations

from typing import Any

from ..config import ReportConfig
from ..engines.duckdb.sql import Query
from ..errors import SourceError


def aggregate_quality(cfg: ReportConfig, con: Any, q: Query) -> dict[str, Any]:
    """Run a data-quality query (one row of counts) and refuse what must not be coerced.

    Refuses (SourceError) when a time dimension holds values that do not parse as timestamps, or
    when every selected row lacks a privacy unit. NaN/±inf metric values are counted (dropped).
    """
    result = con.run(q)
    row = result.fetchall()[0]
    names = [d[0] for d in result.description]
    values = dict(zip(names, row, strict=True))
    invalid = {}
    for i, m in enumerate(cfg.metrics):
        if m.column is not None:
            invalid[m.name] = int(values.get(f"bad_{i}") or 0)
    for i, d in enumerate(cfg.dims):
        bad = int(values.get(f"badts_{i}") or 0)
        if bad:
            raise SourceError(
                f"source {cfg.source.path!r}: dimensions[{i}]: column {d.column!r} has {bad} value(s) that do not "
                "parse as timestamps; fix them in the source or filter them out (they are not silently dropped)"
            )
    rows_in = int(values["rows_in"] or 0)
    null_rows = int(values["null_unit_rows"] or 0)
    if rows_in > 0 and null_rows == rows_in:
        raise SourceError(
            f"source {cfg.source.path!r}: privacy_unit: column {cfg.privacy_unit!r} is null in every selected row "
            f"({rows_in} rows); nothing can be attributed to a person, so nothing can be protected: "
            "check the export or the privacy_unit key"
        )
    return {
        "rows_selected": rows_in,
        "rows_dropped_null_unit": null_rows,
        "rows_aggregated": rows_in - null_rows,
        "invalid_values_dropped": invalid,
    }
