"""Attacks across threshold-mode releases (issue 16): a reader holding every earlier release
subtracts a cell of one from the cell over the same people and dimension values of another.

The attacker below knows nothing of the pipeline's history: it pairs published rows of two
releases by their dimension *values* (whatever the columns are called), and for every pair whose
numbers differ, an independent truth computed here from the raw rows with plain DuckDB says how
many people account for the difference. A pair explained by 1 to k − 1 people is a leak.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline import load_config, run_report

from .conftest import write_config

K = 10


def events(path: Path, *, buyers: int = 60, orders: dict[int, int] | None = None, extra: int = 0) -> Path:
    """``buyers`` buyers in city A with two searches each; ``orders`` maps a buyer to their order
    count; ``extra`` more buyers with one search. Written as Parquet."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, city VARCHAR, event_type VARCHAR, value DOUBLE)")
    con.execute(f"INSERT INTO t SELECT i, 'A', 'search', 1 FROM range({buyers}) r(i), range(2)")
    con.execute(f"INSERT INTO t SELECT 1000 + i, 'A', 'search', 1 FROM range({extra}) r(i)")
    for user, n in (orders or {}).items():
        con.execute(f"INSERT INTO t SELECT {user}, 'A', 'order', 50 FROM range({n})")
    con.execute("INSERT INTO t SELECT 5000 + i, 'B', 'search', 1 FROM range(80) r(i)")
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    return path


def config(folder: Path, name: str, **kw) -> Path:
    base = dict(report=name.removesuffix(".yaml"), source={"path": "data/events.parquet"}, identifiers=["user_id"],
                filter=None, dimensions=["city"], metrics=[{"name": "rows", "agg": "count"}], min_units=K,
                history=None, budget=None, totals=None)
    base.update(kw)
    return write_config(folder, name, **base)


def published(release) -> list[tuple[tuple, dict]]:
    """(dimension values, numbers) of every published row, names ignored."""
    t = pq.read_table(release.report_path).to_pylist()
    out = []
    for row in t:
        dims = tuple(sorted(str(v) for k, v in row.items() if isinstance(v, str) and k != "level"))
        nums = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out.append((dims, nums))
    return out


def people_explaining(src: Path, city: str, where_a: str, where_b: str) -> int:
    """Independent truth: people of ``city`` whose rows selected by ``where_a`` and by ``where_b``
    differ in number or total value (present in one only counts too)."""
    con = duckdb.connect()
    return con.execute(f"""
        WITH a AS (SELECT user_id, count(*) n, sum(value) s FROM '{src}' WHERE city = ? AND ({where_a}) GROUP BY 1),
             b AS (SELECT user_id, count(*) n, sum(value) s FROM '{src}' WHERE city = ? AND ({where_b}) GROUP BY 1)
        SELECT count(*) FROM a FULL JOIN b USING (user_id)
        WHERE a.n IS DISTINCT FROM b.n OR a.s IS DISTINCT FROM b.s
    """, [city, city]).fetchone()[0]


def leaks(r1, r2, truth) -> list[tuple]:
    """Pairs of published rows over the same dimension values whose difference ``truth`` (city →
    people) attributes to 1 .. K-1 people."""
    found = []
    for dims1, n1 in published(r1):
        for dims2, n2 in published(r2):
            if dims1 == dims2 and dims1 and sorted(n1.values()) != sorted(n2.values()):
                who = truth(dims1[0])
                if 1 <= who < K:
                    found.append((dims1, n1, n2, who))
    return found


def test_same_people_different_contributions_searches_vs_searches_and_orders(tmp_path: Path) -> None:
    """Attack 1: 'searches' vs 'searches and orders' over the same 60 buyers; one of them ordered."""
    (tmp_path / "data").mkdir()
    src = events(tmp_path / "data" / "events.parquet", orders={7: 3})
    a = run_report(load_config(config(tmp_path, "searches.yaml", filter={"event_type": "search"})), "d1")
    b = run_report(load_config(config(tmp_path, "activity.yaml", filter={"event_type": {"in": ["search", "order"]}})), "d1")

    def truth(city: str) -> int:
        return people_explaining(src, city, "event_type = 'search'", "event_type IN ('search', 'order')")

    assert truth("A") == 1  # the attack exists in the data
    assert leaks(a, b, truth) == []
    assert "B" in {d[0][0] for d in published(b)}  # an unaffected city is still published


