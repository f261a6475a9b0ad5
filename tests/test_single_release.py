"""One release reveals nothing about anyone (issue 15): each class of attack on a single release.

Each test plays the reader: it holds the release (and the config, whose bounds are public) and
tries to recover one person's value or to place a release where it leaks; the pipeline must refuse
or suppress.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from .conftest import release_dirs, run_cli, write_config


def _events(path: Path, sql: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    con.close()
    return path


SIMPLE = "SELECT i AS user_id, 'c' || (i % 3) AS city, CAST(i % 50 AS DOUBLE) AS amount FROM range(600) r(i)"


def _one_line(res, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("anonymize: ")
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


# ----- state files and paths ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["history", "ledger"])
def test_state_files_inside_the_output_folder_are_refused(tmp_path: Path, key: str) -> None:
    """A history or ledger under output.dir ships its secret (and the ledger's exact counts and
    release bytes) with the releases."""
    _events(tmp_path / "data" / "e.parquet", SIMPLE)
    extra = ({"history": "reports/state/history.duckdb"} if key == "history" else {
        "privacy": {"epsilon": 1.0, "delta": 1e-6},
        "budget": {"ledger": "reports/state/ledger.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5}})
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], metrics=[{"name": "n", "agg": "count"}], min_units=5, **extra)
    for args in (["validate", cfg], ["run", cfg, "--run-id", "r1"]):
        _one_line(run_cli(*args), 2, "inside the output.dir folder", "state files hold secrets")
    assert not (tmp_path / "reports" / "state").exists() and release_dirs(tmp_path) == []


def test_a_source_glob_through_a_symlink_cannot_read_back_releases(tmp_path: Path) -> None:
    """The source glob names a symlinked folder; the output is inside the real folder: the
    release files would be read back by the glob (resolved, the paths are the same)."""
    real = tmp_path / "real"
    _events(real / "e.parquet", SIMPLE)
    os.symlink(real, tmp_path / "data")
    cfg = write_config(tmp_path, source={"path": "data/**/*.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], metrics=[{"name": "n", "agg": "count"}], min_units=5,
                       output={"dir": "real/reports"})
    _one_line(run_cli("run", cfg, "--run-id", "r1"), 2, "would match the release")
    assert not (real / "reports").exists()


# ----- counts around the table -------------------------------------------------------------------


def _numbers(obj: object, key: str = "") -> set[float]:
    """Every number a reader can pick out of a JSON document (values, recursively), except clock
    readings (timings, the creation time), which carry no count."""
    out: set[float] = set()
    if key in ("timings_s", "seconds", "created_utc") or isinstance(obj, bool):
        return out
    if isinstance(obj, int | float):
        out.add(float(obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out |= _numbers(v, str(k))
    elif isinstance(obj, list):
        for v in obj:
            out |= _numbers(v, key)
    return out


def _text_numbers(text: str) -> set[float]:
    import re

    text = re.sub(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", " ", text)  # the creation time
    return {float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}


def _everything_published(release: Path) -> set[float]:
    import json

    import pyarrow.parquet as pq

    meta = pq.ParquetFile(release / "report.parquet").schema_arrow.metadata or {}
    found = _numbers(json.loads((release / "manifest.json").read_text()))
    found |= _numbers({k.decode(): json.loads(v) for k, v in meta.items() if k == b"anonymize.provenance"})
    if (release / "summary.html").exists():
        import html as h
        import re

        page = re.sub(r"<style>.*?</style>", " ", (release / "summary.html").read_text(), flags=re.S)
        text = re.sub(r"<[^>]+>", " ", h.unescape(page))  # the text a reader sees
        found |= _text_numbers(text)
    return found


@pytest.mark.parametrize("extra", [{}, {"totals": [[]]}, {"remainder": True}])
def test_totals_of_the_withheld_part_are_not_stated(tmp_path: Path, extra: dict) -> None:
    """Three cities of 60 buyers with 3 orders each and one buyer with 13 orders in a fourth: a
    release that states the rows it read (553) lets a reader subtract the published 540 and get
    that person's 13. No number in the manifest, the Parquet provenance or the summary page may
    give the withheld part away: neither the total, nor the withheld rows, nor the withheld cells."""
    _events(tmp_path / "data" / "e.parquet", """
        SELECT c * 1000 + u AS user_id, 'city_' || c AS city, CAST(o AS DOUBLE) AS amount
        FROM range(3) t(c), range(60) s(u), range(3) r(o)
        UNION ALL SELECT 9999, 'city_9', CAST(o AS DOUBLE) FROM range(13) r(o)""")
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=50, metrics=[{"name": "orders", "agg": "count"},
                                                                    {"name": "buyers", "agg": "count_units"}], **extra)
    res = run_cli("run", cfg, "--run-id", "r1", "-q")
    assert res.exit_code == 0, res.stderr
    release = tmp_path / "reports" / "t_report" / "r1"
    numbers = _everything_published(release)
    assert 180.0 in numbers  # a published cell's orders, shown on the page: the scan sees what a reader sees
    # the person's rows; and, unless a grand total is published (then secondary suppression keeps a
    # second cell back, so total − published cells covers two cells), all rows and all people
    for secret in (13.0, *(() if "totals" in extra else (553.0, 181.0))):
        assert secret not in numbers, secret


def test_a_report_of_one_person_states_nothing_about_them(tmp_path: Path) -> None:
    """A report filtered to a one-person city publishes no rows; its manifest must not say how many
    rows that person has (it said rows_selected)."""
    _events(tmp_path / "data" / "e.parquet", """
        SELECT u AS user_id, 'big' AS city, 1.0 AS amount FROM range(200) r(u)
        UNION ALL SELECT 9999, 'lonely', CAST(o AS DOUBLE) FROM range(17) r(o)""")
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"],
                       filter={"city": ["lonely"]}, dimensions=["city"], min_units=5,
                       metrics=[{"name": "orders", "agg": "count"}])
    assert run_cli("run", cfg, "--run-id", "r1", "-q").exit_code == 0
    release = tmp_path / "reports" / "t_report" / "r1"
    import pyarrow.parquet as pq

    assert pq.read_table(release / "report.parquet").num_rows == 0
    assert 17.0 not in _everything_published(release)
    # the operator still has the exact counts, outside the release
    from pipeline import open_release

    assert open_release(release).internal["rows"]["rows_selected"] == 17
    assert not str(open_release(release).manifest["internal_counts"]).startswith(str(release.parent))


# ----- k holds for every number ------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"totals": [[]]}, {"remainder": True}])
def test_a_mean_with_one_contributor_is_not_published(tmp_path: Path, extra: dict) -> None:
    """60 people in a cell, one of whom has a value (777.25): the cell's mean and sum would be that
    person's value. Every published sum and mean aggregates at least k people with a value; the
    other cells (60 people, all with values) are published."""
    _events(tmp_path / "data" / "e.parquet", """
        SELECT c * 1000 + u AS user_id, 'city_' || c AS city,
               CASE WHEN c < 3 THEN CAST(u AS DOUBLE) WHEN u = 0 THEN 777.25 END AS amount
        FROM range(4) t(c), range(60) s(u)""")
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=10, **extra,
                       metrics=[{"name": "people", "agg": "count_units"},
                                {"name": "total", "agg": "sum", "column": "amount", "bounds": [0, 1000]},
                                {"name": "avg", "agg": "mean", "column": "amount", "bounds": [0, 1000]}])
    res = run_cli("run", cfg, "--run-id", "r1", "-q")
    assert res.exit_code == 0, res.stderr
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "reports" / "t_report" / "r1" / "report.parquet").to_pylist()
    cells = {r["city"] for r in rows if r.get("level", "cell") == "cell" and not r.get("is_remainder")}
    # (with a grand total, secondary suppression keeps a second cell back)
    assert "city_3" not in cells and len(cells & {"city_0", "city_1", "city_2"}) >= 2
    for r in rows:  # no published number equals the person's value or a sum revealing it
        assert r["total"] != pytest.approx(777.25) and r["avg"] != pytest.approx(777.25), r
    from pipeline import open_release

    assert open_release(tmp_path / "reports" / "t_report" / "r1").internal["cells"]["suppressed_k_metric"] == 1


def test_the_gate_recounts_people_with_a_value(tmp_path: Path) -> None:
    """The gate does not trust the aggregation's per-number rule: a release whose row for the city
    with one valued person was put back (hash forged to match) fails ``anonymize check``."""
    import hashlib
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    _events(tmp_path / "data" / "e.parquet", """
        SELECT c * 1000 + u AS user_id, 'city_' || c AS city,
               CASE WHEN c < 3 THEN CAST(u AS DOUBLE) WHEN u = 0 THEN 777.25 END AS amount
        FROM range(4) t(c), range(60) s(u)""")
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=10,
                       metrics=[{"name": "people", "agg": "count_units"},
                                {"name": "avg", "agg": "mean", "column": "amount", "bounds": [0, 1000]}])
    assert run_cli("run", cfg, "--run-id", "r1", "-q").exit_code == 0
    rel = tmp_path / "reports" / "t_report" / "r1"
    assert run_cli("check", rel).exit_code == 0
    table = pq.read_table(rel / "report.parquet")
    row = pa.table({"city": ["city_3"], "people": [60], "avg": [777.25]}, schema=table.schema)
    pq.write_table(pa.concat_tables([table, row]), rel / "report.parquet")
    manifest = json.loads((rel / "manifest.json").read_text())
    manifest["report_file"]["sha256"] = hashlib.sha256((rel / "report.parquet").read_bytes()).hexdigest()
    (rel / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli("check", rel)
    assert res.exit_code == 3, res.output
    assert "1 published row(s) have a sum or mean over fewer than min_units=10 people with a value" in res.stderr


@pytest.mark.parametrize(("dominance", "metrics"), [
    ({"n": 1, "max_share": 0.5}, ["people", "events"]), ({"p_percent": 10}, ["people", "events"]),
    ({"n": 1, "max_share": 0.5}, ["events"]),  # the count alone
    ({"n": 1, "max_share": 0.5}, ["people", "total"]),  # no row count published, and an even sum
])
def test_a_row_count_dominated_by_one_person_is_not_published(tmp_path: Path, dominance: dict, metrics: list) -> None:
    """60 buyers in a city, one of whom has 5,000 of its 5,059 rows: the published count is that
    person's activity to within 59. With dominance on, a count is judged like a sum; the other
    city (60 buyers, one row each) is published. A release without a row count publishes both
    cities: the sum (1 per person, on their first row) is even, and the rows are not published."""
    _events(tmp_path / "data" / "e.parquet", """
        SELECT c * 1000 + u AS user_id, 'city_' || c AS city, CASE WHEN j = 0 THEN 1.0 ELSE 0.0 END AS amount
        FROM range(2) t(c), range(60) s(u), range(5000) r(j)
        WHERE j = 0 OR (c = 1 AND u = 0)""")
    # the truth, independently: city_1's largest person holds 5000 / 5059 of its rows
    con = duckdb.connect()
    top = con.execute(f"""SELECT city, max(n) / sum(n) FROM (SELECT city, user_id, count(*) AS n
        FROM read_parquet('{tmp_path / "data" / "e.parquet"}') GROUP BY ALL) GROUP BY city ORDER BY city""").fetchall()
    con.close()
    assert top[0][1] < 0.02 and top[1][1] > 0.98
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], min_units=10, dominance=dominance,
                       metrics=[{"people": {"name": "people", "agg": "count_units"}, "events": {"name": "events", "agg": "count"},
                                 "total": {"name": "total", "agg": "sum", "column": "amount", "bounds": [0, 10]}}[n]
                                for n in metrics])
    res = run_cli("run", cfg, "--run-id", "r1", "-q")
    assert res.exit_code == 0, res.stderr
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "reports" / "t_report" / "r1" / "report.parquet").to_pylist()
    published = {"city_0": {"people": 60, "events": 60, "total": 60.0}, "city_1": {"people": 60, "events": 5059, "total": 60.0}}
    cities = ["city_0"] if "events" in metrics else ["city_0", "city_1"]
    assert rows == [{"city": c, **{n: published[c][n] for n in metrics}} for c in cities]


# ----- identifiers however they are spelled ------------------------------------------------------


@pytest.mark.parametrize(("column", "stored", "published"), [
    ("phone", "9876504242", "987-650-4242"),
    ("phone", "9876504242", "98765.04242"),
    ("phone", "9876504242", "98 76 50 42 42"),
    ("user_id", 4242, " 4242"),
    ("user_id", 4242, "04242"),
    ("user_id", 4242, "4242.0"),
    ("device_id", "dev-7f3a9c", "DEV-7F3A9C"),
    ("device_id", "dev-7f3a9c", "  dev-7f3a9c "),
    ("device_id", "dev-7f3a9c\r", "dev-7f3a9c"),  # the last field of a CRLF export (DuckDB's trim kept the CR)
    ("device_id", "dev-7f3a9c", "\tDEV-7F3A9C"),  # a tab (kept by DuckDB's trim: published before)
    ("device_id", "dev-7f3a9c", "dev-7f3a9c\u00a0"),  # a no-break space
    ("device_id", "DEV-ÉMILE", "dev-émile"),  # case beyond ASCII
])
def test_an_identifier_in_another_spelling_is_refused(tmp_path: Path, column: str, stored: object,
                                                      published: str) -> None:
    """An undeclared column carries one person's declared identifier, formatted differently, as a
    value shared by 40 people (so the k rule passes): the gate compares normal forms, not spellings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    users = list(range(4200, 4320))
    data = {"user_id": users,
            "phone": [str(9876500000 + u) for u in users],
            "device_id": [f"dev-{u:x}" for u in users],
            "contact": [published if u % 3 == 0 else "none" for u in users]}
    i = users.index(4242)
    data["phone"][i], data["device_id"][i] = "9876504242", stored if column == "device_id" else "dev-7f3a9c"
    assert data[column][i] == stored  # the identifier the published value names is in the source
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table(data), tmp_path / "data" / "s.parquet")
    cfg = write_config(tmp_path, source={"path": "data/s.parquet"}, identifiers=["user_id", "phone", "device_id"],
                       filter=None, dimensions=["contact"], min_units=10,
                       metrics=[{"name": "people", "agg": "count_units"}])
    res = run_cli("run", cfg, "--run-id", "r1")
    assert res.exit_code == 3, res.output
    assert f"contact = {column}" in res.stderr and res.stderr.count("\n") == 1
    assert release_dirs(tmp_path) == []


