"""Plain Arrow/numpy table helpers shared by every layer (no engine, no SQL).

numpy <-> Arrow for aggregate columns: pyarrow's own conversions (``pa.array``, ``pa.table(dict)``,
``to_numpy``) import pandas when it is installed, ~0.3 s per process; these go through the buffers.
Row selection and ordering happen here, on tables Python holds: no value is ever paired with a row
by the order an engine returned a result in.
"""

from __future__ import annotations

from typing import Any


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