def test_cumulative_report_after_one_buyer_orders_once_more(tmp_path: Path) -> None:
    """Attack 1: the same report re-run after one existing buyer's activity changed (same people)."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src, orders={3: 1})
    cfg = load_config(config(tmp_path, "r.yaml", metrics=[{"name": "rows", "agg": "count"},
                                                             {"name": "value", "agg": "sum", "column": "value",
                                                              "bounds": [0, 100]}]))
    a = run_report(cfg, "day1")
    day1 = pq.read_table(src)
    events(src, orders={3: 2})
    b = run_report(cfg, "day2")
    old = tmp_path / "day1.parquet"
    pq.write_table(day1, old)

    def truth(city: str) -> int:
        con = duckdb.connect()
        return con.execute(f"""
            WITH a AS (SELECT user_id, count(*) n, sum(value) s FROM '{old}' WHERE city = ? GROUP BY 1),
                 b AS (SELECT user_id, count(*) n, sum(value) s FROM '{src}' WHERE city = ? GROUP BY 1)
            SELECT count(*) FROM a FULL JOIN b USING (user_id) WHERE a.n IS DISTINCT FROM b.n OR a.s IS DISTINCT FROM b.s
        """, [city, city]).fetchone()[0]

    assert truth("A") == 1
    assert leaks(a, b, truth) == []
    assert b.internal["cells"]["suppressed_difference"] >= 1


def test_same_cell_under_a_renamed_dimension_another_order_and_a_glob(tmp_path: Path) -> None:
    """Attack 2: day 2 (one newcomer) published under another output name, dimension order and
    source spelling must still be compared with day 1."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src)
    a = run_report(load_config(config(tmp_path, "a.yaml", dimensions=["city", "event_type"])), "d1")
    day1 = tmp_path / "day1.parquet"
    pq.write_table(pq.read_table(src), day1)
    events(src, extra=1)
    b = run_report(load_config(config(
        tmp_path, "b.yaml", source={"path": "data/*.parquet"},
        dimensions=["event_type", {"column": "city", "as": "town"}])), "d2")

    def truth(city: str) -> int:
        return duckdb.connect().execute(f"""
            SELECT count(*) FROM (SELECT DISTINCT user_id FROM '{src}' WHERE city = '{city}') b
            FULL JOIN (SELECT DISTINCT user_id FROM '{day1}' WHERE city = '{city}') a USING (user_id)
            WHERE a.user_id IS NULL OR b.user_id IS NULL""").fetchone()[0]  # noqa: S608

    assert truth("A") == 1
    assert leaks(a, b, lambda dims: truth("A" if "A" in dims else "B")) == []


def test_margin_of_one_report_against_the_plain_cell_of_another(tmp_path: Path) -> None:
    """Attack 3: a day-2 by-city margin against day 1's plain city cell."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src)
    a = run_report(load_config(config(tmp_path, "a.yaml")), "d1")
    events(src, extra=1)
    b = run_report(load_config(config(tmp_path, "b.yaml", dimensions=["city", "event_type"],
                                      totals=[["city"]])), "d2")
    rows = [(d, n) for d, n in published(b) if len(d) == 1]  # by-city margin rows: only the city is a string
    assert ("B",) in dict(rows)  # the unaffected city's margin is published
    assert ("A",) in dict(published(a))
    assert ("A",) not in dict(rows)  # day 2's A margin minus day 1's A cell = the newcomer


def test_on_by_default_without_history_or_ledger_and_off_is_recorded(tmp_path: Path) -> None:
    """Attack 4: with no `history:` and no ledger, yesterday vs today must not expose a newcomer."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src)
    cfg = load_config(config(tmp_path, "r.yaml"))
    a = run_report(cfg, "day1")
    events(src, extra=1)
    b = run_report(cfg, "day2")
    assert ("A",) in dict(published(a))
    assert ("A",) not in dict(published(b))  # A today minus A yesterday = the newcomer
    assert "history" in b.manifest["privacy"]["difference_check"]
    assert not str(b.manifest["privacy"]["difference_check"]["history"]).startswith(str(cfg.output_dir))
    off = run_report(load_config(config(tmp_path, "off.yaml", difference_check=False)), "day2")
    assert off.manifest["privacy"]["difference_check"].startswith("off (difference_check: false")


