"""On local Spark: the SQL builders give the same cells on both engines (issue 17, first part).

The same source, the same statements (per-person table, cells with margins and dominance, the k
rule, secondary suppression, the published selection); DuckDB's result is the reference. Skipped
with a visible reason where PySpark or a Java runtime is missing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

pytest.importorskip("pyspark", reason="the [spark] extra (pyspark) is not installed")
if shutil.which("java") is None:  # pragma: no cover - CI installs a JRE
    pytest.skip("no Java runtime: the Spark engine tests need one", allow_module_level=True)

from pipeline.config import config_from_dict  # noqa: E402
from pipeline.engines.duckdb import cells as C  # noqa: E402, N812
from pipeline.engines.duckdb import suppression as S  # noqa: E402, N812
from pipeline.engines.duckdb.connection import connect  # noqa: E402
from pipeline.engines.duckdb.secondary import apply_secondary_suppression  # noqa: E402
from pipeline.engines.spark.engine import SparkEngine  # noqa: E402


@pytest.fixture(scope="module")
def spark() -> Any:
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("anonymize-tests")
               .config("spark.sql.shuffle.partitions", "4").config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _source(path: Path) -> Path:
    """Cities × categories × months; cell (A, x) has one buyer, so its city margin needs a complement."""
    con = duckdb.connect()
    con.execute("""
        CREATE TABLE t AS
        SELECT i AS user_id, c.city, k.category, TIMESTAMP '2026-01-05' + INTERVAL (i % 3) MONTH AS event_time,
               CASE WHEN i % 4 = 0 THEN NULL ELSE (i * 37) % 500 END AS order_value
        FROM range(400) r(i), (VALUES ('A'), ('B'), ('C')) c(city), (VALUES ('x'), ('y'), ('z')) k(category)
        WHERE NOT (c.city = 'A' AND k.category = 'x') AND (i + length(c.city || k.category)) % 7 <> 0
    """)
    con.execute("INSERT INTO t VALUES (9999, 'A', 'x', TIMESTAMP '2026-01-09', 120)")
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()
    return path


def _both_engines(spark: Any, cfg: Any, src: Path) -> tuple[Any, SparkEngine, dict[str, str]]:
    """A DuckDB engine and a Spark engine over the same Parquet as ``__src``, and its schema."""
    duck = connect(cfg)
    schema = duck.open_source(cfg).schema
    spark.read.parquet(str(src)).createOrReplaceTempView("__src")
    return duck, SparkEngine(spark), schema


CONFIGS = {
    "margins+secondary": {"dimensions": ["city", "category"], "totals": [[], ["city"], ["category"]]},
    "months+dominance": {"dimensions": ["city", "category", {"column": "event_time", "grain": "month", "as": "month"}],
                         "totals": [["city"]], "dominance": {"n": 2, "max_share": 0.7}},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_builders_give_the_same_cells_on_spark_and_duckdb(spark: Any, tmp_path: Path, name: str) -> None:
    src = _source(tmp_path / "events.parquet")
    cfg = config_from_dict({
        "report": "p", "source": {"path": str(src)}, "privacy_unit": "user_id", "identifiers": ["user_id"],
        "metrics": [{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"},
                    {"name": "value", "agg": "sum", "column": "order_value", "bounds": [0, 400]},
                    {"name": "avg", "agg": "mean", "column": "order_value", "bounds": [0, 400]}],
        "min_units": 10, "difference_check": False, **CONFIGS[name]})
    duck, engine, schema = _both_engines(spark, cfg, src)
    out = {}
    for eng in (duck, engine):
        eng.run(C.per_unit_sql(cfg, schema))
        eng.run(C.cells_from_per_unit_sql(cfg, dominance_n=cfg.dominance.n if cfg.dominance else 0))
        eng.run(S.primary_sql(cfg))
        secondary = apply_secondary_suppression(cfg, eng)
        eng.execute(S.finalize_sql())
        rows = eng.run(C.published_select_sql(cfg)).fetchall()
        out[eng.name] = (S.counts(eng), secondary, sorted(
            tuple(None if v is None else round(v, 6) if isinstance(v, float) else str(v) for v in r) for r in rows))
    engine.close()
    assert out["spark"] == out["duckdb"]
    counts, secondary, rows = out["duckdb"]
    assert rows and counts["cells_suppressed"] > 0
    if name == "margins+secondary":
        assert secondary > 0  # the complement search ran on Spark's numbers too


RUNS = {
    "margins+dominance": {"dimensions": ["city", "category", {"column": "event_time", "grain": "month", "as": "month"}],
                          "totals": [[], ["city"]], "dominance": {"n": 1, "max_share": 0.6}, "min_units": 10},
    "remainder": {"dimensions": ["city", "category"], "remainder": True, "min_units": 10},
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_whole_threshold_run_on_spark_publishes_what_duckdb_publishes(spark: Any, tmp_path: Path, name: str) -> None:
    """``engine.kind: spark`` through ``run_report``: the same published table, cell counts, privacy
    section and gate verdicts as the DuckDB run of the same config (the gate recounts on Spark)."""
    import pyarrow.parquet as pq

    from pipeline import load_config, run_report
    from tests.conftest import write_config

    _source(tmp_path / "events.parquet")
    out = {}
    for kind in ("duckdb", "spark"):
        (tmp_path / kind).mkdir()  # the same config text in two projects but for the engine
        cfg = load_config(write_config(
            tmp_path / kind, "report.yaml", report="r", source={"path": "../events.parquet"}, identifiers=["user_id"],
            filter=None, metrics=[{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"},
                                  {"name": "value", "agg": "sum", "column": "order_value", "bounds": [0, 400]},
                                  {"name": "avg", "agg": "mean", "column": "order_value", "bounds": [0, 400]}],
            difference_check=False, engine={"kind": kind}, output={"dir": "out"}, history=None, **RUNS[name]))
        rel = run_report(cfg, "r1", summary_html=False)
        out[kind] = rel
    d, s = out["duckdb"], out["spark"]
    assert pq.read_table(s.report_path).replace_schema_metadata(None).equals(
        pq.read_table(d.report_path).replace_schema_metadata(None))
    # byte for byte: the published file (its provenance and config hash too) does not depend on the engine
    assert s.manifest["engine"] == {"kind": "spark"} and d.manifest["engine"] == {"kind": "duckdb"}
    assert s.manifest["report_file"]["sha256"] == d.manifest["report_file"]["sha256"]
    assert hashlib.sha256(Path(s.report_path).read_bytes()).hexdigest() == s.manifest["report_file"]["sha256"]
    assert s.internal["cells"] == d.internal["cells"] and s.internal["rows"] == d.internal["rows"]
    assert s.manifest["privacy"] == d.manifest["privacy"]
    assert s.manifest["gate"]["passed"] and d.manifest["gate"]["passed"]
    assert {k: v.get("ok") for k, v in s.manifest["gate"]["checks"].items()} == {
        k: v.get("ok") for k, v in d.manifest["gate"]["checks"].items()}
    assert pq.read_table(d.report_path).num_rows > 0


def test_spark_engine_refuses_sources_it_cannot_read(tmp_path: Path) -> None:
    """Fail closed with a config error naming the key and the fix, before any data is read."""
    from pipeline.config import config_from_dict
    from pipeline.errors import ConfigError

    base = {"report": "r", "source": {"path": "x.parquet"}, "privacy_unit": "u", "dimensions": ["c"],
            "metrics": [{"name": "n", "agg": "count"}], "min_units": 5, "engine": {"kind": "spark"}}
    config_from_dict(base)  # threshold mode with the difference check (on by default) runs on Spark
    with pytest.raises(ConfigError, match="reads Parquet and CSV sources, not duckdb"):
        config_from_dict({**base, "difference_check": False, "source": {"path": "events.duckdb", "table": "t"}})
    with pytest.raises(ConfigError, match="not json"):
        config_from_dict({**base, "difference_check": False, "source": {"path": "events.jsonl"}})
    # DP mode runs on Spark (its releases compose by the budget, not by the difference check)
    config_from_dict({**base, "privacy": {"epsilon": 1.0, "delta": 1e-6}, "budget": {"ledger": "l.duckdb", "epsilon_limit": 2, "delta_limit": 1e-3}})


def _dp_source(path: Path, units: int = 97) -> Path:
    """Heavy people: up to 12 cells each and up to 30 rows per cell, values with cents, a date and a
    text dimension, some null dimension values and null values."""
    con = duckdb.connect()
    con.execute(f"""
        CREATE TABLE t AS
        SELECT i % {int(units)} AS user_id,
               CASE WHEN (i * 7) % 23 = 0 THEN NULL ELSE 'c' || ((i * 13) % 6) END AS city,
               DATE '2026-01-05' + INTERVAL ((i // 7) % 3) MONTH AS event_time,
               CASE WHEN i % 11 = 0 THEN NULL ELSE ((i * 37) % 5000) / 100.0 END AS order_value
        FROM range(6000) r(i)
    """)
    con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
    con.close()
    return path


DP_BOUNDS = {"max_groups_per_unit": 3, "max_rows_per_group": 4}


@pytest.mark.parametrize("totals", [False, True])
def test_dp_bounding_is_the_same_on_spark_and_duckdb(spark: Any, tmp_path: Path, totals: bool) -> None:
    """For the same secret seeds both engines bound the same data the same way: identical bounded
    cells (units, rows, clamped sums) and pre-bounding statistics; and on Spark each person keeps at
    most ``max_groups_per_unit`` cells and ``max_rows_per_group`` rows per cell, counted by brute force
    from the source."""
    from pipeline.engines.duckdb.bounding import dp_cells_sql, dp_pairs_sql, l0_keep_sql

    src = _dp_source(tmp_path / "events.parquet")
    cfg = config_from_dict({
        "report": "p", "source": {"path": str(src)}, "privacy_unit": "user_id", "identifiers": ["user_id"],
        "dimensions": ["city", {"column": "event_time", "grain": "month", "as": "month"}],
        "metrics": [{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"},
                    {"name": "value", "agg": "sum", "column": "order_value", "bounds": [0, 40]}],
        "privacy": {"epsilon": 1.0, "delta": 1e-6, **DP_BOUNDS}, "min_units": 2,
        "totals": [[], ["city"]] if totals else None,
        "budget": {"ledger": str(tmp_path / "l.duckdb"), "epsilon_limit": 5, "delta_limit": 1e-3}})
    duck, engine, schema = _both_engines(spark, cfg, src)
    out = {}
    for eng in (duck, engine):
        eng.run(dp_pairs_sql(cfg, schema, 1234, public=False))
        for q in dp_cells_sql(cfg, 5678):
            eng.run(q)
        cells = eng.execute("SELECT __level, __d0, CAST(__d1 AS VARCHAR), __units, __rows, CAST(__s2 AS DOUBLE) "
                            "FROM __dp_cells").fetchall()
        pre = [] if totals else eng.execute("SELECT __d0, CAST(__d1 AS VARCHAR), __units, __umin, __umax FROM __dp_pre").fetchall()
        out[eng.name] = (sorted(cells, key=repr), sorted(pre, key=repr))
    assert out["spark"] == out["duckdb"]
    assert len(out["duckdb"][0]) > 10
    # brute force on Spark: cells kept per person and rows kept per (person, cell)
    _, flagged = l0_keep_sql(cfg, 5678)
    kept = dict(engine.execute(f"SELECT __u, count(*) FILTER (WHERE __keep) FROM ({flagged}) GROUP BY __u").fetchall())
    raw = spark.sql("SELECT user_id, count(DISTINCT coalesce(city, '~'), date_trunc('month', event_time)) AS n "
                    "FROM __src WHERE user_id IS NOT NULL GROUP BY user_id").collect()
    assert {r["user_id"]: min(r["n"], DP_BOUNDS["max_groups_per_unit"]) for r in raw} == kept
    assert max(r["n"] for r in raw) > DP_BOUNDS["max_groups_per_unit"]  # the cut had work to do
    rows = engine.execute("SELECT max(__n), max(__n_raw) FROM __dp_pairs").fetchone()
    assert rows[0] == DP_BOUNDS["max_rows_per_group"] and rows[1] > rows[0]
    engine.close()


def test_a_whole_dp_run_on_spark_records_what_duckdb_records(spark: Any, tmp_path: Path) -> None:
    """``engine.kind: spark`` in DP mode through ``run_report``: the gate passes (recounting on
    Spark), the ledger records the spend, and the manifest's mechanisms, scales and budget equal
    the DuckDB run's (the published cells differ: the noise is fresh for every release)."""
    from pipeline import load_config, run_report
    from tests.conftest import write_config

    _dp_source(tmp_path / "events.parquet", units=1499)
    rels = {}
    for kind in ("duckdb", "spark"):
        cfg = load_config(write_config(
            tmp_path, f"{kind}.yaml", report=f"dp_{kind}", source={"path": "events.parquet"}, identifiers=["user_id"],
            filter=None, dimensions=["city", {"column": "event_time", "grain": "month", "as": "month"}],
            metrics=[{"name": "events", "agg": "count"}, {"name": "value", "agg": "sum", "column": "order_value",
                                                          "bounds": [0, 40]}],
            privacy={"epsilon": 2.0, "delta": 1e-6, **DP_BOUNDS}, min_units=2,
            budget={"ledger": f"state_{kind}/ledger.duckdb", "epsilon_limit": 5, "delta_limit": 1e-3},
            engine={"kind": kind}, output={"dir": f"out_{kind}"}, history=None, difference_check=None))
        rels[kind] = run_report(cfg, "r1", summary_html=False)
    d, s = rels["duckdb"], rels["spark"]
    assert s.manifest["gate"]["passed"] and d.manifest["gate"]["passed"]
    assert {k: v.get("ok") for k, v in s.manifest["gate"]["checks"].items()} == {
        k: v.get("ok") for k, v in d.manifest["gate"]["checks"].items()}
    drawn = ("noise_dominated", "noise_to_value")  # facts about this release's noisy values
    assert {k: v for k, v in s.manifest["privacy"].items() if k not in drawn} == {
        k: v for k, v in d.manifest["privacy"].items() if k not in drawn}
    budget = ("epsilon_spent", "delta_spent", "epsilon_left", "delta_left", "entry_seq")
    assert {k: s.manifest["budget"][k] for k in budget} == {k: d.manifest["budget"][k] for k in budget}
    assert s.manifest["budget"]["epsilon_spent"] == 2.0 and s.manifest["budget"]["entry_seq"] == 1
    assert len(s.table) > 0


def test_public_partitions_on_spark_publish_every_listed_cell(spark: Any, tmp_path: Path) -> None:
    """The shipped DP config with public partitions, on Spark: every listed country is a published
    row (empty or not), the gate passes and the ledger records the spend."""
    import csv

    from pipeline import load_config, run_report
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "online_retail_dp.yaml").with_overrides(
        engine={"kind": "spark"}, output={"dir": str(tmp_path / "reports")},
        budget={"ledger": str(tmp_path / "state" / "ledger.duckdb"), "epsilon_limit": 10.0, "delta_limit": 1e-5})
    rel = run_report(cfg, "p1", summary_html=False)
    with open(ROOT / "configs" / "online_retail_countries.csv", newline="") as fh:
        listed = {row["country"] for row in csv.DictReader(fh)}
    assert set(rel.table["country"]) == listed and len(rel.table) == len(listed)
    assert rel.manifest["gate"]["passed"] and rel.manifest["budget"]["epsilon_spent"] == pytest.approx(1.0)


def test_a_csv_source_on_spark_gives_duckdbs_release(spark: Any, tmp_path: Path) -> None:
    """The same events as two CSV files: the Spark release is byte-identical to DuckDB's (the same
    column types read, the same values)."""
    from pipeline import load_config, run_report
    from tests.conftest import write_config

    src = _source(tmp_path / "events.parquet")
    (tmp_path / "csv").mkdir()
    con = duckdb.connect()
    for part in (0, 1):
        con.execute(f"COPY (SELECT * FROM '{src}' WHERE user_id % 2 = {part}) TO "
                    f"'{tmp_path / 'csv' / f'part{part}.csv'}' (HEADER, DELIMITER ',')")
    out = {}
    for kind in ("duckdb", "spark"):
        (tmp_path / kind).mkdir()
        cfg = load_config(write_config(
            tmp_path / kind, "report.yaml", report="r", source={"path": "../csv/*.csv"}, identifiers=["user_id"],
            filter=None, dimensions=["city", {"column": "event_time", "grain": "month", "as": "month"}],
            metrics=[{"name": "events", "agg": "count"},
                     {"name": "value", "agg": "sum", "column": "order_value", "bounds": [0, 400]}],
            min_units=10, difference_check=False, engine={"kind": kind}, output={"dir": "out"}, history=None))
        out[kind] = run_report(cfg, "c1", summary_html=False)
    assert out["spark"].manifest["report_file"]["sha256"] == out["duckdb"].manifest["report_file"]["sha256"]
    assert out["spark"].manifest["source"]["fingerprint"] == out["duckdb"].manifest["source"]["fingerprint"]
    assert len(out["spark"].table) > 0


@pytest.mark.parametrize("case", ["ragged", "drift", "utf8"])
def test_bad_csv_on_spark_is_refused_with_the_file(spark: Any, tmp_path: Path, case: str) -> None:
    """Fail closed on Spark as on DuckDB: a ragged line, a second file with another header, or bytes
    that are not UTF-8 refuse the run, naming the file; nothing is published."""
    from pipeline import load_config, run_report
    from pipeline.errors import SourceError
    from tests.conftest import write_config

    (tmp_path / "csv").mkdir()
    good = "user_id,city\n" + "".join(f"{i},c{i % 3}\n" for i in range(60))
    (tmp_path / "csv" / "a.csv").write_text(good)
    bad = {"ragged": good + "61,c1,extra\n", "drift": good.replace("user_id,city", "city,user_id", 1),
           "utf8": None}[case]
    path = tmp_path / "csv" / "b.csv"
    if bad is None:
        path.write_bytes(good.encode() + b"62,caf\xe9\n")
    else:
        path.write_text(bad)
    cfg = load_config(write_config(
        tmp_path, "report.yaml", report="r", source={"path": "csv/*.csv"}, identifiers=["user_id"], filter=None,
        dimensions=["city"], metrics=[{"name": "n", "agg": "count"}], min_units=5, difference_check=False,
        engine={"kind": "spark"}, output={"dir": "out"}, history=None))
    want = {"ragged": "more or fewer fields", "drift": "different header", "utf8": "not valid UTF-8"}[case]
    with pytest.raises(SourceError, match=want) as err:
        run_report(cfg, "b1", summary_html=False)
    assert "b.csv" in str(err.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("report.parquet"))


def test_exclusion_lists_on_spark_remove_the_same_people(spark: Any, tmp_path: Path) -> None:
    """``exclude_units`` on Spark: the lists are read by Spark, the listed people's rows never reach
    the aggregation (the gate re-reads the lists and recounts), and the release equals DuckDB's
    byte for byte; without the lists the release differs (the listed people mattered)."""
    from pipeline import load_config, run_report
    from tests.conftest import write_config

    _source(tmp_path / "events.parquet")
    (tmp_path / "deleted.csv").write_text("user_id\n" + "".join(f"{i}\n" for i in range(0, 400, 3)))
    con = duckdb.connect()
    con.execute(f"COPY (SELECT range AS user_id FROM range(1, 400, 7)) TO '{tmp_path / 'optout.parquet'}' (FORMAT parquet)")
    out = {}
    for kind, lists in (("duckdb", True), ("spark", True), ("spark_all", False)):
        (tmp_path / kind).mkdir()
        excl = [{"path": "../deleted.csv", "column": "user_id"}, {"path": "../optout.parquet", "column": "user_id"}]
        cfg = load_config(write_config(
            tmp_path / kind, "report.yaml", report="r", source={"path": "../events.parquet"}, identifiers=["user_id"],
            filter=None, dimensions=["city", "category"], metrics=[{"name": "events", "agg": "count"}],
            min_units=10, difference_check=False, engine={"kind": kind.split("_")[0]}, output={"dir": "out"},
            history=None, exclude_units=excl if lists else None))
        out[kind] = run_report(cfg, "e1", summary_html=False)
    d, s, s_all = out["duckdb"], out["spark"], out["spark_all"]
    assert s.manifest["gate"]["checks"]["exclusions"]["ok"] and s.manifest["gate"]["passed"]
    assert s.manifest["report_file"]["sha256"] == d.manifest["report_file"]["sha256"]
    assert s.manifest["source"]["exclude_units"] == d.manifest["source"]["exclude_units"]
    assert [e["units_listed"] for e in s.manifest["source"]["exclude_units"]] == [134, 57]
    assert int(s_all.table["events"].sum()) > int(s.table["events"].sum())


@pytest.mark.parametrize("name", ["adult_census_occupation", "online_retail_country_month"])
def test_shipped_threshold_configs_give_the_same_release_on_spark(spark: Any, tmp_path: Path, name: str) -> None:
    """Every shipped threshold config whose data ships with the repository, as shipped (the
    difference check on, each engine with its own history): byte-identical report, the same
    counts, suppression reasons and gate verdicts on both engines."""
    import shutil

    from pipeline import load_config, run_report
    from tests.conftest import ROOT

    out = {}
    for kind in ("duckdb", "spark"):  # one output folder (it is in the provenance): the first release moved aside
        cfg = load_config(ROOT / "configs" / f"{name}.yaml").with_overrides(
            engine={"kind": kind}, output={"dir": str(tmp_path / "reports")})
        cfg = cfg.with_overrides(history=None) if cfg.history else cfg
        assert cfg.difference_check
        out[kind] = run_report(cfg, "shipped", summary_html=False)
        rows = len(out[kind].table)  # read before the folder moves
        shutil.move(str(tmp_path / "reports"), str(tmp_path / f"reports_{kind}"))
        shutil.move(str(tmp_path / "state"), str(tmp_path / f"state_{kind}"))  # the history of this engine
    d, s = out["duckdb"], out["spark"]
    assert s.manifest["report_file"]["sha256"] == d.manifest["report_file"]["sha256"]
    assert s.internal["cells"] == d.internal["cells"] and s.internal["rows"] == d.internal["rows"]
    assert {k: v.get("ok") for k, v in s.manifest["gate"]["checks"].items()} == {
        k: v.get("ok") for k, v in d.manifest["gate"]["checks"].items()}
    assert rows > 0


SEQUENCE = [  # (report, source, settings): each release is checked against every earlier one
    ("a", "events", {"dimensions": ["city", "category"], "totals": [[], ["city"]]}),
    ("b", "fewer", {"dimensions": ["city", "category"]}),  # the same cells, three people fewer
    ("c", "fewer", {"dimensions": ["city", {"column": "event_time", "grain": "week", "as": "week"}], "remainder": True}),
    ("d", "events", {"dimensions": ["city", {"column": "event_time", "grain": "month", "as": "month"}]}),
]


def test_releases_checked_against_their_history_are_the_same_on_spark(spark: Any, tmp_path: Path) -> None:
    """The difference check across releases on Spark: a sequence of releases (margins; the same
    cells over three people fewer; weeks with a remainder row; months over the weeks' people and
    more), each checked against every earlier one in its engine's history, publishes byte for byte
    what DuckDB publishes, withholding the same cells for ``difference``; a rerun is unchanged. One
    history is kept by one engine: a run of the other engine on it is refused, and writes nothing."""
    from pipeline import load_config, run_report
    from pipeline.errors import LedgerError
    from tests.conftest import release_dirs, write_config

    _source(tmp_path / "events.parquet")
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM '{tmp_path / 'events.parquet'}' WHERE user_id NOT IN (5, 17, 33)) "
                f"TO '{tmp_path / 'fewer.parquet'}' (FORMAT parquet)")
    con.close()
    metrics = [{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"},
               {"name": "value", "agg": "sum", "column": "order_value", "bounds": [0, 400]}]

    def config(kind: str, folder: str, report: str, source: str, settings: dict[str, Any]) -> Any:
        (tmp_path / folder).mkdir(exist_ok=True)
        return load_config(write_config(
            tmp_path / folder, f"{report}.yaml", report=report, source={"path": f"../{source}.parquet"},
            identifiers=["user_id"], filter=None, metrics=metrics, min_units=10, engine={"kind": kind},
            output={"dir": "out"}, history="state/history.duckdb", **settings))

    import shutil

    out: dict[str, list[Any]] = {}
    for kind in ("duckdb", "spark"):  # one project folder (its paths are in the provenance), moved aside after
        out[kind] = [run_report(config(kind, "p", *step), "r1", summary_html=False) for step in SEQUENCE]
        if kind == "duckdb":
            shutil.move(str(tmp_path / "p"), str(tmp_path / "p_duckdb"))
    for d, s in zip(out["duckdb"], out["spark"], strict=True):
        assert s.manifest["report_file"]["sha256"] == d.manifest["report_file"]["sha256"], d.manifest["report"]
        assert s.internal["cells"] == d.internal["cells"], d.manifest["report"]
    withheld = [d.internal["cells"].get("suppressed_difference", 0) for d in out["duckdb"]]
    assert withheld[0] == 0 and withheld[1] > 0 and withheld[2] > 0  # the check had work to do
    assert (tmp_path / "p" / "state" / "history.spark" / "CURRENT.json").is_file()
    assert not (tmp_path / "p" / "state" / "history.duckdb").exists()
    # a rerun compares with the other releases only: byte-identical, nothing new recorded
    again = run_report(config("spark", "p", *SEQUENCE[1]), "r1", summary_html=False)
    assert again.status == "unchanged"
    # the other engine's history: refused before anything is published
    before = sorted(release_dirs(tmp_path / "p"))
    with pytest.raises(LedgerError, match="kept by the spark engine"):
        run_report(config("duckdb", "p", "e", "events", {"dimensions": ["city"]}), "r1", summary_html=False)
    shutil.copy(tmp_path / "p_duckdb" / "state" / "history.duckdb", tmp_path / "p" / "state" / "history.duckdb")
    with pytest.raises(LedgerError, match="kept by the duckdb engine"):
        run_report(config("spark", "p", "e", "events", {"dimensions": ["city"]}), "r1", summary_html=False)
    assert sorted(release_dirs(tmp_path / "p")) == before


def test_a_history_commit_that_fails_leaves_the_previous_history(spark: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Spark's history is switched by one rename: a crash before it leaves the previous tables
    readable and whole; the folders of the failed commit are removed by the next one. A release
    writes only its own rows (earlier releases' files are left as they are); a rerun's delete of
    its release drops that release's rows, and past ``HISTORY_SEGMENTS_MAX`` segments a table is
    written whole again."""
    import os

    import pipeline.engines.spark.engine as E  # noqa: N812
    from pipeline.state.history import History

    hist = History(tmp_path / "h.duckdb")
    store = tmp_path / "h.spark"
    engine = SparkEngine(spark)
    ddl = "CREATE TABLE IF NOT EXISTS __hist.cell_units (release_id VARCHAR, cell_key VARCHAR, uh VARCHAR)"

    def record(release: str, rows: int) -> None:  # as record_release does: its release replaced
        engine.attach_history(hist, write=True)
        engine.execute(ddl)
        engine.execute("BEGIN TRANSACTION")
        engine.execute("DELETE FROM __hist.cell_units WHERE release_id = $1", [release])
        engine.executemany("INSERT INTO __hist.cell_units VALUES (?, ?, ?)",
                           [[release, f"k{i}", f"u{i}"] for i in range(rows)])
        engine.execute("COMMIT")
        engine.detach_history()

    def stored() -> list[tuple]:
        engine.attach_history(hist, write=False)
        try:
            return sorted(engine.execute("SELECT release_id, count(*) FROM __hist.cell_units GROUP BY 1").fetchall())
        finally:
            engine.detach_history()

    def files() -> dict[str, tuple[int, int]]:  # every data file: (size, mtime) by path
        return {str(f.relative_to(store)): (f.stat().st_size, f.stat().st_mtime_ns)
                for f in store.rglob("*.parquet")}

    record("r1", 3)
    assert stored() == [("r1", 3)]
    first = files()
    real_replace = os.replace

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        record("r2", 5)
    engine.detach_history()
    monkeypatch.setattr(os, "replace", real_replace)
    assert stored() == [("r1", 3)]  # the failed commit changed nothing that is read
    record("r3", 2)
    assert stored() == [("r1", 3), ("r3", 2)]
    now = files()
    assert {k: v for k, v in now.items() if k in first} == first  # r1's files untouched: not rewritten
    assert len({k.split("/")[0] for k in now}) == 2  # r1's and r3's segments; the failed commit's removed
    record("r1", 4)  # a rerun of r1: its old segment goes, r3's stays as it was
    assert stored() == [("r1", 4), ("r3", 2)]
    r1_dir = next(iter(first)).split("/")[0]
    r3_files = {k: v for k, v in now.items() if not k.startswith(r1_dir)}
    after = files()
    assert {k: after.get(k) for k in r3_files} == r3_files and not any(k.startswith(r1_dir) for k in after)
    monkeypatch.setattr(E, "HISTORY_SEGMENTS_MAX", 2)
    record("r4", 1)  # two segments already: the table is written whole, one segment
    assert stored() == [("r1", 4), ("r3", 2), ("r4", 1)]
    assert len([p for p in store.iterdir() if p.is_dir()]) == 1
    engine.close()


def test_a_source_url_on_spark_reads_the_files_it_lists(spark: Any, tmp_path: Path) -> None:
    """A source URL (here ``file://`` to a folder of Parquet parts with Spark's ``_SUCCESS`` marker;
    ``s3a://`` and ``abfss://`` take the same path on a cluster) is listed by Spark, hidden files
    skipped, and gives the release DuckDB gives for the same folder as a local path; the manifest
    lists each file by its URL. Content digests computed by Spark equal the driver's."""
    import pyarrow.parquet as pq

    from pipeline import load_config, run_report
    from pipeline.state.protected import content_digests
    from tests.conftest import write_config

    folder = tmp_path / "events"
    folder.mkdir()
    src = _source(tmp_path / "all.parquet")
    con = duckdb.connect()
    for part, cond in enumerate(("user_id % 2 = 0", "user_id % 2 = 1")):
        con.execute(f"COPY (SELECT * FROM '{src}' WHERE {cond}) TO '{folder / f'part-{part}.parquet'}' (FORMAT parquet)")
    con.close()
    (folder / "_SUCCESS").write_bytes(b"")
    out = {}
    for kind, path in (("duckdb", str(folder)), ("spark", folder.as_uri())):
        (tmp_path / kind).mkdir()
        cfg = load_config(write_config(
            tmp_path / kind, "r.yaml", report="r", source={"path": path}, identifiers=["user_id"], filter=None,
            metrics=[{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"}],
            dimensions=["city", "category"], min_units=10, engine={"kind": kind}, output={"dir": "out"}))
        out[kind] = run_report(cfg, "r1", summary_html=False)
    d, s = out["duckdb"], out["spark"]
    assert pq.read_table(s.report_path).replace_schema_metadata(None).equals(
        pq.read_table(d.report_path).replace_schema_metadata(None))
    assert s.internal["cells"] == d.internal["cells"] and d.internal["cells"]["cells_published"] > 0
    files = s.manifest["source"]["files"]
    assert [f["path"].rsplit("/", 1)[-1] for f in files] == ["part-0.parquet", "part-1.parquet"]
    assert all(f["path"].startswith("file:") for f in files)
    assert s.manifest["source"]["source_id"] == folder.as_uri()
    engine = SparkEngine(spark)
    parts = sorted(folder.glob("part-*"))
    assert engine._digests_in_spark([p.as_uri() for p in parts]) == content_digests(parts)
    engine.close()


def test_files_over_the_binary_file_limit_are_hashed_in_the_jvm(spark: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A source file too large for one ``binaryFile`` row (2 GiB; here the limit is lowered to 100
    bytes) is hashed by streaming it through the driver's JVM: every digest, of files on both
    sides of the limit, equals the sha256 of its bytes computed here; on a session with no JVM to
    reach (Spark Connect) the large file is refused, naming it."""
    import pipeline.engines.spark.engine as E  # noqa: N812
    from pipeline.errors import SourceError

    files = []
    for i, n in enumerate((50, 100, 101, 300_000)):
        f = tmp_path / f"part-{i}.bin"
        f.write_bytes(bytes((j * 31 + i) % 251 for j in range(n)))
        files.append(f)
    truth = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    engine = SparkEngine(spark)
    monkeypatch.setattr(E, "BINARY_FILE_MAX", 100)
    assert engine._digests_in_spark([f.as_uri() for f in files]) == truth

    class _Connect:  # a Spark Connect session: the same reader, no driver JVM
        def __init__(self, session: Any) -> None:
            self.read = session.read

    engine.spark = _Connect(spark)
    with pytest.raises(SourceError, match=r"part-2\.bin is 101 bytes: over Spark's 2 GiB per-file limit"):
        engine._digests_in_spark([f.as_uri() for f in files[:3]])

