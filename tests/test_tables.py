"""Engine helpers: numpy <-> Arrow through the buffers (no pandas import), checked against pyarrow."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from pipeline.engines.duckdb.connection import fetch_arrow
from pipeline.tables import arrow_array, arrow_table, np_column


@pytest.mark.parametrize("typ", ["BIGINT", "INTEGER", "UTINYINT", "DOUBLE", "FLOAT", "BOOLEAN"])
def test_np_column_matches_duckdb_values_across_chunks_and_offsets(typ: str) -> None:
    con = duckdb.connect()
    expr = "(i % 3 = 0)" if typ == "BOOLEAN" else f"CAST(i % 200 AS {typ})"
    table = fetch_arrow(con.execute(f"SELECT {expr} AS x FROM range(5000) t(i) ORDER BY i"))
    expected = [r[0] for r in con.execute(f"SELECT {expr} FROM range(5000) t(i) ORDER BY i").fetchall()]
    assert np_column(table, "x").tolist() == expected
    # a slice (non-zero offset) and several chunks
    sliced = pa.concat_tables([table.slice(7, 100), table.slice(1003, 50)])
    assert np_column(sliced, "x").tolist() == expected[7:107] + expected[1003:1053]


def test_np_column_refuses_nulls_and_text() -> None:
    con = duckdb.connect()
    table = fetch_arrow(con.execute("SELECT CASE WHEN i = 2 THEN NULL ELSE i END AS x, 'a' AS s FROM range(4) t(i)"))
    with pytest.raises(ValueError, match="nulls"):
        np_column(table, "x")
    with pytest.raises(TypeError, match="not a number"):
        np_column(table, "s")


def test_arrow_array_and_table_round_trip() -> None:
    ints = np.array([3, -1, 7], dtype=np.int32)
    floats = np.array([0.5, np.inf, -2.0])
    t = arrow_table({"i": ints, "f": floats, "s": fetch_arrow(duckdb.sql("SELECT 'x' AS s UNION ALL SELECT 'y' UNION ALL SELECT 'z'")).column("s")})
    assert t.schema.types[:2] == [pa.int64(), pa.float64()]
    assert t.column("i").to_pylist() == [3, -1, 7]
    assert t.column("f").to_pylist() == [0.5, float("inf"), -2.0]
    assert arrow_array(np.arange(0)).to_pylist() == []


def test_prefetch_imports_in_background_and_swallows_failures() -> None:
    """prefetch only moves an import earlier: the module is loaded, a failing import is not raised."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pipeline.flows.prefetch import prefetch\n"
        "assert 'scipy.sparse.csgraph' not in sys.modules\n"
        "t = prefetch('no_such_module_for_prefetch', 'json')\n"
        "t.join(30)\n"
        "assert not t.is_alive()\n"
        "t = prefetch('scipy.sparse', 'scipy.sparse.csgraph')\n"
        "assert t.name == 'anonymize-prefetch' and t.daemon\n"
        # the main thread imports nothing itself: the module must arrive from the background thread
        "t.join(60)\n"
        "assert 'scipy.sparse.csgraph' in sys.modules, 'prefetch did not import it'\n"
        "from scipy.sparse.csgraph import connected_components\n"
        "assert callable(connected_components)\n"
    )
    # a fresh interpreter: in the test process scipy may already be imported
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
