"""DuckDB connection set-up: threads, memory limit and spill directory from config, flags or env.

Precedence: explicit argument (CLI flag) > config ``engine:`` > environment
(``ANONYMIZE_THREADS``, ``ANONYMIZE_MEMORY_LIMIT``, ``ANONYMIZE_TEMP_DIR``) > DuckDB defaults.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ...config.models import ReportConfig

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
    # Python holds (take_rows), and published order is set in Python (sort_table).
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


# numpy <-> Arrow for aggregate columns. pyarrow's own conversions (pa.array, pa.table(dict),
# to_numpy) import pandas when it is installed, ~0.3 s per process; these go through the buffers.


def np_column(table: Any, name: str) -> Any:
    """Column ``name`` (integer, floating or boolean without nulls) as a numpy array (a copy)."""
    import numpy as np
    import pyarrow as pa

    arr = table.column(name).combine_chunks()
    if arr.null_count:
        raise ValueError(f"column {name} has nulls; coalesce it in SQL first")
    t = arr.type
    if pa.types.is_boolean(t):  # bit-packed
        bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[arr.offset:arr.offset + len(arr)].astype(bool)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise TypeError(f"column {name} is {t}, not a number; cast it in SQL first")
    kind = "f" if pa.types.is_floating(t) else ("u" if pa.types.is_unsigned_integer(t) else "i")
    dtype = np.dtype(f"{kind}{t.bit_width // 8}")
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize).copy()


def arrow_array(values: Any) -> Any:
    """A numpy int64/float64 array as an Arrow array (no nulls)."""
    import numpy as np
    import pyarrow as pa

    v = np.ascontiguousarray(values)
    if v.dtype.kind in "iu":
        v, typ = v.astype(np.int64, copy=False), pa.int64()
    else:
        v, typ = v.astype(np.float64, copy=False), pa.float64()
    return pa.Array.from_buffers(typ, len(v), [None, pa.py_buffer(v)])


def arrow_table(columns: dict[str, Any]) -> Any:
    """``pa.table(columns)`` without the pandas import (values: Arrow arrays or numpy arrays)."""
    import pyarrow as pa

    arrays = [c if isinstance(c, pa.Array | pa.ChunkedArray) else arrow_array(c) for c in columns.values()]
    return pa.Table.from_arrays(arrays, names=list(columns))


def take_rows(table: Any, idx: Any) -> Any:
    """Rows ``idx`` (positions) of the Arrow ``table``, in the order of ``idx``.

    Positions index a table Python already holds, so values computed from that table's columns
    stay paired with their rows. Never select rows through a query whose output order is not
    controlled (see :func:`connect`).
    """
    import numpy as np
    import pyarrow as pa

    return table.take(pa.Array.from_buffers(pa.int64(), len(idx), [None, pa.py_buffer(np.ascontiguousarray(idx, dtype=np.int64))]))


def sort_table(table: Any, keys: list[str]) -> Any:
    """``table`` sorted by ``keys`` ascending, nulls first, ties kept in their current order.

    The published order of every release: computed here, in Python, from the values alone, so it
    does not depend on how the engine happened to return the rows. Text compares by its UTF-8
    bytes, dates and numbers by value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows < 2 or not keys:
        return table
    if int(pa.__version__.split(".")[0]) >= 25:  # null placement per key (the global option is deprecated)
        order = pc.sort_indices(table, sort_keys=[(k, "ascending", "at_start") for k in keys])
    else:  # pragma: no cover - older pyarrow
        order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys], null_placement="at_start")
    return table.take(order)
