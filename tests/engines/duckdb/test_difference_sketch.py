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
import pytest
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


@given(st.dictionaries(st.integers(0, 300), st.sampled_from([0, 0, 1, 2, 5]), max_size=120),
       st.dictionaries(st.integers(0, 300), st.sampled_from([0, 0, 1, 2, 5]), max_size=120))
def test_a_contributor_sketch_bound_is_at_most_the_residual_of_its_quantity(a: dict[int, int], b: dict[int, int]) -> None:
    """Two cells' people with their contribution to a value quantity (0: present, contributing
    nothing). The bound from the sketches of their contributors (the sketch filtered to a
    contribution not 0) never passes d_q: the people whose contribution differs, absent as 0."""
    con = duckdb.connect()
    con.execute("CREATE TABLE u (cell_key VARCHAR, uh VARCHAR, v INTEGER)")
    rows = [["a", _uh(i), v] for i, v in a.items()] + [["b", _uh(i), v] for i, v in b.items()]
    if rows:
        con.executemany("INSERT INTO u VALUES (?, ?, ?)", rows)
    con.execute("CREATE TABLE k (cell_key VARCHAR)")
    con.execute("INSERT INTO k VALUES ('a'), ('b')")
    con.execute(f"CREATE TABLE s AS SELECT k.cell_key, coalesce(x.n, 0) AS n, "
                f"{', '.join(f'coalesce(x.b{i}, 0) AS b{i}' for i in range(32))} FROM k LEFT JOIN "
                f"({sketch_sql('u', 'cell_key', where='t.v <> 0')}) x USING (cell_key)")
    bound = con.execute(f"SELECT {lower_bound_sql('x', 'y')} FROM s x, s y "
                        "WHERE x.cell_key = 'a' AND y.cell_key = 'b'").fetchone()[0]
    truth = sum(a.get(i, 0) != b.get(i, 0) for i in set(a) | set(b))
    assert bound <= truth


def _day(path: Path, rng: random.Random, people: list[int], values: bool = False, bump: int | None = None) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, city VARCHAR, category VARCHAR, value DOUBLE)")
    # with values: a third of the people contribute none (NULL), the others 1 + u % 4 (``bump``: one more)
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)",
                    [[u, f"c{u % 4}", f"k{(u * 7) % 3}",
                      None if not values or u % 3 == 0 else float(1 + u % 4 + (u == bump))]
                     for u in people for _ in range(1 + u % 2)])
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()


@pytest.mark.parametrize("values", [False, True], ids=["rows", "rows and a value sum"])
def test_sketches_never_change_what_is_withheld(tmp_path: Path, values: bool) -> None:
    """Ten days of a report with margins over a drifting population (newcomers, leavers, people
    who change category; with a value sum, people contributing nothing and values that change);
    day 11 is run against the history with sketches and against a copy whose sketches are removed
    (every pair compared person by person): same cells published."""
    rng = random.Random(5)
    metrics = [{"name": "rows", "agg": "count"}]
    if values:
        metrics.append({"name": "value", "agg": "sum", "column": "value", "bounds": [0, 5]})
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    cfg_path = write_config(tmp_path, "daily.yaml", report="daily", source={"path": "data/events.parquet"},
                            identifiers=["user_id"], filter=None, dimensions=["city", "category"],
                            metrics=metrics, min_units=5, totals=[[], ["city"]],
                            history=None, budget=None)
    people = list(range(120))
    for day in range(10):
        people = [p for p in people if rng.random() > 0.03] + [1000 + day * 10 + i for i in range(rng.randrange(0, 4))]
        _day(src, rng, people, values)
        run_report(load_config(cfg_path), f"d{day}")
    people = people[:-1] + [5000]
    if values:  # six newcomers with no value in city c0 (c0 × k0), one value of c0 (in c0 × k1) changed:
        # c0's margin differs by 7 people present, its value sum by one person's change
        people += [6000 + 12 * i for i in range(6)]
    _day(src, rng, people, values, bump=next(u for u in people if u % 12 == 4) if values else None)
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
