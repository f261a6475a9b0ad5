"""The release history's presence sketches only skip comparisons that cannot find a difference:
their bound never exceeds the true number of people present in one cell only, and a history with
sketches withholds exactly what the same history without them (person-level comparison of every
pair) withholds."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from pipeline import load_config, run_report
from pipeline.engines.duckdb.difference import lower_bound_sql, sketch_sql
from tests.conftest import write_config


def _uh(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:16]


@given(st.sets(st.integers(0, 300), max_size=120), st.sets(st.integers(0, 300), max_size=120))
def test_sketch_bound_is_at_most_the_people_in_one_cell_only(a: set[int], b: set[int]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE u (cell_key VARCHAR, uh VARCHAR)")
    rows = [["a", _uh(i)] for i in a] + [["b", _uh(i)] for i in b]
    if rows:
        con.executemany("INSERT INTO u VALUES (?, ?)", rows)
    con.execute(f"CREATE TABLE s AS {sketch_sql('u', 'cell_key')}")
    empty = "SELECT 'x' AS cell_key, 0 AS n, " + ", ".join(f"0 AS b{i}" for i in range(32))
    sa = f"(SELECT * FROM s WHERE cell_key = 'a' UNION ALL ({empty}) ORDER BY n DESC LIMIT 1)"
    sb = f"(SELECT * FROM s WHERE cell_key = 'b' UNION ALL ({empty}) ORDER BY n DESC LIMIT 1)"
    bound = con.execute(f"SELECT {lower_bound_sql('x', 'y')} FROM {sa} x, {sb} y").fetchone()[0]
    truth = len(a ^ b)
    assert bound <= truth
    if truth <= 1:
        assert bound == truth  # a single newcomer or leaver is always seen exactly


def _day(path: Path, rng: random.Random, people: list[int]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, city VARCHAR, category VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)",
                    [[u, f"c{u % 4}", f"k{(u * 7) % 3}"] for u in people for _ in range(1 + u % 2)])
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()


def test_sketches_never_change_what_is_withheld(tmp_path: Path) -> None:
    """Ten days of a report with margins over a drifting population (newcomers, leavers, people
    who change category); day 11 is run against the history with sketches and against a copy whose
    sketches are removed (every pair compared person by person): same cells published."""
    rng = random.Random(5)
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    cfg_path = write_config(tmp_path, "daily.yaml", report="daily", source={"path": "data/events.parquet"},
                            identifiers=["user_id"], filter=None, dimensions=["city", "category"],
                            metrics=[{"name": "rows", "agg": "count"}], min_units=5, totals=[[], ["city"]],
                            history=None, budget=None)
    people = list(range(120))
    for day in range(10):
        people = [p for p in people if rng.random() > 0.03] + [1000 + day * 10 + i for i in range(rng.randrange(0, 4))]
        _day(src, rng, people)
        run_report(load_config(cfg_path), f"d{day}")
    people = people[:-1] + [5000]
    _day(src, rng, people)
    state = tmp_path / "state"
    plain = tmp_path / "plain"
    shutil.copytree(state, plain)
    con = duckdb.connect(str(plain / "release_history.duckdb"))
    con.execute("DROP TABLE cell_sketch")
    con.close()
    with_sketch = run_report(load_config(cfg_path), "d10")
    cfg_plain = load_config(write_config(tmp_path, "plain.yaml", **{
        **load_config(cfg_path).normalised(), "history": "plain/release_history.duckdb",
        "output": {"dir": "reports_plain"}}))
    without = run_report(cfg_plain, "d10")
    assert pq.read_table(with_sketch.report_path).to_pylist() == pq.read_table(without.report_path).to_pylist()
    assert with_sketch.internal["cells"] == without.internal["cells"]
    assert with_sketch.internal["cells"].get("suppressed_difference", 0) > 0  # the check had work to do
