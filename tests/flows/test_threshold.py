"""Threshold mode end to end: guarantees checked against an independent DuckDB computation."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import load_config, open_release, run_report
from pipeline.errors import ConfigError, SourceError

from ..conftest import SAMPLES, release_dirs, run_cli, write_config

IDENTIFIER_COLUMNS = ["user_id", "email", "phone", "ip_address", "device_id"]


def independent_cells(src: Path, min_units: int) -> pd.DataFrame:
    """Truth, written by hand without the pipeline: cells with >= min_units distinct users, and whose
    order values (if any) come from >= min_units distinct users (the k rule holds for every number)."""
    return duckdb.sql(
        f"""
        SELECT city, category, CAST(date_trunc('month', event_time) AS DATE) AS month,
               count(*) AS events, count(DISTINCT user_id) AS buyers,
               sum(least(100000, greatest(0, order_value))) AS total
        FROM read_parquet('{src}') WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL
        GROUP BY ALL HAVING count(DISTINCT user_id) >= {min_units}
           AND count(DISTINCT user_id) FILTER (WHERE order_value IS NOT NULL) NOT BETWEEN 1 AND {min_units} - 1
        """
    ).df()


def test_threshold_release_matches_independent_truth(project: Path) -> None:
    cfg = load_config(write_config(project))
    rel = run_report(cfg, "r1")
    assert rel.status == "published"
    table = rel.table
    # only declared columns, never an identifier
    assert list(table.columns) == ["city", "category", "month", "events", "buyers", "order_value_total", "order_value_avg"]
    assert not set(IDENTIFIER_COLUMNS) & set(table.columns)
    truth = independent_cells(project / "data" / "events.parquet", 10)
    assert len(table) == len(truth) > 0
    con = duckdb.connect()
    con.register("pub", pq.read_table(rel.report_path))
    con.register("truth", truth)
    mismatches = con.execute(
        """SELECT count(*) FROM pub FULL OUTER JOIN truth USING (city, category, month)
           WHERE pub.buyers IS DISTINCT FROM truth.buyers OR pub.events IS DISTINCT FROM truth.events
              OR abs(pub.order_value_total - coalesce(truth.total, 0)) > 1e-6
              OR pub.buyers IS NULL OR truth.buyers IS NULL"""
    ).fetchone()[0]
    assert mismatches == 0
    assert int(table["buyers"].min()) >= 10
    m = rel.manifest
    assert m["cells"]["cells_published"] == len(truth)
    exact = rel.internal["cells"]  # the operator's copy; the release states no withheld count
    assert exact["cells_computed"] == exact["cells_published"] + exact["cells_suppressed"]
    assert set(m["cells"]) == {"cells_published", "withheld"} and set(m["rows"]) == {"withheld"}
    assert m["report_file"]["sha256"] == __import__("hashlib").sha256(rel.report_path.read_bytes()).hexdigest()
    meta = json.loads(pq.read_schema(rel.report_path).metadata[b"anonymize.provenance"])
    assert meta["config_hash"] == m["config_hash"] and meta["cells"] == m["cells"]
    assert m["gate"]["passed"] is True


def test_one_column_under_two_bounds_is_refused(project: Path) -> None:
    """Two clamps of one column publish how much of it lies between them: with bounds 1,000 and
    1,001 the difference of the sums is the number of rows above 1,000, and against 100,000 the
    largest contribution exactly (issue 15). Such configs are refused; equal bounds share."""
    metrics = [
        {"name": "units", "agg": "count_units"},
        {"name": "small_total", "agg": "sum", "column": "order_value", "bounds": [0, 1000]},
        {"name": "big_total", "agg": "sum", "column": "order_value", "bounds": [0, 1001]},
    ]
    with pytest.raises(ConfigError, match=r"metrics\[2\]\.bounds: .*clamps order_value to \[0.0, 1001.0\], but metrics\[1\]"):
        load_config(write_config(project, metrics=metrics))
    metrics[2]["bounds"] = [0, 1000]
    metrics.append({"name": "avg", "agg": "mean", "column": "order_value", "bounds": [0, 1000]})
    assert load_config(write_config(project, metrics=metrics)).metrics[3].bounds == (0, 1000)


@pytest.mark.parametrize("totals", [None, [[]]])
def test_metrics_sharing_a_column_match_independent_truth(project: Path, totals) -> None:
    """Metrics over one column and bounds share one clamped value column; each still equals a plain
    GROUP BY. (DuckDB's greatest/least skip NULLs, so the truth filters them out of the means.)"""
    metrics = [
        {"name": "units", "agg": "count_units"},
        {"name": "total", "agg": "sum", "column": "order_value", "bounds": [0, 100]},
        {"name": "avg", "agg": "mean", "column": "order_value", "bounds": [0, 100]},
        {"name": "events", "agg": "count"},
    ]
    cfg = load_config(write_config(project, metrics=metrics, totals=totals))
    table = run_report(cfg, "r1", summary_html=False).table
    if totals:
        table = table[table["level"] == "cell"]
    src = project / "data" / "events.parquet"
    truth = duckdb.sql(
        f"""SELECT city, category, CAST(date_trunc('month', event_time) AS DATE) AS month,
               sum(least(100, greatest(0, order_value))) AS st,
               avg(least(100, greatest(0, order_value))) FILTER (WHERE order_value IS NOT NULL) AS sa, count(*) AS n
        FROM read_parquet('{src}') WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL
        GROUP BY ALL HAVING count(DISTINCT user_id) >= 10
           AND count(DISTINCT user_id) FILTER (WHERE order_value IS NOT NULL) NOT BETWEEN 1 AND 9"""
    ).df()
    table["month"] = pd.to_datetime(table["month"].astype(str))
    truth["month"] = pd.to_datetime(truth["month"])
    merged = table.merge(truth, on=["city", "category", "month"], how="inner")
    assert len(merged) == len(table) == len(truth) > 0
    for ours, theirs in [("total", "st"), ("avg", "sa"), ("events", "n")]:
        assert (merged[ours] - merged[theirs].fillna(0 if ours == "total" else float("nan"))).abs().max() < 1e-6, ours


@pytest.mark.parametrize("dominance", [None, {"n": 2, "max_share": 0.99}])
def test_margin_cells_match_independent_truth(project: Path, dominance) -> None:
    """Every computed cell of every level (published or not) equals a plain DuckDB GROUP BY: with
    dominance the margins regroup per unit, without it they add up the full-table cells."""
    from pipeline.engines.duckdb.cells import cells_from_per_unit_sql, per_unit_sql
    from pipeline.engines.duckdb.connection import connect, execute
    from pipeline.engines.duckdb.sources import open_source

    cfg = load_config(write_config(project, totals=[[], ["city"], ["category"]], dominance=dominance))
    src = project / "data" / "events.parquet"
    con = connect(cfg)
    try:
        source = open_source(con, cfg)
        execute(con, per_unit_sql(cfg, source.schema))
        execute(con, cells_from_per_unit_sql(cfg, dominance_n=cfg.dominance.n if cfg.dominance else 0))
        ours = con.execute(
            "SELECT __level, __d0, __d1, __d2, __units, __rows, CAST(__s2 AS DOUBLE), __c2, CAST(__s3 AS DOUBLE), __c3 "
            "FROM __cells"
        ).fetchall()
    finally:
        con.close()
    truth = duckdb.sql(
        f"""SELECT CASE WHEN GROUPING(city, category, month) = 0 THEN 0 WHEN GROUPING(city) = 1 AND GROUPING(category) = 1 THEN 1
                    WHEN GROUPING(city) = 0 THEN 2 ELSE 3 END AS lv, city, category, month,
               count(DISTINCT user_id), count(*), sum(least(100000, greatest(0, order_value))) FILTER (WHERE order_value IS NOT NULL),
               count(order_value)
        FROM (SELECT *, CAST(date_trunc('month', event_time) AS DATE) AS month FROM read_parquet('{src}'))
        WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL
        GROUP BY GROUPING SETS ((city, category, month), (), (city), (category))"""
    ).fetchall()
    def key(r):
        return tuple("" if v is None else str(v) for v in r[:4])
    want = {key(r): r[4:] for r in truth}
    got = {key(r): r[4:] for r in ours}
    assert set(got) == set(want) and len(got) == len(ours) and {r[0] for r in ours} == {0, 1, 2, 3}
    for k, (units, rows, s2, c2, s3, c3) in got.items():
        t_units, t_rows, t_sum, t_cnt = want[k]
        assert (units, rows, c2, c3) == (t_units, t_rows, t_cnt, t_cnt), k
        assert abs((s2 or 0) - (t_sum or 0)) < 1e-6 and abs((s3 or 0) - (t_sum or 0)) < 1e-6, k


def _crafted_source(path: Path) -> Path:
    """Cell A has exactly k-1 = 4 users, cell B exactly k = 5 users, one heavy user has 5000 rows in C."""
    rows = []
    for u in range(4):
        rows.append(("A", u, 10.0, f"a{u}@x.com"))
    for u in range(10, 15):
        rows.append(("B", u, 20.0, f"b{u}@x.com"))
    rows += [("C", 99, 1e9, "heavy@x.com")] * 5000  # one heavy user with a huge outlier value
    for u in range(100, 104):
        rows.append(("C", u, 1.0, f"c{u}@x.com"))
    con = duckdb.connect()
    con.execute("CREATE TABLE t (city VARCHAR, user_id BIGINT, amount DOUBLE, email VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    return path


def test_exact_threshold_boundary_and_heavy_user(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _crafted_source(tmp_path / "data" / "crafted.parquet")
    cfg = write_config(
        tmp_path, source={"path": "data/crafted.parquet"}, identifiers=["user_id", "email"], filter=None,
        dimensions=["city"], min_units=5,
        metrics=[{"name": "rows", "agg": "count"}, {"name": "units", "agg": "count_units"},
                 {"name": "amount", "agg": "sum", "column": "amount", "bounds": [0, 100]}],
    )
    rel = run_report(load_config(cfg), "x")
    t = rel.table.set_index("city")
    assert "A" not in t.index  # 4 users < 5: suppressed
    assert int(t.loc["B", "units"]) == 5  # exactly k: published
    # the heavy user counts once among units, and its outlier value is clamped to 100 per row
    assert int(t.loc["C", "units"]) == 5 and int(t.loc["C", "rows"]) == 5004
    assert float(t.loc["C", "amount"]) == pytest.approx(5000 * 100 + 4 * 1.0)
    assert rel.internal["cells"]["suppressed_k"] == 1


def test_null_units_dropped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT 'X' AS city, CASE WHEN i < 7 THEN NULL ELSE i END AS user_id FROM range(30) r(i)")
    con.execute(f"COPY t TO '{tmp_path / 'data' / 'n.parquet'}' (FORMAT parquet)")
    cfg = write_config(tmp_path, source={"path": "data/n.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["city"], metrics=[{"name": "n", "agg": "count"}], min_units=5)
    rel = run_report(load_config(cfg), "x")
    assert rel.internal["rows"]["rows_dropped_null_unit"] == 7
    assert int(rel.table["n"].iloc[0]) == 23


def test_rerun_is_byte_identical_and_never_overwrites(project: Path) -> None:
    cfg = load_config(write_config(project))
    a = run_report(cfg, "same")
    first = a.report_path.read_bytes()
    b = run_report(cfg, "same")
    assert b.status == "unchanged"
    assert b.report_path.read_bytes() == first
    # a fresh output folder, same run id: byte-identical again (determinism, not a cached copy)
    c = run_report(cfg, "same", output_dir=project / "other")
    assert c.report_path.read_bytes() == first
    # a different config under the same run id is refused, the release is untouched
    res = run_cli("run", write_config(project, min_units=11), "--run-id", "same")
    assert res.exit_code == 1 and "already published" in res.stderr
    assert a.report_path.read_bytes() == first


def test_failed_run_leaves_nothing(project: Path) -> None:
    cfg = write_config(project, source={"path": "data/missing.parquet"})
    res = run_cli("run", cfg, "--run-id", "r")
    assert res.exit_code == 1 and "not found" in res.stderr
    assert release_dirs(project) == []
    assert not list(project.rglob(".staging-*"))


def test_cli_run_and_explain(project: Path) -> None:
    cfg = write_config(project)
    res = run_cli("run", cfg, "--run-id", "2026-11-23")
    assert res.exit_code == 0, res.stderr
    path = project / "reports" / "t_report" / "2026-11-23"
    assert (path / "report.parquet").is_file() and (path / "manifest.json").is_file()
    assert (path / "summary.html").is_file()
    res = run_cli("explain", path)
    assert res.exit_code == 0 and "threshold mode" in res.output
    assert open_release(path).manifest["run_id"] == "2026-11-23"
    assert run_cli("run", cfg, "--run-id", "../x").exit_code == 2


def test_bad_timestamps_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "e.csv").write_text("user_id,city,t\n1,A,2026-01-01\n2,A,not a date\n")
    cfg = write_config(tmp_path, source={"path": "data/e.csv"}, identifiers=["user_id"], filter=None,
                       dimensions=["city", {"column": "t", "grain": "month"}],
                       metrics=[{"name": "n", "agg": "count"}], min_units=2)
    with pytest.raises(SourceError, match="do not parse as timestamps"):
        run_report(load_config(cfg), "x")


@pytest.mark.parametrize("name", ["online_retail_country_month", "adult_census_occupation"])
def test_real_datasets_publish_with_min_units(name: str, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / f"{name}.yaml")
    rel = run_report(cfg, "t", output_dir=tmp_path)
    t = rel.table
    assert len(t) > 0
    # independent check: recompute distinct units for every published row from the raw file
    src = SAMPLES / ("online_retail_sample.parquet" if name.startswith("online") else "adult_census.parquet")
    con = duckdb.connect()
    con.register("pub", pq.read_table(rel.report_path))
    dims = [d for d in cfg.dims]
    keys = []
    for d in dims:
        col = f'"{d.column}"'
        keys.append(f"CAST(date_trunc('{d.grain}', {col}) AS DATE)" if d.grain else col)
    unit = f'"{cfg.privacy_unit}"'
    where = "Quantity >= 1" if name.startswith("online") else "TRUE"
    conds = " AND ".join(f"(p.{d.name} IS NULL OR p.{d.name} = s.k{i})" for i, d in enumerate(dims))
    sql = f"""
        SELECT min(n) FROM (
          SELECT p.rid, count(DISTINCT s.u) AS n
          FROM (SELECT row_number() OVER () AS rid, * FROM pub) p
          JOIN (SELECT {unit} AS u, {', '.join(f'{k} AS k{i}' for i, k in enumerate(keys))}
                FROM read_parquet('{src}') WHERE {where} AND {unit} IS NOT NULL) s ON {conds}
          GROUP BY p.rid)
    """
    assert con.execute(sql).fetchone()[0] >= cfg.min_units


@pytest.mark.parametrize("hi", [100.0, 5e11, 5e13, 1e18])
def test_clamped_sums_are_exact_with_narrow_and_wide_value_types(hi: float) -> None:
    """Per-row values are DECIMAL(18,6) when the bounds allow and DECIMAL(38,6) otherwise; either
    way the sum is the exact DECIMAL(38,6) total of the values rounded to 6 decimals."""
    from decimal import Decimal

    from pipeline.config import MetricConfig
    from pipeline.engines.duckdb.cells import clamp_expr
    from pipeline.engines.duckdb.sql import Params

    m = MetricConfig(name="v", agg="sum", column="x", bounds=(-hi, hi))
    params = Params()
    expr = clamp_expr(m, params)
    con = duckdb.connect()
    raw = [hi * 0.987654321, -hi / 3.0, 1.0 / 7.0, hi * 2.0, 0.000001]
    con.execute("CREATE TABLE t AS SELECT unnest($1::DOUBLE[]) AS x FROM range(2000)", [raw])
    total, typ = con.execute(f"SELECT sum(v), any_value(typeof(v)) FROM (SELECT {expr} AS v FROM t)", params.values).fetchall()[0]
    assert typ == ("DECIMAL(18,6)" if hi < 1e12 else "DECIMAL(38,6)")
    per_row = con.execute(f"SELECT list(DISTINCT CAST(v AS VARCHAR)) FROM (SELECT {expr} AS v FROM t)", params.values).fetchall()[0][0]
    exact = sum(Decimal(v) for v in per_row) * 2000
    assert total == exact
