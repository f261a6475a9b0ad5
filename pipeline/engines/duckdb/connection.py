"""DuckDB connection set-up: threads, memory limit and spill directory from config, flags or env.

Precedence: explicit argument (CLI flag) > config ``engine:`` > environment
(``ANONYMIZE_THREADS``, ``ANONYMIZE_MEMORY_LIMIT``, ``ANONYMIZE_TEMP_DIR``) > DuckDB defaults.
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
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection configured for one run (never touches the source files)."""
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
    return duckdb.connect(":memory:", config=config)


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
    """Run a built query (its values bound as parameters)."""
    return con.execute(q.sql, list(q.params)) if q.params else con.execute(q.sql)