def test_ordinary_values_beside_identifiers_are_published(tmp_path: Path) -> None:
    """The normal forms do not make every value an identifier: short numbers and words that are no
    one's id, phone or device pass."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    users = list(range(4200, 4320))
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"user_id": users, "phone": [str(9876500000 + u) for u in users],
                             "band": [["0-10", "11-20", " 21+ "][u % 3] for u in users]}), tmp_path / "data" / "s.parquet")
    cfg = write_config(tmp_path, source={"path": "data/s.parquet"}, identifiers=["user_id", "phone"],
                       filter=None, dimensions=["band"], min_units=10,
                       metrics=[{"name": "people", "agg": "count_units"}])
    res = run_cli("run", cfg, "--run-id", "r1", "-q")
    assert res.exit_code == 0, res.stderr


# ----- DP mode: the gate reveals no more than epsilon --------------------------------------------


def test_one_person_cannot_decide_whether_a_dp_release_appears(tmp_path: Path) -> None:
    """100 buyers over 50 postcodes, and the same plus one buyer with a new postcode: an exact
    quasi-identifier rule (51 postcodes for 101 people > half) refused the second run, so the
    presence of one person was read off the exit code. In DP mode both neighbouring data sets get
    the same kind of outcome: a release (noisy, selected), never a refusal read off exact data."""
    from pipeline import open_release

    for name, extra in (("a", ""), ("b", " UNION ALL SELECT 999 AS user_id, 'p_new' AS postcode")):
        folder = tmp_path / name
        _events(folder / "data" / "e.parquet",
                f"SELECT u AS user_id, 'p_' || (u % 50) AS postcode FROM range(100) t(u){extra}")
        # independent truth: the neighbour crosses the exact rule's line, the base does not
        con = duckdb.connect()
        n_values, n_people = con.execute(f"SELECT count(DISTINCT postcode), count(DISTINCT user_id) FROM "
                                         f"read_parquet('{folder / 'data' / 'e.parquet'}')").fetchone()
        con.close()
        assert (n_values / n_people > 0.5) == (name == "b")
        cfg = write_config(folder, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                           dimensions=["postcode"], min_units=2,
                           metrics=[{"name": "people", "agg": "count_units"}],
                           privacy={"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1},
                           budget={"ledger": "state/l.duckdb", "epsilon_limit": 10, "delta_limit": 1e-3})
        res = run_cli("run", cfg, "--run-id", "r1", "-q")
        assert res.exit_code == 0, res.stderr
        checks = open_release(folder / "reports" / "t_report" / "r1").manifest["gate"]["checks"]
        assert "skipped" in checks["quasi_identifier"] and "skipped" in checks["identifier_values"]
        assert checks["patterns"]["ok"] and checks["columns"]["ok"]


# ----- what a reader knows: cells exist, have a row, sums lie within the clamp bounds -----------


def _published_and_truth(tmp_path: Path, sql: str, extra: dict, **kw):  # type: ignore[no-untyped-def]
    """Run a release over the events of ``sql`` (user_id, city, category, amount); return the
    published rows and, computed here with plain DuckDB, every non-empty cell's rows and clamped sum."""
    import pyarrow.parquet as pq

    src = _events(tmp_path / "data" / "e.parquet", sql)
    cfg = write_config(tmp_path, source={"path": "data/e.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city", "category"], min_units=5, **extra,
                       metrics=[{"name": "events", "agg": "count"},
                                {"name": "amount_total", "agg": "sum", "column": "amount", "bounds": [0, 100]}], **kw)
    res = run_cli("run", cfg, "--run-id", "r1", "-q")
    assert res.exit_code == 0, res.stderr
    published = pq.read_table(tmp_path / "reports" / "t_report" / "r1" / "report.parquet").to_pylist()
    con = duckdb.connect()
    truth = [dict(zip(("city", "category", "value", "rows"), r, strict=True)) for r in con.execute(
        f"SELECT city, category, sum(least(greatest(amount, 0), 100)), count(*) FROM read_parquet('{src}') "
        "GROUP BY ALL").fetchall()]
    con.close()
    return published, truth


