"""Attacks with remainder rows across threshold releases (issue 16): an earlier remainder row minus
a cell published later, a later remainder row minus an earlier cell, and two remainder rows of the
same level subtracted. The attacker pairs rows by their published values only; an independent
truth from the raw rows (plain DuckDB) counts the people who explain each difference."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from pipeline import load_config, run_report

from .conftest import write_config

K = 10


def write(path: Path, groups: dict[str, list[int]]) -> Path:
    """Two events per person: ``groups`` maps a city to its people's ids."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, city VARCHAR)")
    rows = [[u, city] for city, people in groups.items() for u in people for _ in range(2)]
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()
    return path


def config(folder: Path) -> Path:
    return write_config(folder, "r.yaml", report="r", source={"path": "data/events.parquet"}, identifiers=["user_id"],
                        filter=None, dimensions=["city"], metrics=[{"name": "rows", "agg": "count"}],
                        min_units=K, remainder=True, history=None, budget=None, totals=None)


def rows_of(release) -> tuple[dict[str, int], int | None]:
    """(city → rows, the remainder row's rows or None)."""
    cells, rem = {}, None
    for r in pq.read_table(release.report_path).to_pylist():
        if r["is_remainder"]:
            rem = r["rows"]
        else:
            cells[r["city"]] = r["rows"]
    return cells, rem


def explained_by(a: Path, where_a: str, b: Path, where_b: str) -> int:
    """People whose row count differs between ``a`` restricted by ``where_a`` and ``b`` by ``where_b``."""
    return duckdb.connect().execute(f"""
        WITH x AS (SELECT user_id, count(*) n FROM '{a}' WHERE {where_a} GROUP BY 1),
             y AS (SELECT user_id, count(*) n FROM '{b}' WHERE {where_b} GROUP BY 1)
        SELECT count(*) FROM x FULL JOIN y USING (user_id) WHERE x.n IS DISTINCT FROM y.n
    """).fetchone()[0]  # noqa: S608


BASE = {"A": list(range(60)), "B": list(range(100, 160))}


def test_an_earlier_remainder_minus_a_cell_published_later(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    day1 = write(tmp_path / "day1.parquet", {**BASE, "C": list(range(200, 208)), "D": [300, 301, 302]})
    write(src, {**BASE, "C": list(range(200, 208)), "D": [300, 301, 302]})
    cfg = load_config(config(tmp_path))
    _, rem1 = rows_of(run_report(cfg, "d1"))
    assert rem1 == 22  # C and D withheld, their remainder published (11 people)
    write(src, {**BASE, "C": list(range(200, 210)), "D": [300, 301, 302]})  # C gains two: 10 people
    cells2, _ = rows_of(run_report(cfg, "d2"))
    who = explained_by(day1, "city IN ('C', 'D')", src, "city = 'C'")
    assert who == 5  # the attack exists: remainder(d1) - C(d2) is explained by 5 people
    assert "C" not in cells2  # so C is withheld on day 2
    assert "A" in cells2 and "B" in cells2


def test_a_later_remainder_minus_an_earlier_cell(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    day1 = write(tmp_path / "day1.parquet", {**BASE, "C": list(range(200, 210)), "D": [300, 301, 302]})
    write(src, {**BASE, "C": list(range(200, 210)), "D": [300, 301, 302]})
    cfg = load_config(config(tmp_path))
    cells1, rem1 = rows_of(run_report(cfg, "d1"))
    assert "C" in cells1 and rem1 is None  # one withheld row: no remainder
    write(src, {**BASE, "C": list(range(200, 208)), "D": [300, 301, 302]})  # two of C leave: C withheld
    cells2, rem2 = rows_of(run_report(cfg, "d2"))
    who = explained_by(src, "city IN ('C', 'D')", day1, "city = 'C'")
    assert who == 5  # remainder(d2) - C(d1) would be explained by 5 people
    assert rem2 is None  # so the remainder row is not published
    assert "A" in cells2 and "B" in cells2


def test_two_remainder_rows_of_the_same_level(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    write(src, {**BASE, "C": list(range(200, 208)), "D": [300, 301, 302]})
    cfg = load_config(config(tmp_path))
    _, rem1 = rows_of(run_report(cfg, "d1"))
    assert rem1 == 22
    write(src, {**BASE, "C": list(range(200, 208)), "D": [300, 301, 302, 303]})  # one newcomer in D
    _, rem2 = rows_of(run_report(cfg, "d2"))
    assert rem2 is None  # remainder(d2) - remainder(d1) = the newcomer's rows


def test_yesterdays_complement_published_today(tmp_path: Path) -> None:
    """Day 1 publishes a grand total and withholds D (3 people) with C as its complement. Day 2 one
    buyer joins B, so the difference check withholds B (and the total); D then needs no complement
    and C would be published unchanged: total(d1) - A(d1) - B(d1) - C(d2) = D's three people."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    groups = {"A": list(range(60)), "B": list(range(100, 160)), "C": list(range(200, 250)), "D": [300, 301, 302]}
    day1 = write(tmp_path / "day1.parquet", groups)
    write(src, groups)
    cfg = load_config(write_config(tmp_path, "t.yaml", report="t", source={"path": "data/events.parquet"},
                                   identifiers=["user_id"], filter=None, dimensions=["city"],
                                   metrics=[{"name": "rows", "agg": "count"}], min_units=K, totals=[[]],
                                   history=None, budget=None))

    def published(rel) -> dict:
        return {(r["level"], r["city"]): r["rows"] for r in pq.read_table(rel.report_path).to_pylist()}

    p1 = published(run_report(cfg, "d1"))
    assert ("total", None) in p1 and ("cell", "C") not in p1 and ("cell", "D") not in p1  # C is D's complement
    write(src, {**groups, "B": groups["B"] + [999]})
    p2 = published(run_report(cfg, "d2"))
    assert ("cell", "B") not in p2  # one newcomer: withheld by the difference check
    # the attack: every number it needs is published, and D's three people explain what is left
    if ("cell", "C") in p2:
        left = p1[("total", None)] - p1[("cell", "A")] - p1[("cell", "B")] - p2[("cell", "C")]
        who = explained_by(day1, "city IN ('C', 'D')", src, "city = 'C'")
        assert not (left != 0 and 1 <= who < K), (left, who)
