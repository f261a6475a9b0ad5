"""The release history's keyed person hashes (``engines/duckdb/difference.py``)."""

from __future__ import annotations

import hashlib

from pipeline.engines.duckdb.connection import connect
from pipeline.engines.duckdb.difference import _uh, unit_hashes
from pipeline.engines.duckdb.sql import literal


def test_a_persons_hash_is_the_same_looked_up_or_computed() -> None:
    """Every statement that stores or compares a person's hash gets the documented value,
    ``left(sha256(secret_hex || person), 16)`` (computed here with hashlib), whether it is looked
    up in the run's ``__uh`` table or computed for a person missing from it, and never the value
    of a ``__uh`` made under another history's secret: a wrong or stale hash would make an
    unchanged person look changed (or a changed one unchanged) against every earlier release."""
    secret, other = "ab" * 32, "cd" * 32
    con = connect()
    con.execute("CREATE TEMP TABLE __per_unit AS SELECT i AS __u FROM range(1, 200) r(i) UNION ALL SELECT NULL")
    unit_hashes(con, literal(other), replace=True)  # a table under another secret: must not be used
    con.execute("CREATE TEMP TABLE __per_unit_more AS SELECT i AS __u FROM range(150, 260) r(i)")

    def hashes() -> dict[int, str]:
        uh, join = _uh(con, literal(secret), "p")
        return dict(con.execute(f"SELECT p.__u, {uh} FROM __per_unit_more p{join}").fetchall())

    def truth(u: int) -> str:
        return hashlib.sha256(f"{secret}{u}".encode()).hexdigest()[:16]

    assert hashes() == {u: truth(u) for u in range(150, 260)}  # every one computed (the table is another's)
    unit_hashes(con, literal(secret), replace=True)  # 1..199 looked up, 200..259 computed
    assert con.execute("SELECT count(*) FROM __uh").fetchone() == (199,)
    assert hashes() == {u: truth(u) for u in range(150, 260)}