# city A: five categories of 20 people with one row each (published), two of one person with one
# row at the cap (withheld by k): the city margin minus the published cells is 2 rows and 200
TWO_LEFT = """
    SELECT c * 100 + u AS user_id, 'A' AS city, 'x' || c AS category, 10.0 AS amount FROM range(5) t(c), range(20) s(u)
    UNION ALL SELECT 900 + c, 'A', 'y' || c, 100.0 FROM range(2) t(c)
    UNION ALL SELECT 1000 + u, 'B', 'x' || (u % 5), 20.0 FROM range(100) s(u)"""


def test_margin_minus_its_cells_does_not_pin_the_withheld_ones(tmp_path: Path) -> None:
    """Guarantee: with margins, every withheld count and sum keeps a feasible range at least ±10%
    of its value wide for a reader who knows that each existing cell has a row and that sums lie in
    [lo·rows, hi·rows]. The algebraic check alone published the margin: 2 rows over 2 withheld cells
    pins both at one row, and 200 over them pins both sums at the cap."""
    from .lp_check import attack, attack_sums, narrow

    published, truth = _published_and_truth(tmp_path, TWO_LEFT, {"totals": [["city"]]})  # the default
    levels = {"cell": ("city", "category"), "by_city": ("city",)}
    rows_truth = [{**t, "value": t["rows"]} for t in truth]
    counts = attack(published, rows_truth, ["city", "category"], "events", levels, floor=1.0, exact=True)
    sums = attack_sums(published, truth, ["city", "category"], "events", "amount_total", levels, 0.0, 100.0)
    assert counts and sums
    assert narrow(counts, 0.1) == [] and narrow(sums, 0.1, integer=False) == []
    assert any(r["city"] == "A" and r.get("level") == "cell" for r in published)  # still useful


