"""Release gate source checks (identifier values, quasi-identifiers) on crafted data, real DuckDB.

These pin the semantics that the faster single-pass implementations must keep: a published value
equal to any identifier value (compared as text) refuses the release, whatever the identifier's
type; a non-canonical spelling of a number is not equal; quasi-identifier statistics are the same
whether read from the source or from the run's (cell, unit) table.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline import load_config, run_report
from pipeline.engines.duckdb.cells import cells_direct_sql, cells_from_per_unit_sql, per_unit_sql
from pipeline.engines.duckdb.connection import connect, execute
from pipeline.engines.duckdb.gate import identifier_value_hits, quasi_identifiers
from pipeline.engines.duckdb.sources import open_source
from pipeline.errors import PrivacyRefusal

from ...conftest import write_config


def _crafted(path: Path) -> Path:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT 1000 + i AS user_id, 'u' || i || '@x.in' AS email, "
        "CAST(i % 7 AS BIGINT) AS small_id, "
        "CASE WHEN i % 3 = 0 THEN 'Pune' ELSE 'Agra' END AS city, "
        "CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END AS kind, "
        "CAST(i AS VARCHAR) AS code, CAST(i % 5 AS VARCHAR) AS grp, "
        "CASE WHEN i < 15 THEN 'r' || i ELSE 'common' || (i % 5) END AS rare, "
        "i * 1.5 AS amount FROM range(600) r(i)"
    )
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()
    return path


def _cfg(tmp_path: Path, **kw):
    (tmp_path / "data").mkdir(exist_ok=True)
    _crafted(tmp_path / "data" / "c.parquet")
    base = dict(
        source={"path": "data/c.parquet"}, identifiers=["user_id", "email", "small_id"], filter=None,
        dimensions=["city", "kind"], min_units=5,
        metrics=[{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"}],
    )
    base.update(kw)
    return load_config(write_config(tmp_path, **base))


def _hits(cfg, table: pa.Table) -> list[tuple[str, str]]:
    con = connect(cfg)
    try:
        src = open_source(con, cfg)
        con.register("__gate_report", table)
        return identifier_value_hits(cfg, con, src.schema, table)
    finally:
        con.close()


def test_identifier_values_text_and_integer_identifiers(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    table = pa.table({"city": ["Pune", "u5@x.in", "1003", "0007", "6"], "kind": ["a", "b", "a", None, "b"]})
    hits = _hits(cfg, table)
    # 'u5@x.in' is an email value; '1003' a user_id; '6' a small_id; '0007' is not '7' as text
    assert hits == [("city", "email"), ("city", "small_id"), ("city", "user_id")]


def test_identifier_values_none_when_clean(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert _hits(cfg, pa.table({"city": ["Pune", "Agra"], "kind": ["a", "b"]})) == []


def test_identifier_values_compare_source_values_not_time_buckets(tmp_path: Path) -> None:
    """Week starts are computed by the pipeline: an identifier equal to one is no hit; a city still is."""
    (tmp_path / "data").mkdir()
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT i AS user_id, TIMESTAMP '2026-01-05 10:00:00' + INTERVAL (i % 20) DAY AS ts, "
        "CASE WHEN i % 2 = 0 THEN 'Pune' ELSE 'Agra' END AS city, "
        "CASE WHEN i = 0 THEN '2026-01-05' WHEN i = 1 THEN 'Agra' ELSE 'ref' || i END AS ref FROM range(400) r(i)"
    )
    con.execute(f"COPY t TO '{tmp_path / 'data' / 'w.parquet'}' (FORMAT parquet)")
    con.close()
    week = {"column": "ts", "grain": "week", "as": "week"}
    cfg = load_config(write_config(
        tmp_path, source={"path": "data/w.parquet"}, identifiers=["ref"], filter=None, min_units=5,
        dimensions=["city", week], metrics=[{"name": "rows", "agg": "count"}],
    ))
    import datetime as dt

    table = pa.table({"city": ["Pune", "Agra"], "week": [dt.date(2026, 1, 5), dt.date(2026, 1, 12)]})
    assert _hits(cfg, table) == [("city", "ref")]
    assert _hits(cfg, table.set_column(0, "city", pa.array(["Pune", "Pune"]))) == []


def test_identifier_value_in_published_dimension_refuses_release(tmp_path: Path) -> None:
    # `grp` ('0'..'4', 120 users each) holds the same text as values of `small_id`: refused
    cfg = _cfg(tmp_path, dimensions=["grp"], min_units=2, identifiers=["user_id", "small_id"])
    with pytest.raises(PrivacyRefusal, match="values of identifier column"):
        run_report(cfg, "r1", summary_html=False)
    assert not (tmp_path / "reports" / cfg.report / "r1").exists()


@pytest.mark.parametrize(
    "dims", [["city", "kind"], ["code"], ["city", {"column": "code", "as": "c2"}], ["rare", "grp"], ["city"]]
)
def test_quasi_identifiers_same_from_source_and_unit_pairs(tmp_path: Path, dims: list) -> None:
    cfg = _cfg(tmp_path, dimensions=dims, min_units=2)
    con = connect(cfg)
    try:
        src = open_source(con, cfg)
        execute(con, per_unit_sql(cfg, src.schema))
        from_source = quasi_identifiers(cfg, con, src.schema)
        from_pairs = quasi_identifiers(cfg, con, src.schema, unit_pairs="__per_unit")
        # the run's cell table (min/max unit per cell), both ways threshold mode builds it
        execute(con, cells_from_per_unit_sql(cfg))
        from_cells_pu = quasi_identifiers(cfg, con, src.schema, unit_pairs="__per_unit", cell_units="__cells")
        execute(con, cells_direct_sql(cfg, src.schema))
        from_cells = quasi_identifiers(cfg, con, src.schema, cell_units="__cells")
    finally:
        con.close()
    assert from_source == from_pairs == from_cells_pu == from_cells
    # code: one value per person; rare: 15 of its 20 values are held by a single person
    expected = {("code",): ["code"], ("rare", "grp"): ["rare"], ("city",): []}
    key = tuple(d if isinstance(d, str) else d["as"] for d in dims)
    if key in expected:
        assert from_source == expected[key]


@pytest.mark.parametrize("dims", [["city", "kind"], ["code"], ["city"], ["city", "code"]])
def test_quasi_identifiers_same_from_dp_pre_bounding_cells(tmp_path: Path, dims: list) -> None:
    """DP mode's per-cell statistics before bounding (``__dp_pre``) give the source's verdicts and
    each cell's exact distinct units, while L0 bounding drops cells: emptied cells are no candidates."""
    from pipeline.engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql

    (tmp_path / "data").mkdir()
    con0 = duckdb.connect()
    # 300 users, each with one row in each of 3 cities out of 7; `code` is one value per user
    con0.execute("CREATE TABLE t AS SELECT i AS user_id, 'c' || ((i + j * (1 + i % 3)) % 7) AS city, "
                 "CASE WHEN j = 0 THEN 'a' ELSE 'b' END AS kind, 'r' || i AS code, 1.0 AS amount "
                 "FROM range(300) r(i), range(3) s(j)")
    con0.execute(f"COPY t TO '{tmp_path / 'data' / 'm.parquet'}' (FORMAT parquet)")
    con0.close()
    privacy = {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 1, "max_rows_per_group": 1, "noise": "laplace"}
    cfg = load_config(write_config(
        tmp_path, source={"path": "data/m.parquet"}, identifiers=["user_id"], filter=None, dimensions=dims,
        min_units=2, metrics=[{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"}],
        privacy=privacy, budget={"ledger": "state/l.duckdb", "epsilon_limit": 10.0, "delta_limit": 1e-3},
    ))
    con = connect(cfg)
    try:
        src = open_source(con, cfg)
        execute(con, dp_pairs_sql(cfg, src.schema, 11, public=False))
        for q in dp_cells_sql(cfg, 12):
            execute(con, q)
        from_source = quasi_identifiers(cfg, con, src.schema)
        from_pre = quasi_identifiers(cfg, con, src.schema, unit_pairs="__dp_pairs", cell_units="__dp_pre")
        keys = ", ".join(f"__d{i}" for i in range(len(dims)))
        pre = con.execute(f"SELECT {keys}, __units, __umin, __umax FROM __dp_pre ORDER BY ALL").fetchall()
        truth = con.execute(
            f"SELECT {', '.join(dims)}, count(DISTINCT user_id), min(user_id), max(user_id) FROM __src "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        bounded = {tuple(r[:-1]): r[-1] for r in con.execute(f"SELECT {keys}, __units FROM __dp_cells").fetchall()}
    finally:
        con.close()
    assert from_pre == from_source
    assert from_source == (["code"] if "code" in dims else [])
    assert pre == truth
    assert min(bounded.values()) >= 1 and sum(bounded.values()) == 300  # each unit keeps exactly one cell
    if dims != ["code"]:  # there every unit has one cell; elsewhere three, and L0 keeps one
        assert sum(r[-3] for r in pre) == 900 and len(bounded) <= len(pre)


def test_unit_pairs_must_name_a_pipeline_table(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    con = connect(cfg)
    try:
        src = open_source(con, cfg)
        with pytest.raises(ValueError, match="must name a pipeline temp table"):
            quasi_identifiers(cfg, con, src.schema, unit_pairs="t; DROP TABLE x")
    finally:
        con.close()


@st.composite
def _qi_tables(draw: st.DrawFn) -> tuple[list[tuple], int]:
    """(unit, a, b) rows whose dimensions range from coarse to one-value-per-person, and a k."""
    n_units = draw(st.integers(1, 60))
    a_card = draw(st.integers(1, 80))
    b_card = draw(st.integers(1, 6))
    rows = []
    for u in range(n_units):
        for _ in range(draw(st.integers(1, 4))):
            a = draw(st.one_of(st.integers(0, a_card - 1), st.just(u % a_card), st.none()))
            rows.append((None if draw(st.integers(0, 25)) == 0 else u, f"a{a}" if a is not None else None,
                         f"b{draw(st.integers(0, b_card - 1))}"))
    return rows, draw(st.integers(2, 12))


@given(_qi_tables())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_quasi_identifier_verdicts_agree_on_random_tables(tmp_path_factory: pytest.TempPathFactory, data) -> None:
    """Property: the cell-table shortcut (bounds on the unit count, exact count only when the bounds
    cannot decide) gives the same verdicts as counting from the source and from the pairs."""
    rows, k = data
    folder = tmp_path_factory.mktemp("qi")
    (folder / "data").mkdir()
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, a VARCHAR, b VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    con.execute(f"COPY t TO '{folder / 'data' / 'q.parquet'}' (FORMAT parquet)")
    con.close()
    cfg = load_config(write_config(
        folder, source={"path": "data/q.parquet"}, identifiers=["user_id"], filter=None, dimensions=["a", "b"],
        min_units=k, metrics=[{"name": "units", "agg": "count_units"}]))
    con = connect(cfg)
    try:
        src = open_source(con, cfg)
        from_source = quasi_identifiers(cfg, con, src.schema)
        execute(con, per_unit_sql(cfg, src.schema))
        from_pairs = quasi_identifiers(cfg, con, src.schema, unit_pairs="__per_unit")
        execute(con, cells_direct_sql(cfg, src.schema))
        from_cells = quasi_identifiers(cfg, con, src.schema, cell_units="__cells")
    finally:
        con.close()
    assert from_source == from_pairs == from_cells


def test_recount_with_margins_matches_a_brute_force_recount(tmp_path: Path) -> None:
    """Margin rows proven by a published full-table cell skip the source scan; the rest are
    recounted. Either way the rows below min_units are exactly those a plain recount finds."""
    from pipeline.engines.duckdb.gate import recomputed_min_units

    cfg = _cfg(tmp_path, dimensions=["rare", "kind"], min_units=5, totals=[["rare"], ["kind"], []])
    rows = [  # (level, rare, kind)
        ("cell", "common0", "a"), ("cell", "r3", "b"), ("cell", "common2", "b"),
        ("by_rare", "common0", None),  # proven by its published cell
        ("by_rare", "r5", None),  # no published cell, one person: below
        ("by_rare", "common1", None),  # no published cell, many people: recounted, fine
        ("by_rare", "r3", None),  # its only published cell is itself below: recounted, below
        ("by_kind", None, "a"), ("by_kind", None, "b"), ("total", None, None),
    ]
    table = pa.table({"level": [r[0] for r in rows], "rare": [r[1] for r in rows], "kind": [r[2] for r in rows]})
    src = tmp_path / "data" / "c.parquet"
    truth = 0
    for _level, rare, kind in rows:
        cond = " AND ".join([f"rare = '{rare}'"] * (rare is not None) + [f"kind = '{kind}'"] * (kind is not None)) or "TRUE"
        n = duckdb.sql(f"SELECT count(DISTINCT user_id) FROM read_parquet('{src}') WHERE {cond}").fetchall()[0][0]
        truth += n < 5
    assert truth == 3
    con = connect(cfg)
    try:
        source = open_source(con, cfg)
        con.register("__gate_report", table)
        found = recomputed_min_units(cfg, con, source.schema, table)
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '__gate_full'").fetchall()[0][0] == 0
    finally:
        con.close()
    assert found == {"rows_below": truth, "metric_below": 0, "remainder_bad": 0, "malformed": 0}


@st.composite
def _margin_reports(draw: st.DrawFn) -> tuple[list[tuple], list[tuple], int]:
    """Source rows (user, a, b), a report of random rows at every level (keys that may hold no
    source row at all), and k."""
    n_users = draw(st.integers(1, 25))
    # v: a value most people lack (orders among searches), so a cell's mean may have few contributors
    rows = [(u, draw(st.sampled_from("pqrs")), draw(st.sampled_from("xyz")),
             draw(st.one_of(st.none(), st.none(), st.floats(0, 100))))
            for u in range(n_users) for _ in range(draw(st.integers(1, 4)))]
    levels = {"cell": (True, True), "by_a": (True, False), "by_b": (False, True), "total": (False, False)}
    report = []
    for name, (has_a, has_b) in levels.items():
        for _ in range(draw(st.integers(0, 5))):
            report.append((name, draw(st.sampled_from("pqrst")) if has_a else None,
                           draw(st.sampled_from("xyzw")) if has_b else None))
    return rows, report, draw(st.integers(2, 6))


@given(_margin_reports())
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_recount_with_margins_matches_brute_force_on_random_reports(tmp_path_factory: pytest.TempPathFactory,
                                                                    data) -> None:
    """Property: whatever rows a report holds at whatever level, the gate's recount (one shared scan,
    margin rows proven by published cells, the rest recounted) finds exactly the rows that a plain
    per-row distinct count over the source puts below k, and exactly the rows whose mean aggregates
    the values of 1 to k - 1 people."""
    from pipeline.engines.duckdb.gate import recomputed_min_units

    rows, report, k = data
    folder = tmp_path_factory.mktemp("rc")
    (folder / "data").mkdir()
    src = folder / "data" / "m.parquet"
    con = duckdb.connect()
    con.execute("CREATE TABLE t (user_id BIGINT, a VARCHAR, b VARCHAR, v DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    con.execute(f"COPY t TO '{src}' (FORMAT parquet)")
    truth = metric_truth = 0
    for _level, a, b in report:
        n, n_v = con.execute("SELECT count(DISTINCT user_id), count(DISTINCT user_id) FILTER (WHERE v IS NOT NULL) "
                             "FROM t WHERE ($1 IS NULL OR a = $1) AND ($2 IS NULL OR b = $2)", [a, b]).fetchall()[0]
        truth += n < k
        metric_truth += 0 < n_v < k
    con.close()
    cfg = load_config(write_config(folder, source={"path": "data/m.parquet"}, identifiers=["user_id"], filter=None,
                                   dimensions=["a", "b"], min_units=k, totals=[["a"], ["b"], []],
                                   metrics=[{"name": "rows", "agg": "count"},
                                            {"name": "v_mean", "agg": "mean", "column": "v", "bounds": [0, 100]}]))
    table = pa.table({"level": [r[0] for r in report], "a": [r[1] for r in report], "b": [r[2] for r in report]},
                     schema=pa.schema([("level", pa.string()), ("a", pa.string()), ("b", pa.string())]))
    gcon = connect(cfg)
    try:
        source = open_source(gcon, cfg)
        gcon.register("__gate_report", table)
        found = recomputed_min_units(cfg, gcon, source.schema, table)
    finally:
        gcon.close()
    assert found == {"rows_below": truth, "metric_below": metric_truth, "remainder_bad": 0, "malformed": 0}


_SPELLINGS = st.text(alphabet="0123456789 .-+eaA\t\r\xa0ÉéΣİß", max_size=9)


@given(published=st.lists(_SPELLINGS, min_size=1, max_size=6), source=st.lists(_SPELLINGS, min_size=1, max_size=8),
       listed=st.sampled_from([5000, 0]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(published=["Pune "], source=["pune"], listed=5000).via("the text form")
@example(published=["98 76 50 42 42"], source=["9876504242"], listed=0).via("the digits form, by a join")
@example(published=["1e1"], source=["10.0"], listed=5000).via("the number form")
@example(published=["İstanbul"], source=["İSTANBUL", "istanbul!"], listed=5000).via("case, the same length")
@example(published=["abc"], source=["\tABC\r", "abcd"], listed=5000).via("whitespace at the ends, longer")
def test_identifier_value_hits_match_the_normal_form_rule(tmp_path_factory: pytest.TempPathFactory,
                                                          monkeypatch: pytest.MonkeyPatch, published: list[str],
                                                          source: list[str], listed: int) -> None:
    """Guarantee: a published value is refused exactly when it shares a normal form (the Python rule,
    ``privacy.identifiers.normal_forms``) with a value of a text identifier column, whether the
    published forms are matched as a list of values or, beyond ``IN_LIST_MAX``, by a join, for
    spellings with case, whitespace at the ends and non-ASCII letters."""
    from pipeline.engines.duckdb import gate as gate_sql
    from pipeline.privacy.identifiers import normal_forms

    monkeypatch.setattr(gate_sql, "IN_LIST_MAX", listed)
    tmp = tmp_path_factory.mktemp("ids")
    (tmp / "data").mkdir()
    # people numbered beyond what a 9-character published value can spell: only `ref` can match
    rows = pa.table({"user_id": [10**12 + i for i in range(len(source))], "ref": source, "city": ["x"] * len(source)})
    import pyarrow.parquet as pq

    pq.write_table(rows, tmp / "data" / "c.parquet")
    cfg = load_config(write_config(tmp, source={"path": "data/c.parquet"}, identifiers=["ref"], filter=None,
                                   dimensions=["city"], min_units=2, metrics=[{"name": "rows", "agg": "count"}]))
    src_forms = set().union(*(normal_forms(v) for v in source))
    truth = [("city", "ref")] if any(normal_forms(v) & src_forms for v in published) else []
    assert _hits(cfg, pa.table({"city": published})) == truth


@given(st.text(alphabet="0123456789 .-+eEaBx_\t\n\r\x0b\x0c\xa0\u2003ÉéÄßΣİ", max_size=16))
@settings(max_examples=400, deadline=None)
@example("+-0").via("DuckDB's cast reads it as -0.0")  # found by this test in CI
@example("1_0").via("Python's float() reads it as 10")
@example(" 4242.0 ").via("an ordinary number")
@example("4242\r").via("the last field of a CRLF file (DuckDB's trim keeps a CR; Python's strip removes it)")
@example("\talice").via("a tab: DuckDB's trim keeps it")
@example("STRASSE").via("Python's casefold() made it 'strasse' = casefold('Straße'), DuckDB's lower() does not")
@example("\u2003x").via("an em space: not in WHITESPACE, kept by both")
def test_normal_forms_in_sql_match_the_rule(value: str) -> None:
    """The gate's SQL normal forms are the documented rule (``privacy.identifiers.normal_forms``):
    the same text and digit forms, and the same number where one parses."""
    from pipeline.engines.duckdb.gate import normal_forms_sql
    from pipeline.privacy.identifiers import normal_forms

    con = duckdb.connect()  # its own connection: a half-fetched result would block the default one
    [(forms,)] = con.execute(f"SELECT {normal_forms_sql('$1::VARCHAR')}", [value]).fetchall()
    con.close()

    def split(fs) -> tuple[set[str], set[float]]:  # type: ignore[no-untyped-def]
        return {f for f in fs if not f.startswith("n:")}, {float(f[2:]) for f in fs if f.startswith("n:")}

    assert split(forms) == split(normal_forms(value))


def test_time_grains_are_utc_whatever_the_machines_zone() -> None:
    """A TIMESTAMP WITH TIME ZONE at 20:00 UTC is that day's event on a machine in India too (DuckDB
    would otherwise truncate in the machine's zone and move it to the next day)."""
    import os
    import subprocess
    import sys

    code = ("from pipeline.engines.duckdb.connection import connect; "
            "print(connect().execute(\"SELECT CAST(date_trunc('day', TIMESTAMPTZ '2026-01-01 20:00:00+00') AS DATE)\")"
            ".fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TZ": "Asia/Kolkata"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "2026-01-01"
