"""The cell table's ingredients (``engines/duckdb/cells.py``) against a truth computed in Python.

Threshold mode builds ``__cells`` two ways: in one statement from the source (no totals,
dominance, remainder or history) or regrouped from the materialised (cell, unit) table. Every
number the k rule, the per-metric k rule and the gate read comes from these columns, so both
ways must give exactly what a reader of the rows would count by hand: units are distinct
non-null people, a metric's contributors are the people with at least one finite value, rows and
sums leave out the rows without a person, and invalid values are counted on every row."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import load_config
from pipeline.engines import connect
from pipeline.engines.duckdb.cells import cells_direct_sql, cells_from_per_unit_sql, per_unit_sql
from pipeline.engines.duckdb.connection import execute
from tests.conftest import write_config

BOUNDS = (0.0, 50.0)


def _rows(seed: int) -> list[dict]:
    """Rows with null people, values missing, NaN, infinite and beyond the bounds, and cells where
    some people never have a value (their contributor count differs from the unit count)."""
    rng = random.Random(seed)
    out = []
    for _ in range(600):
        v = rng.choice([None, math.nan, math.inf, -5.0, 80.0, *[float(rng.randint(0, 50)) for _ in range(6)]])
        u = rng.choice([None, *range(1, 40)])
        out.append({"user_id": u, "city": rng.choice(["a", "b", "c"]), "kind": rng.choice(["x", "y"]),
                    "amount": v if not (u is not None and u % 7 == 0) else None})
    return out


def _truth(rows: list[dict]) -> dict[tuple, dict]:
    """Per (city, kind): the counts and clamped sums, by hand."""
    cells: dict[tuple, dict] = {}
    for r in rows:
        c = cells.setdefault((r["city"], r["kind"]), {"units": set(), "rows": 0, "null_rows": 0, "s": Decimal(0),
                                                      "c": 0, "cu": set(), "bad": 0})
        v = r["amount"]
        if v is not None and not math.isfinite(v):
            c["bad"] += 1
        if r["user_id"] is None:
            c["null_rows"] += 1
            continue
        c["units"].add(r["user_id"])
        c["rows"] += 1
        if v is not None and math.isfinite(v):
            c["s"] += Decimal(str(min(max(v, BOUNDS[0]), BOUNDS[1])))
            c["c"] += 1
            c["cu"].add(r["user_id"])
    return {k: {"units": len(c["units"]), "rows": c["rows"], "null_rows": c["null_rows"], "s": c["s"], "c": c["c"],
                "cu": len(c["cu"]), "bad": c["bad"], "umin": min(c["units"], default=None),
                "umax": max(c["units"], default=None)} for k, c in cells.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_both_cell_tables_match_a_count_by_hand(tmp_path: Path, seed: int) -> None:
    rows = _rows(seed)
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(
        [("user_id", pa.int64()), ("city", pa.string()), ("kind", pa.string()), ("amount", pa.float64())])),
        tmp_path / "data" / "e.parquet")
    # a sum and a mean of one column share its value column (aliased, not aggregated twice)
    metrics = [{"name": "n", "agg": "count"}, {"name": "people", "agg": "count_units"},
               {"name": "total", "agg": "sum", "column": "amount", "bounds": list(BOUNDS)},
               {"name": "avg", "agg": "mean", "column": "amount", "bounds": list(BOUNDS)}]
    cfg = load_config(write_config(tmp_path, source={"path": "data/e.parquet"}, dimensions=["city", "kind"],
                                   filter=None, identifiers=["user_id"], metrics=metrics, min_units=2))
    truth = _truth(rows)
    con = connect(cfg)
    cols = ("__units, __rows, __umin, __umax, __s2, __c2, __cu2, __s3, __c3, __cu3")
    try:
        src = con.open_source(cfg)
        execute(con, cells_direct_sql(cfg, src.schema))
        direct = con.execute(f"SELECT __d0, __d1, {cols}, __null_rows, __bad2, __bad3 FROM __cells "
                             "WHERE __level = 0").fetchall()
        execute(con, per_unit_sql(cfg, src.schema))
        execute(con, cells_from_per_unit_sql(cfg))
        regrouped = con.execute(f"SELECT __d0, __d1, {cols} FROM __cells WHERE __level = 0").fetchall()
    finally:
        con.close()
    got = {(r[0], r[1]): r[2:] for r in direct}
    assert set(got) == set(truth)
    for key, t in truth.items():
        units, n_rows, umin, umax, s2, c2, cu2, s3, c3, cu3, null_rows, bad2, bad3 = got[key]
        assert (units, n_rows, null_rows, umin, umax) == (t["units"], t["rows"], t["null_rows"], t["umin"], t["umax"])
        # the sum and the mean read the same clamped values; contributors are people with a value
        assert (s2, c2, cu2) == (s3, c3, cu3) == (t["s"] if t["c"] else None, t["c"], t["cu"]), key
        assert bad2 == bad3 == t["bad"]
        assert isinstance(n_rows, int) and isinstance(c2, int)  # BIGINT columns, as count(*) gave
    # the (cell, unit) route gives the same ingredients for every cell with a person in it
    assert {(r[0], r[1]): r[2:] for r in regrouped} == {k: v[:10] for k, v in got.items() if v[0] > 0}
