"""The DuckDB engine: an in-memory connection configured for one run, behind the Engine interface.

Precedence of settings: explicit argument (CLI flag) > config ``engine:`` > environment
(``ANONYMIZE_THREADS``, ``ANONYMIZE_MEMORY_LIMIT``, ``ANONYMIZE_TEMP_DIR``) > DuckDB defaults.

:class:`DuckDBEngine` implements :class:`pipeline.engines.base.Engine`: flows and the gate run SQL
through ``execute``/``run`` and read results through :class:`DuckDBResult` (rows, numpy, Arrow).
This package's source readers use ``engine.con`` itself (DuckDB's relational API).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ...config import ReportConfig
from .sql import Query

if TYPE_CHECKING:
    import duckdb


def connect(
    cfg: ReportConfig | None = None,
    *,
    threads: int | None = None,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
) -> DuckDBEngine:
    """An in-memory DuckDB engine configured for one run (it never writes the source files)."""
    import duckdb

    eng = cfg.engine if cfg is not None else None
    threads = threads or (eng.threads if eng else None) or _env_int("ANONYMIZE_THREADS")
    memory_limit = memory_limit or (eng.memory_limit if eng else None) or os.environ.get("ANONYMIZE_MEMORY_LIMIT")
    temp_directory = temp_directory or (eng.temp_directory if eng else None) or os.environ.get("ANONYMIZE_TEMP_DIR")
    config: dict[str, str] = {}
    if threads:
        config["threads"] = str(threads)
    if memory_limit:
        config["memory_limit"] = memory_limit
    if temp_directory:
        path = cfg.resolve(temp_directory) if cfg is not None else temp_directory
        config["temp_directory"] = str(path)
    # Not preserving insertion order saves memory on big scans. It also means a result fetched to
    # Arrow may come back in another order than its ORDER BY (measured with DuckDB 2.0): nothing
    # relies on the order of a fetched result. Rows are paired by key or by position in a table
    # Python holds (:func:`pipeline.tables.take_rows`), and published order is set in Python
    # (:func:`pipeline.tables.sort_table`).
    config["preserve_insertion_order"] = "false"
    con = duckdb.connect(":memory:", config=config)
    # time truncation (day, week, month of a TIMESTAMP WITH TIME ZONE) in UTC, whatever the
    # machine's zone (DuckDB's default): the same release on every machine, and as on Spark
    con.execute("SET TimeZone = 'UTC'")
    return DuckDBEngine(con)


class DuckDBResult:
    """A pending DuckDB result: read it once, as rows, numpy columns or an Arrow table. The row
    order is whatever the engine returned (never relied on; see :func:`connect`)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall()

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()

    def fetchnumpy(self) -> dict[str, Any]:
        return self._cursor.fetchnumpy()

    def arrow(self) -> Any:
        return fetch_arrow(self._cursor)


class DuckDBEngine:
    """The DuckDB implementation of :class:`pipeline.engines.base.Engine` (one in-memory database)."""

    name = "duckdb"

    def __init__(self, con: Any) -> None:
        import duckdb

        self.con = con
        self.Error: type[Exception] = duckdb.Error

    def execute(self, sql: str, params: Any = None) -> DuckDBResult:
        """Run ``sql`` with ``params`` bound to its ``$n`` (or ``?``) placeholders."""
        return DuckDBResult(self.con.execute(sql, list(params)) if params else self.con.execute(sql))

    def executemany(self, sql: str, rows: Any) -> None:
        self.con.executemany(sql, rows)

    def run(self, q: Query) -> DuckDBResult:
        """Run a built query (its values bound as parameters)."""
        return self.execute(q.sql, q.params)

    def open_source(self, cfg: ReportConfig) -> Any:
        """The ``__src`` view over the configured source, and its description (files, schema, fingerprint)."""
        from .sources import open_source

        return open_source(self, cfg)

    def check_columns(self, cfg: ReportConfig, source: Any) -> None:
        """Every column the config reads exists in the source with a usable type (see sources.check_columns)."""
        from .sources import check_columns

        check_columns(cfg, source.schema, self, source)

    def file_view(self, name: str, path: str) -> None:
        """View ``name`` over a Parquet file, or a CSV file (header, every column text), read in the engine."""
        from .sql import literal

        csv = path.lower().endswith((".csv", ".txt", ".tsv"))
        reader = (f"read_csv({literal(path)}, all_varchar = true, header = true)" if csv
                  else f"read_parquet({literal(path)})")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {reader}")

    def register(self, name: str, table: Any) -> None:
        """Make an Arrow table queryable as ``name`` (zero-copy)."""
        self.con.register(name, table)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    def content_digests(self, paths: list[str]) -> list[str]:
        """sha256 of each source file's bytes, sorted (the key of the DP-budget register)."""
        from ...state.protected import content_digests

        return content_digests(paths)

    # ----- the release history (pipeline.state.history) ------------------------------------
    def history_exists(self, hist: Any) -> bool:
        """Whether this engine's store of the history exists (refuses the other engine's)."""
        return hist.store(self.name).exists()

    def attach_history(self, hist: Any, *, write: bool) -> None:
        """The history's tables as ``__hist.<table>``, read-only unless ``write`` (then changes
        are made inside ``BEGIN TRANSACTION`` … ``COMMIT``). Raises LedgerError if unreadable."""
        import duckdb

        from ...errors import LedgerError, first_line
        from .sql import literal

        path = hist.store(self.name)
        try:
            self.con.execute(f"ATTACH {literal(str(path))} AS __hist" + ("" if write else " (READ_ONLY)"))
        except duckdb.Error as exc:
            raise LedgerError(f"cannot open the release history {path}: {first_line(exc)}") from None

    def detach_history(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.con.execute("DETACH __hist")

    def tables(self, database: str) -> set[str]:
        """The tables of an attached database (``__hist``)."""
        return {r[0] for r in self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = $1", [database]).fetchall()}

    def columns(self, table: str, database: str | None = None) -> list[str]:
        """The columns of ``table`` (of ``database``, else of any), in table order."""
        where, params = ("AND database_name = $2", [table, database]) if database else ("", [table])
        return [r[0] for r in self.con.execute(
            f"SELECT column_name FROM duckdb_columns() WHERE table_name = $1 {where} ORDER BY column_index",
            params).fetchall()]

    def query_progress(self) -> float:
        """The running query's progress in percent (-1 when unknown)."""
        return float(self.con.query_progress())

    def interrupt(self) -> None:
        self.con.interrupt()

    def close(self) -> None:
        self.con.close()


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    try:
        return int(v) if v else None
    except ValueError:
        return None


def fetch_arrow(result: duckdb.DuckDBPyConnection) -> object:
    """The pending result as a pyarrow Table (DuckDB 2 renamed ``fetch_arrow_table``)."""
    import warnings

    fn = getattr(result, "to_arrow_table", None) or result.fetch_arrow_table
    with warnings.catch_warnings():
        # the result is the small aggregate table; the extra copy DuckDB warns about is harmless
        warnings.simplefilter("ignore", UserWarning)
        return fn()


def execute(con: Any, q: Query) -> Any:
    """Run a built query (its values bound as parameters) on an engine."""
    return con.run(q)