@pytest.mark.parametrize("first", [10, 2000], ids=["buyers gain searches", "newcomers with searches only"])
def test_one_corrected_value_is_not_hidden_by_others_changing_rows(tmp_path: Path, first: int) -> None:
    """Attack 1, per quantity: between two runs of the same report, twenty people of city A gain a
    search with no value (their rows change, their value sums do not) and one buyer's order value
    is corrected. The twenty are buyers already there, or newcomers: a newcomer with no value adds
    nothing to the value sum, so presence alone must not count him in its residual. Together 21
    people changed (more than k − 1), but the value sum's difference is that one buyer's
    correction. The attacker compares each published number on its own; the truth, plain SQL over
    both days' rows, counts the people whose contribution to that number differs (absent = 0)."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src, orders={3: 1})
    old = tmp_path / "day1.parquet"
    pq.write_table(pq.read_table(src), old)
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT user_id, city, event_type, CASE WHEN user_id = 3 AND event_type = 'order' THEN 57
                                                               ELSE value END AS value FROM '{old}'
                         UNION ALL SELECT {first} + i, 'A', 'search', NULL FROM range(20) r(i))
                    TO '{tmp_path / "day2.parquet"}' (FORMAT parquet)""")
    cfg = load_config(config(tmp_path, "r.yaml", metrics=[{"name": "rows", "agg": "count"},
                                                             {"name": "value", "agg": "sum", "column": "value",
                                                              "bounds": [0, 100]}],
                             history="state/history.duckdb"))
    a = run_report(cfg, "day1")
    pq.write_table(pq.read_table(tmp_path / "day2.parquet"), src)
    b = run_report(cfg, "day2")

    def changed(city: str, what: str) -> int:  # people whose contribution to one number differs
        agg = {"rows": "count(*)", "value": "coalesce(sum(value), 0)"}[what]
        return con.execute(f"""
            WITH a AS (SELECT user_id, {agg} AS x FROM '{old}' WHERE city = ? GROUP BY 1),
                 b AS (SELECT user_id, {agg} AS x FROM '{src}' WHERE city = ? GROUP BY 1)
            SELECT count(*) FROM a FULL JOIN b USING (user_id) WHERE coalesce(a.x, 0) <> coalesce(b.x, 0)
        """, [city, city]).fetchone()[0]

    assert (changed("A", "rows"), changed("A", "value")) == (20, 1)  # the attack exists
    found = []
    for dims1, n1 in published(a):
        for dims2, n2 in published(b):
            if dims1 == dims2 and dims1:
                found += [(dims1, q) for q in ("rows", "value") if n1[q] != n2[q] and 1 <= changed(dims1[0], q) < K]
    assert found == []
    assert "B" in {d[0][0] for d in published(b)}  # an unaffected city is still published


