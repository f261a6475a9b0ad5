"""Guarantees a careless change could break without the rest of the suite noticing (issue 20).

Each test names the guarantee it protects and attacks it against a truth computed here, written
independently of the code it checks. They were added for the mutants a round of hand-made
mutations found alive (tests/MUTATION.md lists them).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import PrivacyRefusal, load_config, run_report
from pipeline.errors import LedgerError, ReleaseError

from .conftest import run_cli, write_config


def _parquet(path: Path, sql: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    con.close()
    return path


# ----- DP: rows without a privacy unit never reach a cell ----------------------------------------


def test_dp_rows_without_a_person_add_nothing(tmp_path: Path) -> None:
    """Guarantee: rows whose privacy unit is null are dropped before bounding (they belong to no one
    who could be bounded). 2,000 cells of 40 people, each cell also holding 3 rows with a null unit:
    kept, they would add one 'unit' and three rows to every cell. Over 2,000 cells the mean deviation
    of the published counts from the truth without them is a few hundredths; kept, it is 1 and 3."""
    src = _parquet(tmp_path / "data" / "e.parquet", """
        SELECT CASE WHEN p < 40 THEN c * 100 + p END AS user_id, 'city_' || CAST(c AS VARCHAR) AS city,
               CAST(p AS DOUBLE) AS amount
        FROM range(2000) t(c), range(43) s(p)""")
    cfg = write_config(
        tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None, dimensions=["city"],
        min_units=10, metrics=[{"name": "events", "agg": "count"}, {"name": "people", "agg": "count_units"}],
        privacy={"epsilon": 4.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 3},
        budget={"ledger": "state/l.duckdb", "epsilon_limit": 100, "delta_limit": 1e-3},
    )
    rel = run_report(load_config(cfg), "n1")
    con = duckdb.connect()
    con.register("pub", pq.read_table(rel.report_path))
    truth = (f"SELECT city, count(*) AS rows, count(DISTINCT user_id) AS people FROM read_parquet('{src}') "
             "WHERE user_id IS NOT NULL GROUP BY city")
    n, d_rows, d_people = con.execute(
        f"SELECT count(*), avg(p.events - t.rows), avg(p.people - t.people) FROM pub p JOIN ({truth}) t USING (city)"
    ).fetchall()[0]
    assert n > 1900
    assert abs(d_people) < 0.25 and abs(d_rows) < 0.75, (d_people, d_rows)


def test_dp_min_units_above_the_selection_threshold_withholds_smaller_noisy_counts(tmp_path: Path) -> None:
    """Guarantee: a DP cell is published only when its noisy unit count reaches both the selection
    threshold and min_units. Here min_units (500) is far above the threshold: no published cell
    shows fewer than 500 people, and the cells of 600+ people are published."""
    _parquet(tmp_path / "data" / "e.parquet", """
        SELECT c * 10000 + p AS user_id, 'city_' || CAST(c AS VARCHAR) AS city
        FROM range(40) t(c), range(1000) s(p) WHERE p < 420 + 10 * c""")
    cfg = write_config(
        tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None, dimensions=["city"],
        min_units=500, metrics=[{"name": "people", "agg": "count_units"}],
        privacy={"epsilon": 2.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1},
        budget={"ledger": "state/l.duckdb", "epsilon_limit": 100, "delta_limit": 1e-3},
    )
    rows = pq.read_table(run_report(load_config(cfg), "m1").report_path).to_pylist()
    assert rows and min(r["people"] for r in rows) >= 500
    published = {r["city"] for r in rows}
    assert {f"city_{c}" for c in range(20, 40)} <= published  # 620+ people, noise of a few units
    assert not published & {f"city_{c}" for c in range(0, 5)}  # 420-460 people: never near 500


# ----- threshold mode: dominance with n > 1 and the p% rule --------------------------------------


def _person_totals_sql(src: Path) -> str:
    return f"SELECT city, user_id, CAST(sum(least(greatest(amount, 0), 1000)) AS DOUBLE) AS x FROM read_parquet('{src}') GROUP BY ALL"


def test_dominance_top_two_share(tmp_path: Path) -> None:
    """Guarantee: with dominance {n: 2, max_share: 0.6} a sum cell whose two largest contributors hold
    more than 60% of it is withheld, even when the largest alone holds less. Truth: per-person clamped
    totals ranked here."""
    src = _parquet(tmp_path / "data" / "e.parquet", """
        SELECT * FROM (VALUES
          ('two_big', 1, 40.0), ('two_big', 2, 40.0), ('two_big', 3, 2.5), ('two_big', 4, 2.5), ('two_big', 5, 2.5),
          ('two_big', 6, 2.5), ('two_big', 7, 2.5), ('two_big', 8, 2.5), ('two_big', 9, 2.5), ('two_big', 10, 2.5),
          ('even', 11, 10.0), ('even', 12, 10.0), ('even', 13, 10.0), ('even', 14, 10.0), ('even', 15, 10.0),
          ('even', 16, 10.0), ('even', 17, 10.0), ('even', 18, 10.0), ('even', 19, 10.0), ('even', 20, 10.0),
          ('one_big', 21, 55.0), ('one_big', 22, 8.0), ('one_big', 23, 4.625), ('one_big', 24, 4.625),
          ('one_big', 25, 4.625), ('one_big', 26, 4.625), ('one_big', 27, 4.625), ('one_big', 28, 4.625),
          ('one_big', 29, 4.625), ('one_big', 30, 4.625)
        ) t(city, user_id, amount)""")
    metrics = [{"name": "people", "agg": "count_units"}, {"name": "total", "agg": "sum", "column": "amount", "bounds": [0, 1000]}]
    con = duckdb.connect()
    top2 = dict(con.execute(
        f"SELECT city, (list_sum(max(x, 2)) / sum(x)) FROM ({_person_totals_sql(src)}) GROUP BY city").fetchall())
    expected = {c for c, share in top2.items() if share <= 0.6}
    assert expected == {"even"}  # top-2 shares: two_big 0.8, one_big 0.63, even 0.2
    for n, want in ((2, expected), (1, {"even", "two_big", "one_big"})):  # top-1 shares: 0.4, 0.55, 0.1
        cfg = write_config(tmp_path, f"d{n}.yaml", source={"path": "data/e.parquet"}, identifiers=["user_id"],
                           filter=None, dimensions=["city"], min_units=5, metrics=metrics,
                           dominance={"n": n, "max_share": 0.6}, report=f"dom{n}")
        rel = run_report(load_config(cfg), "r1")
        assert set(rel.table["city"]) == want, (n, set(rel.table["city"]))
        assert rel.internal["cells"].get("suppressed_dominance", 0) == 3 - len(want)


def test_dominance_p_percent_rule(tmp_path: Path) -> None:
    """Guarantee (p% rule, p = 10): a cell is withheld when the total minus its two largest
    contributions is below 10% of the largest (the second largest could then estimate the largest
    to within 10%). Truth computed here from per-person totals."""
    src = _parquet(tmp_path / "data" / "e.parquet", """
        SELECT city, city || CAST(i AS VARCHAR) AS user_id, amount FROM (VALUES
          ('tight', 0, 100.0), ('tight', 1, 50.0), ('tight', 2, 2.0), ('tight', 3, 2.0), ('tight', 4, 1.0),
          ('loose', 0, 100.0), ('loose', 1, 50.0), ('loose', 2, 8.0), ('loose', 3, 6.0), ('loose', 4, 6.0),
          ('edge', 0, 100.0), ('edge', 1, 90.0), ('edge', 2, 4.0), ('edge', 3, 3.0), ('edge', 4, 2.9),
          ('closer', 0, 100.0), ('closer', 1, 90.0), ('closer', 2, 4.0), ('closer', 3, 3.0), ('closer', 4, 2.95)
        ) t(city, i, amount)""")
    con = duckdb.connect()
    rows = con.execute(f"SELECT city, list_sort(list(x), 'DESC') FROM ({_person_totals_sql(src)}) GROUP BY city").fetchall()
    sensitive = {c for c, xs in rows if sum(xs) - xs[0] - xs[1] < 0.10 * xs[0]}
    assert sensitive == {"tight", "edge", "closer"}  # 5 < 10, 20 >= 10, 9.9 < 10, 9.95 < 10 (p exactly 10%)
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=5, dominance={"p_percent": 10},
                       metrics=[{"name": "total", "agg": "sum", "column": "amount", "bounds": [0, 1000]}])
    rel = run_report(load_config(cfg), "p1")
    assert set(rel.table["city"]) == {c for c, _ in rows} - sensitive


def test_dominance_judges_a_published_mean(tmp_path: Path) -> None:
    """Guarantee: a mean is a sum divided by a published count, so dominance judges it like a sum: a
    cell where one person holds more than max_share of the mean's absolute total is withheld even
    when no sum is published. Truth: per-person clamped totals."""
    src = _parquet(tmp_path / "data" / "e.parquet", """
        SELECT city, user_id, amount FROM (
          SELECT 'one_big' AS city, i AS user_id, CASE WHEN i = 0 THEN 900.0 ELSE 10.0 END AS amount FROM range(10) r(i)
          UNION ALL SELECT 'even', 100 + i, 10.0 FROM range(10) r(i))""")
    con = duckdb.connect()
    top = dict(con.execute(f"SELECT city, max(x) / sum(x) FROM ({_person_totals_sql(src)}) GROUP BY city").fetchall())
    con.close()
    assert top["one_big"] > 0.9 and top["even"] == pytest.approx(0.1)
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=5, dominance={"n": 1, "max_share": 0.5},
                       metrics=[{"name": "people", "agg": "count_units"},
                                {"name": "avg", "agg": "mean", "column": "amount", "bounds": [0, 1000]}])
    rel = run_report(load_config(cfg), "m1")
    assert list(rel.table["city"]) == ["even"]
    assert rel.internal["cells"]["suppressed_dominance"] == 1


# ----- difference check: the whole window 1 .. k-1 -----------------------------------------------


@pytest.mark.parametrize(("added", "withheld"), [(1, True), (9, True), (10, False), (11, False)])
def test_difference_window_ends_at_k_minus_one(tmp_path: Path, added: int, withheld: bool) -> None:
    """Guarantee: a cell whose population differs from an earlier published cell with the same
    dimension values by 1 to k-1 people (k = 10) is withheld; by k or more it is published."""
    src = tmp_path / "data" / "e.parquet"

    def day(extra: int) -> None:
        _parquet(src, f"SELECT 'pumps' AS category, i AS user_id FROM range({30 + extra}) r(i) "
                      "UNION ALL SELECT 'tiles', 1000 + i FROM range(50) r(i)")

    cfg = load_config(write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                                   dimensions=["category"], metrics=[{"name": "n", "agg": "count_units"}],
                                   min_units=10, history="state/history.duckdb"))
    day(0)
    assert sorted(run_report(cfg, "d1").table["category"]) == ["pumps", "tiles"]
    day(added)
    second = set(run_report(cfg, "d2").table["category"])
    assert ("pumps" not in second) == withheld and "tiles" in second


# ----- release gate ------------------------------------------------------------------------------


def test_gate_compares_dimension_values_with_the_privacy_unit_even_when_not_listed(tmp_path: Path) -> None:
    """Guarantee: the identifier-value check always includes the privacy unit, whether or not the
    config lists it in `identifiers`. A 'referrer' dimension carrying other people's user ids is
    refused with identifiers: [] ."""
    _parquet(tmp_path / "data" / "e.parquet", """
        SELECT 'u' || CAST(i AS VARCHAR) AS user_id, 'u' || CAST(i % 3 AS VARCHAR) AS referrer
        FROM range(300) r(i)""")
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=[], filter=None,
                       dimensions=["referrer"], min_units=5, metrics=[{"name": "n", "agg": "count"}])
    r = run_cli("run", cfg, "--run-id", "r1")
    assert r.exit_code == 3 and "identifier column(s) in the source (referrer = user_id)" in r.stderr
    assert not (tmp_path / "reports" / "t_report" / "r1").exists()


@pytest.mark.parametrize("value", ["call bob.smith@example.com today", "ring +91 98765 43210 (sales)",
                                   "from 10.0.12.7 via proxy"])
def test_gate_finds_identifiers_inside_longer_text(tmp_path: Path, value: str) -> None:
    """Guarantee: the gate's pattern check searches inside values (a value that merely *contains* an
    e-mail, phone or IP address is refused), the same way the documented patterns read."""
    from pipeline.privacy.identifiers import is_identifier_like

    assert is_identifier_like(value)  # the documented patterns find it...
    _parquet(tmp_path / "data" / "e.parquet", f"""
        SELECT i AS user_id, CASE WHEN i % 2 = 0 THEN '{value}' ELSE 'plain' END AS note FROM range(200) r(i)""")
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["note"], min_units=5, metrics=[{"name": "n", "agg": "count"}])
    r = run_cli("run", cfg, "--run-id", "r1")  # ...and so does the gate, in SQL, on the written report
    assert r.exit_code == 3 and "look like identifiers" in r.stderr, r.stderr


def test_gate_refuses_a_remainder_of_one_withheld_row(tmp_path: Path) -> None:
    """Guarantee: a remainder row must aggregate at least two withheld rows (one withheld row
    published as a 'remainder' is that row). The report below publishes cells A and B and a
    remainder covering the single other cell C, which has enough people: only the two-row rule
    can refuse it."""
    from pipeline.engines.duckdb.connection import connect
    from pipeline.engines.duckdb.sources import open_source
    from pipeline.flows.gate import run_gate
    from pipeline.releases.store import parquet_bytes

    _parquet(tmp_path / "data" / "e.parquet", """
        SELECT c.city, c.city || CAST(i AS VARCHAR) AS user_id FROM (VALUES ('A'), ('B'), ('C')) c(city), range(20) r(i)""")
    cfg = load_config(write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                                   dimensions=["city"], min_units=5, remainder=True,
                                   metrics=[{"name": "people", "agg": "count_units"}]))

    def report(cities: list[str | None]) -> bytes:
        table = pa.table({"level": ["cell"] * len(cities), "is_remainder": [c is None for c in cities],
                          "city": cities, "people": [20] * len(cities)})
        return parquet_bytes(table, {})

    con = connect(cfg)
    try:
        source = open_source(con, cfg)
        ok = run_gate(cfg, report(["A", "B", "C"]), con=con, source=source)  # no remainder: fine
        assert ok["passed"]
        with pytest.raises(PrivacyRefusal, match="remainder row"):
            run_gate(cfg, report(["A", "B", None]), con=con, source=source)
        assert run_gate(cfg, report(["A", None]), con=con, source=source)["passed"]  # B and C: two rows
    finally:
        con.close()


# ----- ledger and reruns ------------------------------------------------------------------------


def _dp_cfg(tmp_path: Path, ledger: str = "state/l.duckdb") -> Path:
    if not (tmp_path / "data" / "e.parquet").exists():
        _parquet(tmp_path / "data" / "e.parquet", "SELECT i AS user_id, 'c' || (i % 3) AS city FROM range(3000) r(i)")
    return write_config(tmp_path, f"{Path(ledger).stem}.yaml", source={"path": "data/e.parquet"}, identifiers=["user_id"],
                        filter=None, dimensions=["city"], min_units=5, metrics=[{"name": "n", "agg": "count"}],
                        privacy={"epsilon": 1.0, "delta": 1e-6},
                        budget={"ledger": ledger, "epsilon_limit": 10, "delta_limit": 1e-4})


def test_dp_rerun_compares_the_visible_release_with_the_ledger(tmp_path: Path) -> None:
    """Guarantee: rerunning a recorded run id confirms the visible release against the ledger's
    record; a report edited after publication is refused, never confirmed as 'unchanged'."""
    cfg = load_config(_dp_cfg(tmp_path))
    rel = run_report(cfg, "r1")
    table = pq.read_table(rel.report_path)
    edited = table.set_column(table.column_names.index("n"), "n", pa.array([1] * table.num_rows, pa.int64()))
    buf = io.BytesIO()
    pq.write_table(edited, buf)
    rel.report_path.write_bytes(buf.getvalue())
    with pytest.raises(ReleaseError, match="does not match the ledger's record"):
        run_report(cfg, "r1")
    # restored bytes are the recorded ones: remove the edited folder and rerun
    shutil.rmtree(rel.path)
    again = run_report(cfg, "r1")
    assert again.status == "restored"
    assert json.loads((again.path / "manifest.json").read_text())["report_file"]["sha256"] == rel.manifest["report_file"]["sha256"]


def test_ledger_splice_from_another_chain_with_the_same_secret_is_detected(tmp_path: Path) -> None:
    """Guarantee: entries form a chain (each names its predecessor's hash). Two ledgers sharing a
    secret (a copied state folder) both hold validly MAC'd entries; replacing ledger A's first
    entry by B's keeps every MAC and A's head record valid, and only the chain shows the splice."""
    from pipeline.state.ledger import Ledger

    cfg_a = load_config(_dp_cfg(tmp_path, "state/a.duckdb"))
    run_report(cfg_a, "a1")
    shared = tmp_path / "state" / "b.duckdb.secret"
    shared.write_bytes((tmp_path / "state" / "a.duckdb.secret").read_bytes()[:32])  # the key, not A's state record
    shared.chmod(0o600)
    cfg_b = load_config(_dp_cfg(tmp_path, "state/b.duckdb"))
    run_report(cfg_b, "b1")
    run_report(cfg_a, "a2")
    a, b = Ledger(tmp_path / "state" / "a.duckdb"), Ledger(tmp_path / "state" / "b.duckdb")
    assert a.verify() == 2 and b.verify() == 1
    con = duckdb.connect(str(tmp_path / "state" / "a.duckdb"))
    con.execute(f"ATTACH '{tmp_path / 'state' / 'b.duckdb'}' AS b (READ_ONLY)")
    con.execute("DELETE FROM entries WHERE seq = 1")
    con.execute("INSERT INTO entries SELECT * FROM b.entries WHERE seq = 1")
    con.close()
    with pytest.raises(LedgerError, match="chain broken"):
        Ledger(tmp_path / "state" / "a.duckdb").verify()
    r = run_cli("run", _dp_cfg(tmp_path, "state/a.duckdb"), "--run-id", "a3")
    assert r.exit_code == 3 and "tampered" in r.stderr