def test_a_remainder_over_one_row_cells_is_withheld(tmp_path: Path) -> None:
    """50 withheld one-person cells of one row at the cap: a remainder of 50 rows and 5000 pins
    every one of them (each has at least one row). The remainder is withheld; with cells of several
    rows each (nothing pinned) it is published."""
    from .lp_check import attack, narrow

    many = """
        SELECT c * 100 + u AS user_id, 'c' || c AS city, 'k' AS category, 10.0 AS amount FROM range(3) t(c), range(60) s(u)
        UNION ALL SELECT 1000 + c, 'r' || (c // 10), 'k' || (c % 10), 100.0 FROM range(50) t(c)"""
    protected = {"remainder": True}  # protection intervals: the default
    published, truth = _published_and_truth(tmp_path / "pinned", many, protected)
    assert [r for r in published if r["is_remainder"]] == []
    thick = many.replace("FROM range(50) t(c)", "FROM range(50) t(c), range(4) s(j)")
    published, truth = _published_and_truth(tmp_path / "thick", thick, protected)
    [rem] = [r for r in published if r["is_remainder"]]
    assert rem["events"] == 200
    levels = {"cell": ("city", "category")}
    rows_truth = [{**t, "value": t["rows"]} for t in truth]
    assert narrow(attack(published, rows_truth, ["city", "category"], "events", levels, floor=1.0, exact=True), 0.1) == []