@pytest.mark.parametrize("also", ["a value sum", "nothing else", "rows, twenty buyers gaining a search"])
def test_newcomers_with_no_value_are_seen_by_a_published_count_of_people(tmp_path: Path, also: str) -> None:
    """Attack 1 on the count of people: between two runs of a report publishing buyers (and a value
    sum, or rows), five newcomers to city A have a search with no value. The value sum is unchanged
    (their contributions are 0, so its residual is nobody), but the count of buyers differs by
    those five people: it is a quantity of its own, and the cell must not be published with it —
    also when twenty buyers already there gain a search (rows differ by 25 people, the count of
    buyers still by the five)."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src)
    old = tmp_path / "day1.parquet"
    pq.write_table(pq.read_table(src), old)
    more = {"a value sum": [{"name": "value", "agg": "sum", "column": "value", "bounds": [0, 100]}],
            "nothing else": [], "rows, twenty buyers gaining a search": [{"name": "rows", "agg": "count"}]}[also]
    cfg = load_config(config(tmp_path, "r.yaml", metrics=[{"name": "buyers", "agg": "count_units"}, *more],
                             history="state/history.duckdb"))
    a = run_report(cfg, "day1")
    con = duckdb.connect()
    gain = "UNION ALL SELECT 10 + i, 'A', 'search', NULL FROM range(20) r(i)" if also.startswith("rows") else ""
    con.execute(f"COPY (SELECT * FROM '{old}' UNION ALL SELECT 3000 + i, 'A', 'search', NULL FROM range(5) r(i) {gain}) "
                f"TO '{src}' (FORMAT parquet)")
    b = run_report(cfg, "day2")
    newcomers = con.execute(f"""
        SELECT count(*) FROM (SELECT DISTINCT user_id FROM '{src}' WHERE city = 'A') n
        WHERE user_id NOT IN (SELECT user_id FROM '{old}' WHERE city = 'A')""").fetchone()[0]
    assert newcomers == 5  # the attack exists
    found = [(d1, n1["buyers"], n2["buyers"]) for d1, n1 in published(a) for d2, n2 in published(b)
             if d1 == d2 and d1 == ("A",) and n1["buyers"] != n2["buyers"]]
    assert found == []
    assert ("A",) in {d for d, _ in published(a)} and ("B",) in {d for d, _ in published(b)}


@pytest.mark.parametrize("others", ["gain value-less searches", "have no value on either day"])
def test_a_history_recorded_before_zero_digests_is_compared_on_presence(tmp_path: Path, others: str) -> None:
    """A history written before non-contributions were recorded as digest 0 (no ``digest_format``,
    no per-quantity sketches, a sum of no values hashed like any other: made here by rewriting a
    day-1 history into that form) is still read, and its releases are compared as they were then:
    twenty buyers who gain value-less searches, or who have no value on either day, do not hide
    one corrected order value against it (the value sum's residual is that one buyer). The next
    release is recorded in the new format."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src, orders={3: 1})
    old = tmp_path / "day1.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM '{src}' UNION ALL SELECT 2000 + i, 'A', 'search', NULL FROM range(20) r(i)) "
                f"TO '{old}' (FORMAT parquet)")
    pq.write_table(pq.read_table(old), src)
    cfg = load_config(config(tmp_path, "r.yaml", metrics=[{"name": "rows", "agg": "count"},
                                                             {"name": "value", "agg": "sum", "column": "value",
                                                              "bounds": [0, 100]}],
                             history="state/history.duckdb"))
    a = run_report(cfg, "day1")
    hist = duckdb.connect(str(tmp_path / "state" / "history.duckdb"))
    (names,) = hist.execute("SELECT components FROM releases").fetchone()
    s = names.index(next(n for n in names if n.startswith("sum:"))) + 1
    assert hist.execute(f"SELECT count(*) FROM cell_units WHERE ch[{s}] = 0").fetchone()[0] >= 20
    hist.execute(f"UPDATE cell_units SET ch = list_transform(range(1, len(ch) + 1), lambda k: CASE WHEN k = {s} AND ch[k] = 0 "
                 f"THEN hash(uh, ?, CAST(NULL AS DOUBLE)) ELSE ch[k] END)", [names[s - 1]])
    hist.execute("DELETE FROM cell_sketch WHERE quantity IS NOT NULL")
    hist.execute("ALTER TABLE cell_sketch DROP COLUMN quantity")
    hist.execute("ALTER TABLE releases DROP COLUMN digest_format")
    hist.close()
    more = "UNION ALL SELECT 10 + i, 'A', 'search', NULL FROM range(20) r(i)" if others.startswith("gain") else ""
    con.execute(f"""COPY (SELECT user_id, city, event_type, CASE WHEN user_id = 3 AND event_type = 'order'
                                      THEN 57 ELSE value END AS value FROM '{old}' {more})
                    TO '{src}' (FORMAT parquet)""")
    b = run_report(cfg, "day2")
    assert ("A",) in {d for d, _ in published(a)}
    assert ("A",) not in {d for d, _ in published(b)}  # its value sum differs by one buyer's correction
    assert ("B",) in {d for d, _ in published(b)}
    hist = duckdb.connect(str(tmp_path / "state" / "history.duckdb"), read_only=True)
    assert hist.execute("SELECT digest_format FROM releases ORDER BY 1 NULLS FIRST").fetchall() == [(None,), (2,)]


