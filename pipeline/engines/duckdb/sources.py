"""Source data → a DuckDB view named ``__src``; schema checks; a fingerprint of what was read.

Guarantees:
- The view is built from the files the config names and nothing else; a missing file, an empty
  glob, an empty (0-byte or 0-row) source, an unreadable or non-Parquet file, or schema drift
  between files of one glob is a :class:`SourceError` naming the file.
- CSV is read in strict mode and checked in full before use: a ragged row, a bad quote, bytes
  that are not UTF-8 or a value that does not convert to its column's type is a
  :class:`SourceError` naming the file and line. Rows are never skipped silently.
- :func:`check_columns` refuses (as :class:`ConfigError`, naming the config key) any column the
  config uses that the source does not have, and (as :class:`SourceError`) metric columns that
  hold text rather than numbers.
- Row-level data stays inside DuckDB: only metadata reaches Python (schemas, row counts, the file,
  line and kind of a bad CSV line, a CSV file's first two bytes for its byte-order mark).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
from typing import TYPE_CHECKING, Any

from ...config import CsvOptions, RangeFilter, ReportConfig
from ...errors import ConfigError, SourceError, first_line
from ..base import Source, SourceFile, default_source_id, detect_format, resolve_files
from .sql import ident, literal

if TYPE_CHECKING:
    import duckdb

SOURCE_VIEW = "__src"
NUMERIC_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL",
)
TEMPORAL_TYPES = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS")


def open_source(con: duckdb.DuckDBPyConnection, cfg: ReportConfig) -> Source:
    """Create the ``__src`` view over the configured source and return its description."""
    import duckdb

    engine, con = con, con.con  # the engine's DuckDB connection: this reader uses its relational API

    fmt = detect_format(cfg)
    files = resolve_files(cfg)
    stats = []
    for f in files:
        st = f.stat()
        if st.st_size == 0:
            raise SourceError(f"source file {f} is empty (0 bytes); re-export it or remove it from the source")
        stats.append((str(f), st.st_size, st.st_mtime_ns))
    names = [s[0] for s in stats]
    rows: dict[str, int] = {}
    try:
        if fmt == "parquet":
            rows = _parquet_checks(con, names)
            rel = con.read_parquet(names)
        elif fmt == "csv":
            kwargs = _csv_kwargs(cfg)
            checked = _csv_checks(con, cfg, names, kwargs)
            rel = con.read_csv(names, **kwargs)
            if list(zip(rel.columns, map(str, rel.types), strict=True)) != checked:
                raise SourceError(
                    f"source {cfg.source.path!r}: the CSV dialect was detected differently on a second read; "
                    "set source.csv (delimiter, quote, header) explicitly"
                )
        elif fmt == "json":
            rel = con.read_json(names, format="newline_delimited")
        elif fmt == "duckdb":
            if len(names) != 1:
                raise SourceError("source.path: a DuckDB source must name exactly one database file")
            con.execute(f"ATTACH {literal(names[0])} AS __srcdb (READ_ONLY)")
            tables = {r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = '__srcdb'").fetchall()}
            tables |= {r[0] for r in con.execute(
                "SELECT view_name FROM duckdb_views() WHERE database_name = '__srcdb'").fetchall()}
            if cfg.source.table not in tables:
                raise ConfigError(
                    f"source.table {cfg.source.table!r} is not in {names[0]} "
                    f"(tables: {', '.join(sorted(tables)) or 'none'})"
                )
            rel = con.sql(f"SELECT * FROM __srcdb.main.{ident(cfg.source.table or '')}")
            rows = {names[0]: con.execute(f"SELECT count(*) FROM __srcdb.main.{ident(cfg.source.table or '')}").fetchall()[0][0]}
        else:  # pragma: no cover - validated by the config model
            raise ConfigError(f"source.format {fmt!r} is not supported")
        rel.create_view(SOURCE_VIEW, replace=True)
        schema = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {SOURCE_VIEW}").fetchall()}
        exclusions: list[dict[str, Any]] = []
        if cfg.exclude_units and cfg.privacy_unit in schema:
            from .exclusions import apply_exclusions

            rel.create_view("__src_all", replace=True)  # the unfiltered rows; __src becomes the filtered view
            exclusions = apply_exclusions(cfg, engine, schema)  # before anything else reads the source
        if not con.execute(f"SELECT 1 FROM {SOURCE_VIEW} LIMIT 1").fetchall():
            raise SourceError(
                f"source {cfg.source.path!r} holds no rows ({len(names)} file(s), e.g. {names[0]}); "
                "an empty export is refused rather than published as an empty report: check the export"
            )
    except (SourceError, ConfigError):
        raise
    except duckdb.Error as exc:
        raise SourceError(f"source {cfg.source.path!r}: cannot read as {fmt}: {first_line(exc)}") from None
    src_files = [SourceFile(n, s, m, rows.get(n)) for (n, s, m) in stats]
    fp = hashlib.sha256()
    # the file's identity, not its spelling: configs/../data/x and data/x (or a symlink) are one file
    for f in sorted(src_files, key=lambda f: os.path.realpath(f.path)):
        fp.update(f"{os.path.realpath(f.path)}\x00{f.size_bytes}\x00{f.mtime_ns}\x00{f.rows}\n".encode())
    return Source(
        format=fmt,
        files=src_files,
        schema=schema,
        table=cfg.source.table,
        source_id=default_source_id(cfg),
        fingerprint=fp.hexdigest(),
        extra={"exclusions": exclusions} if exclusions else {},
    )


def _parquet_checks(con: duckdb.DuckDBPyConnection, names: list[str]) -> dict[str, int]:
    """Per-file row counts from Parquet footers; refuses non-Parquet files and schema drift."""
    import duckdb

    rows: dict[str, int] = {}
    first_schema: list[tuple[str, str]] | None = None
    for n in names:
        try:
            meta = con.execute("SELECT num_rows FROM parquet_file_metadata($1)", [n]).fetchall()[0]
            schema = con.execute("DESCRIBE SELECT * FROM read_parquet($1)", [n]).fetchall()
        except duckdb.Error as exc:
            raise SourceError(
                f"source file {n} is not a readable Parquet file ({first_line(exc)}); "
                "it may be truncated or of another format: re-export it or remove it from the source"
            ) from None
        rows[n] = int(meta[0]) if meta else 0
        cols = [(r[0], r[1]) for r in schema]
        if first_schema is None:
            first_schema = cols
        elif cols != first_schema:
            a, b = dict(first_schema), dict(cols)
            parts = [f"column {k!r} is missing" for k in a if k not in b]
            parts += [f"column {k!r} is not in the first file" for k in b if k not in a]
            parts += [f"column {k!r} is {b[k]} here but {a[k]} there" for k in a if k in b and a[k] != b[k]]
            detail = "; ".join(parts[:4]) or "the columns are in a different order"
            raise SourceError(
                f"source file {n} has a different schema from {names[0]} (schema drift: {detail}); "
                "make the files of one source agree or read them as separate sources"
            )
    return rows


CSV_REJECT_SCANS = "__csv_reject_scans"
CSV_REJECT_ERRORS = "__csv_reject_errors"
# DuckDB reject error types → what is wrong with the line (never the line's content)
CSV_ERRORS = {
    "TOO MANY COLUMNS": "more fields than the header",
    "MISSING COLUMNS": "fewer fields than the header",
    "UNQUOTED VALUE": "a quote in the wrong place (text after a closing quote, or an unterminated quote)",
    "LINE SIZE OVER MAXIMUM": "the line is longer than the CSV reader's maximum",
    "INVALID ENCODING": "bytes that are not valid UTF-8 (re-encode the file as UTF-8, e.g. with iconv)",
    "INVALID UNICODE": "bytes that are not valid UTF-8 (re-encode the file as UTF-8, e.g. with iconv)",
}


def _csv_kwargs(cfg: ReportConfig) -> dict[str, Any]:
    """DuckDB CSV reader options: strict mode, and the dialect pinned (``source.csv`` or its documented
    defaults: delimiter ``,`` (tab for ``.tsv``), quote ``"``, header) rather than guessed.

    A quoted empty field (``""``) is the empty string, not NULL: only an empty field is NULL.
    """
    opts = cfg.source.csv
    if opts is None:
        tsv = cfg.source.path.lower().endswith((".tsv", ".tsv.gz"))
        opts = CsvOptions(delimiter="\t" if tsv else ",")
    return {
        "header": opts.header, "sep": opts.delimiter, "quotechar": opts.quote, "escapechar": opts.quote,
        "strict_mode": True, "allow_quoted_nulls": False,
    }


def _csv_checks(
    con: duckdb.DuckDBPyConnection, cfg: ReportConfig, names: list[str], kwargs: dict[str, Any]
) -> list[tuple[str, str]]:
    """Read every CSV file once in full, inside DuckDB, and refuse any line that does not parse.

    Returns the (column, type) list of the checked read. Refuses (SourceError naming the file and
    line) ragged rows, bad quotes, invalid UTF-8 and values that do not convert to the column
    type, and, for several files, a header that differs from the first file's. Only the file,
    line, column and error kind leave DuckDB, never the content of a line.
    """
    import duckdb

    def sniff_error(exc: duckdb.Error) -> SourceError:
        text = str(exc)
        m = re.search(r'sniffing file "([^"]*)"', text)
        where = f"source file {m.group(1)}" if m else f"source {cfg.source.path!r}"
        if m or "sniff" in text.lower():
            return SourceError(
                f"{where} does not parse as CSV: an unterminated or stray quote, or rows with different "
                "numbers of fields; fix the file, or set source.csv (delimiter, quote, header) to match it"
            )
        return SourceError(f"{where}: cannot read as csv: {first_line(exc)}")

    for n in names:
        with open(n, "rb") as fh:  # the byte-order mark only: file metadata, not row data
            if fh.read(2) in (b"\xff\xfe", b"\xfe\xff"):
                raise SourceError(f"source file {n} is UTF-16 encoded; re-encode it as UTF-8 (e.g. with iconv)")
    lenient = dict(kwargs, ignore_errors=True)
    if len(names) > 1:
        first: list[str] | None = None
        for n in names:
            try:
                cols = con.read_csv([n], **lenient).columns
            except duckdb.Error as exc:
                raise sniff_error(exc) from None
            if first is None:
                first = cols
            elif cols != first:
                missing = [c for c in first if c not in cols]
                extra = [c for c in cols if c not in first]
                detail = "; ".join(
                    [f"column {c!r} is missing" for c in missing[:3]]
                    + [f"column {c!r} is not in the first file" for c in extra[:3]]
                ) or "the columns are in a different order"
                raise SourceError(
                    f"source file {n} has a different header from {names[0]} (schema drift: {detail}); "
                    "make the files of one source agree or read them as separate sources"
                )
    try:
        rel = con.read_csv(
            names, **lenient, store_rejects=True, rejects_scan=CSV_REJECT_SCANS,
            rejects_table=CSV_REJECT_ERRORS, rejects_limit=100,
        )
        checked = list(zip(rel.columns, map(str, rel.types), strict=True))
        rel.create_view("__csv_check", replace=True)
        # count(COLUMNS(*)) converts every value of every column: every bad line is found
        con.execute("SELECT count(*), count(COLUMNS(*)) FROM __csv_check").fetchall()
    except duckdb.Error as exc:
        raise sniff_error(exc) from None
    try:
        bad = con.execute(
            f"SELECT s.file_path, e.line, e.column_name, e.error_type, "
            f"(SELECT count(*) FROM (SELECT DISTINCT file_id, line FROM {CSV_REJECT_ERRORS})) "
            f"FROM {CSV_REJECT_ERRORS} e JOIN {CSV_REJECT_SCANS} s USING (scan_id, file_id) "
            "ORDER BY s.file_path, e.line LIMIT 1"
        ).fetchall()
    finally:
        con.execute("DROP VIEW IF EXISTS __csv_check")
        con.execute(f"DROP TABLE IF EXISTS {CSV_REJECT_ERRORS}")
        con.execute(f"DROP TABLE IF EXISTS {CSV_REJECT_SCANS}")
    if bad:
        path, line, column, kind, n = bad[0]
        types = dict(checked)
        if kind == "CAST":
            what = f"column {column!r}: a value does not convert to {types.get(column, 'its type')}"
        else:
            what = CSV_ERRORS.get(str(kind), str(kind).lower())
        more = f" ({n} bad lines in all)" if n > 1 else ""
        raise SourceError(
            f"source file {path}, line {line}: {what}{more}; fix the file "
            "(bad lines are refused, never skipped silently)"
        )
    if kwargs.get("header"):
        # DuckDB renames a repeated header name (city, city_1): refuse the ambiguity instead
        header = con.read_csv([names[0]], **dict(lenient, header=False, all_varchar=True)).limit(1).fetchall()
        raw = [str(h) for h in header[0]] if header else []
        dups = sorted({h for h in raw if raw.count(h) > 1})
        if dups:
            raise SourceError(
                f"source file {names[0]}: the header repeats column name(s) {', '.join(map(repr, dups))}; "
                "give every column its own name"
            )
    return checked


def is_numeric(duck_type: str) -> bool:
    return duck_type.upper().startswith(NUMERIC_TYPES)


def is_temporal(duck_type: str) -> bool:
    return duck_type.upper().startswith(("DATE", "TIMESTAMP"))


def check_columns(cfg: ReportConfig, schema: dict[str, str], con: Any = None, source: Source | None = None) -> None:
    """Every column the config reads exists in the source with a usable type (ConfigError if not).

    Errors name the config file, line and key, and the closest source column ("did you mean").
    With ``con`` and ``source``, a metric column that holds text is described by its first value that
    is not a number and where it is (file and line for CSV, file and row for Parquet)."""
    from ...config import did_you_mean

    avail = ", ".join(list(schema)[:20]) + (" …" if len(schema) > 20 else "")

    def missing(loc: tuple[Any, ...], col: str) -> ConfigError:
        hint = did_you_mean(col, schema)
        if len(schema) == 1 and detect_format(cfg) == "csv":
            hint += "; the CSV was read as a single column: set source.csv.delimiter"
        return ConfigError(
            f"{cfg.where(*loc)}: column {col!r} is not in the source {cfg.source.path!r}{hint} (columns: {avail})"
        )

    if cfg.privacy_unit not in schema:
        raise missing(("privacy_unit",), cfg.privacy_unit)
    for i, d in enumerate(cfg.dims):
        if d.column not in schema:
            raise missing(("dimensions", i), d.column)
        t = schema[d.column]
        if d.grain and not (is_temporal(t) or t.upper() == "VARCHAR"):
            raise ConfigError(
                f"{cfg.where('dimensions', i)}: column {d.column!r} has type {t}; grain {d.grain} needs a date or timestamp"
            )
    for i, m in enumerate(cfg.metrics):
        for key, col in (("column", m.column), ("multiply_by", m.multiply_by)):
            if col is None:
                continue
            if col not in schema:
                raise missing(("metrics", i, key), col)
            if schema[col].upper() == "VARCHAR":
                # text where numbers belong is a data problem: refused, never coerced
                example = text_value_example(con, cfg, source, col) if con is not None and source is not None else ""
                raise SourceError(
                    f"source {cfg.source.path!r}: {cfg.where('metrics', i, key)}: column {col!r} holds text, not "
                    f"numbers{example}; fix the source: write missing values as empty, or point the metric at a "
                    "numeric column"
                )
            if not is_numeric(schema[col]):
                raise ConfigError(
                    f"{cfg.where('metrics', i, key)}: column {col!r} has type {schema[col]}, not a number; "
                    "point the metric at a numeric column"
                )
    if cfg.window is not None:
        if cfg.window.column not in schema:
            raise missing(("window", "column"), cfg.window.column)
        if not is_temporal(schema[cfg.window.column]):
            raise ConfigError(f"{cfg.where('window', 'column')}: column {cfg.window.column!r} has type "
                              f"{schema[cfg.window.column]}; a window needs a date or timestamp column")
    for col, spec in cfg.filter.items():
        if col not in schema:
            raise missing(("filter", col), col)
        values = [spec] if not isinstance(spec, list | RangeFilter) else spec
        if isinstance(spec, RangeFilter):
            values = [*(spec.in_ or []), *(spec.not_in or []), *(v for v in (spec.min, spec.max) if v is not None)]
        for v in values:
            problem = filter_value_problem(v, schema[col])
            if problem:
                raise ConfigError(
                    f"{cfg.where('filter', col)}: value {v!r} does not fit column {col!r} of type {schema[col]}: {problem}"
                )


def text_value_example(con: Any, cfg: ReportConfig, source: Source, col: str) -> str:
    """`` (e.g. 'N/A' in FILE, line 3; 12 such lines)``: the first value of ``col`` that is not a
    number, and where. An operator-facing error only (never a release); at most 40 characters of
    the value leave DuckDB, and nothing when the column is an identifier (config validation forbids
    that for metrics, so this is a second lock)."""
    import duckdb

    if col in {cfg.privacy_unit, *cfg.identifiers}:
        return ""
    con = con.con  # the engine's DuckDB connection (relational API)
    names = [f.path for f in source.files]
    try:
        if source.format == "csv":
            con.read_csv(names, **dict(_csv_kwargs(cfg), ignore_errors=True, store_rejects=True,
                                       rejects_scan="__num_scans", rejects_table="__num_errors", rejects_limit=1000,
                                       dtype={col: "DOUBLE"})).create_view("__num_check", replace=True)
            try:
                con.execute(f"SELECT count({ident(col)}) FROM __num_check").fetchall()  # converts every value
                rows = con.execute(
                    "SELECT s.file_path, e.line, e.error_message, (SELECT count(*) FROM __num_errors WHERE column_name = $1) "
                    "FROM __num_errors e JOIN __num_scans s USING (scan_id, file_id) WHERE e.column_name = $1 "
                    "ORDER BY s.file_path, e.line LIMIT 1", [col]).fetchall()
            finally:
                con.execute("DROP VIEW IF EXISTS __num_check")
                con.execute("DROP TABLE IF EXISTS __num_errors")
                con.execute("DROP TABLE IF EXISTS __num_scans")
            if not rows:
                return ""
            path, line, message, n = rows[0]
            m = re.search(r'Could not convert string "(.*)" to', str(message))
            value = m.group(1) if m else "?"
            where = f"{path}, line {line}"
        elif source.format == "parquet":
            c = ident(col)
            rows = con.execute(
                f"SELECT filename, file_row_number, CAST({c} AS VARCHAR), count(*) OVER () FROM read_parquet($1, "
                f"filename = true, file_row_number = true) WHERE {c} IS NOT NULL AND TRY_CAST({c} AS DOUBLE) IS NULL "
                "ORDER BY filename, file_row_number LIMIT 1", [names]).fetchall()
            if not rows:
                return ""
            path, row, value, n = rows[0]
            where = f"{path}, row {int(row) + 1}"
        else:
            c = ident(col)
            rows = con.execute(
                f"SELECT CAST({c} AS VARCHAR), count(*) OVER () FROM {SOURCE_VIEW} WHERE {c} IS NOT NULL AND "
                f"TRY_CAST({c} AS DOUBLE) IS NULL LIMIT 1").fetchall()
            if not rows:
                return ""
            value, n = rows[0]
            where = ""
    except duckdb.Error:
        return ""
    shown = str(value) if len(str(value)) <= 40 else str(value)[:39] + "…"
    more = f"; {int(n)} such values" if int(n) > 1 else ""
    return f" (e.g. {shown!r}" + (f" in {where}" if where else "") + f"{more})"


def filter_value_problem(value: Any, duck_type: str) -> str | None:
    """Why a filter value cannot be compared with a column of ``duck_type`` (None when it can).

    Checked before any data is read, so a mistyped filter is a config error naming its key rather
    than a DuckDB conversion error at run time (which could quote a source value).
    """
    t = duck_type.upper()
    if t == "BOOLEAN":
        return None if isinstance(value, bool) else "give true or false"
    if isinstance(value, bool):
        return "a true/false value fits only a BOOLEAN column"
    if is_numeric(t):
        if isinstance(value, int | float) and math.isfinite(value):
            return None
        return "give a finite number (unquoted)"
    if is_temporal(t):
        if isinstance(value, str):
            try:
                dt.datetime.fromisoformat(value.strip())
                return None
            except ValueError:
                pass
        return "give a date or timestamp as quoted ISO text, e.g. '2026-01-31' or '2026-01-31 12:00:00'"
    if t == "VARCHAR" or t.startswith("ENUM"):
        return None if isinstance(value, str) else "the column holds text: quote the value so YAML keeps it as text"
    return f"columns of type {duck_type} cannot be filtered on"