def test_protection_interval_is_configurable(tmp_path: Path) -> None:
    """protection.interval: 0 demands only that no withheld value be pinned; a wider interval
    withholds at least as much. DP mode refuses the key (it protects with noise). With
    ``protection: false`` only the algebraic check runs, and the two-rows margin pins its withheld
    cells (the reason it is the default); the manifest says which was in force."""
    import json

    from .lp_check import attack, pinned

    levels = {"cell": ("city", "category"), "by_city": ("city",)}
    published_off, truth = _published_and_truth(tmp_path / "off", TWO_LEFT, {"totals": [["city"]], "protection": False})
    rows_truth = [{**t, "value": t["rows"]} for t in truth]
    assert pinned(attack(published_off, rows_truth, ["city", "category"], "events", levels, floor=1.0))
    manifest = json.loads((tmp_path / "off" / "reports" / "t_report" / "r1" / "manifest.json").read_text())
    assert manifest["privacy"]["protection"].startswith("off")
    published_on, truth = _published_and_truth(tmp_path / "on", TWO_LEFT, {"totals": [["city"]]})
    assert not pinned(attack(published_on, rows_truth, ["city", "category"], "events", levels, floor=1.0))
    manifest = json.loads((tmp_path / "on" / "reports" / "t_report" / "r1" / "manifest.json").read_text())
    assert manifest["privacy"]["protection"]["interval"] == 0.1
    import pyarrow.parquet as pq

    def published(q: float) -> int:
        folder = tmp_path / f"q{q}"
        _published_and_truth(folder, TWO_LEFT, {"totals": [["city"]]}, protection={"interval": q})
        return pq.read_metadata(folder / "reports" / "t_report" / "r1" / "report.parquet").num_rows

    assert published(0.0) >= published(0.5) >= published(1.0)
    cfg = write_config(tmp_path, protection={"interval": 0.1}, privacy={"epsilon": 1.0},
                       budget={"ledger": "state/l.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5})
    res = run_cli("validate", cfg, "--no-source")
    assert res.exit_code == 2 and "protection" in res.stderr and "threshold-mode" in res.stderr