def test_a_value_of_zero_is_a_contribution_as_for_the_k_rule_per_number(tmp_path: Path) -> None:
    """Ten buyers of city A order on day 1, one of them for 0; on day 2 nobody orders. The value
    sum's difference (day 1's sum minus 0) is the ten people who had a value on day 1: as many as
    the k rule per number counted when day 1 published that sum from them, so day 2's cell is
    published (a stricter count, nine people with a value other than 0, would withhold it
    although the difference tells the reader only what day 1 already published)."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, city VARCHAR, event_type VARCHAR, value DOUBLE)")
    con.execute("INSERT INTO t SELECT i, 'A', 'search', NULL FROM range(30) r(i)")
    con.execute("INSERT INTO t SELECT 5000 + i, 'B', 'search', NULL FROM range(30) r(i)")
    con.execute("COPY t TO '{}' (FORMAT parquet)".format(tmp_path / "day2.parquet"))
    con.execute("INSERT INTO t SELECT i, 'A', 'order', CASE WHEN i = 0 THEN 0 ELSE 50 END FROM range(10) r(i)")
    con.execute(f"COPY t TO '{src}' (FORMAT parquet)")
    cfg = load_config(config(tmp_path, "r.yaml", metrics=[{"name": "rows", "agg": "count"},
                                                             {"name": "value", "agg": "sum", "column": "value",
                                                              "bounds": [0, 100]}],
                             history="state/history.duckdb"))
    a = dict(published(run_report(cfg, "day1")))
    assert a[("A",)]["value"] == 450  # published on day 1 from ten people with a value
    pq.write_table(pq.read_table(tmp_path / "day2.parquet"), src)
    b = dict(published(run_report(cfg, "day2")))
    assert b[("A",)]["value"] == 0 and b[("A",)]["rows"] == 30


def test_a_history_written_before_digests_is_compared_on_presence_only(tmp_path: Path) -> None:
    """The oldest history format (no quantities per release, no digests per person: made here by
    dropping them) is still read and compared by presence: one newcomer to city A between two days
    withholds A; a day with nobody new or gone publishes it again."""
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "events.parquet"
    events(src)
    cfg = load_config(config(tmp_path, "r.yaml", history="state/history.duckdb"))
    a = run_report(cfg, "day1")
    hist = duckdb.connect(str(tmp_path / "state" / "history.duckdb"))
    for table, column in (("releases", "components"), ("releases", "digest_format"), ("cell_units", "ch"),
                          ("cell_sketch", "quantity")):
        if table == "cell_sketch":
            hist.execute("DELETE FROM cell_sketch WHERE quantity IS NOT NULL")
        hist.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    hist.close()
    events(src, extra=1)  # one newcomer with one search
    b = run_report(cfg, "day2")
    assert ("A",) in {d for d, _ in published(a)}
    assert ("A",) not in {d for d, _ in published(b)} and ("B",) in {d for d, _ in published(b)}
    events(src)
    c = run_report(cfg, "day3")  # the same people as day 1 (day 2 was withheld for A)
    assert ("A",) in {d for d, _ in published(c)}
