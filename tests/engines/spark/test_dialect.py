"""Without a JVM: every SQL statement the pipeline sends to its engine, over a matrix of configs
(every config in ``configs/`` whose data ships with the repository, and threshold/DP variants with
margins, remainder rows, dominance, protection intervals, history with nesting, public
partitions), translates to Spark SQL at ``ErrorLevel.RAISE`` (issue 17).

The statements are recorded from real runs on DuckDB (the engine executes them as usual)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlglot", reason="the [spark] extra (sqlglot) is not installed")

from pipeline import load_config, run_report  # noqa: E402
from pipeline.engines.duckdb.connection import DuckDBEngine  # noqa: E402
from pipeline.engines.spark.dialect import UnsupportedSQL, to_spark  # noqa: E402
from tests.conftest import ROOT, write_config  # noqa: E402

DP = {"epsilon": 1.0, "delta": 1e-6, "max_groups_per_unit": 3, "max_rows_per_group": 5}


def _variants(project: Path) -> list[tuple[str, Any]]:
    state = project / "state"
    ledger = {"ledger": str(state / "ledger.duckdb"), "epsilon_limit": 100, "delta_limit": 1e-3,
              "allow_exact_releases": True}  # threshold and DP variants share the data
    out: list[tuple[str, Any]] = [
        ("threshold", write_config(project, "a.yaml")),
        ("margins+dominance", write_config(project, "b.yaml", report="b", totals=[[], ["city"]],
                                           dominance={"n": 2, "max_share": 0.8})),
        ("remainder+p%", write_config(project, "c.yaml", report="c", remainder=True, dominance={"p_percent": 10})),
        ("protection", write_config(project, "d.yaml", report="d", totals=[["city"]], protection={"interval": 0.1},
                                    dimensions=["city", "category"])),
        ("nesting (weeks after months)", write_config(
            project, "e.yaml", report="e", dimensions=["city", {"column": "event_time", "grain": "week", "as": "week"}])),
        ("dp laplace", write_config(project, "f.yaml", report="f", privacy=DP, budget=ledger, min_units=5)),
        ("dp gaussian+margins", write_config(project, "g.yaml", report="g", totals=[["city"]], min_units=5,
                                             privacy={**DP, "noise": "gaussian"}, budget=ledger)),
    ]
    for name in ("online_retail_country_month", "online_retail_dp", "adult_census_occupation"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        changes: dict[str, Any] = {"output": {"dir": str(project / "reports")}, "history": str(state / "h.duckdb")}
        if cfg.budget is not None:
            changes["budget"] = ledger
            changes.pop("history")
        out.append((name, cfg.with_overrides(**changes)))
    return out


def test_every_statement_translates_to_spark_sql(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    current = ["?"]
    execute, executemany = DuckDBEngine.execute, DuckDBEngine.executemany

    def record(self: DuckDBEngine, sql: str, params: Any = None) -> Any:
        seen.append((current[0], sql))
        return execute(self, sql, params)

    def record_many(self: DuckDBEngine, sql: str, rows: Any) -> None:
        seen.append((current[0], sql))
        executemany(self, sql, rows)

    monkeypatch.setattr(DuckDBEngine, "execute", record)
    monkeypatch.setattr(DuckDBEngine, "executemany", record_many)
    for name, cfg in _variants(project):
        current[0] = name
        run_report(cfg if not isinstance(cfg, Path) else load_config(cfg), "t1", summary_html=False)
    # the nesting checks run when a coarser report follows the weekly one over the same history
    current[0] = "nesting (a month after weeks)"
    run_report(load_config(write_config(project, "h.yaml", report="h", dimensions=[
        "city", {"column": "event_time", "grain": "month", "as": "month"}])), "t1", summary_html=False)
    assert len(seen) > 300 and len({n for n, _ in seen}) == 11
    failures = {}
    for name, sql in seen:
        try:
            out = to_spark(sql)
        except UnsupportedSQL as exc:
            failures.setdefault(str(exc), (name, " ".join(sql.split())[:200]))
            continue
        assert out, sql
    assert not failures, "\n".join(f"{why}\n  in {name}: {sql}" for why, (name, sql) in failures.items())
    joined = " ".join(s for _, q in seen for s in [q])
    assert "max(" in joined.lower()  # the top-n rule had work to do


def test_top_n_and_list_sum_rules() -> None:
    [sql] = to_spark("SELECT list_sum(max(abs(x), 3)) AS t, min(y, 2) AS u FROM t GROUP BY g")
    assert "SLICE(SORT_ARRAY(COLLECT_LIST(ABS(x)), FALSE), 1, 3)" in sql
    assert "SLICE(SORT_ARRAY(COLLECT_LIST(y), TRUE), 1, 2)" in sql
    assert sql.startswith("SELECT AGGREGATE(") and "CAST(0 AS DECIMAL(38, 6))" in sql  # exact, as DuckDB
    [by] = to_spark("SELECT list_sum(min_by(v, r, 5)) AS s FROM t GROUP BY g")
    assert "SLICE(SORT_ARRAY(FILTER(COLLECT_LIST(NAMED_STRUCT('r', r, 'v', v))" in by and ", TRUE), 1, 5)" in by
    assert "NOT __s.v IS NULL AND NOT __s.r IS NULL" in by  # DuckDB skips rows with a null value or key
    # the default WARN level would have dropped the n; RAISE refuses what no rule covers
    with pytest.raises(UnsupportedSQL):
        to_spark("SELECT * FROM t WHERE")


def test_hash_and_ordered_first_rules() -> None:
    """The difference check's digests stay 64-bit on Spark (its ``hash`` is 32-bit), and an
    ordered ``first`` keeps its order (Spark's ``first`` has none)."""
    [sql] = to_spark("SELECT [hash(uh, 'rows', x)]::UBIGINT[] AS ch FROM t")
    assert sql == "SELECT CAST(ARRAY(XXHASH64(uh, 'rows', x)) AS ARRAY<BIGINT>) AS ch FROM t"
    [sql] = to_spark("SELECT first(c.k ORDER BY c.n, c.k) FROM t AS c GROUP BY g")
    assert sql == "SELECT MIN_BY(c.k, NAMED_STRUCT('k0', c.n, 'k1', c.k)) FROM t AS c GROUP BY g"
    [sql] = to_spark("SELECT first(x) FROM t")
    assert sql == "SELECT FIRST(x) FROM t"  # no order: unchanged
    with pytest.raises(UnsupportedSQL, match="DESC"):
        to_spark("SELECT first(c ORDER BY n DESC) FROM t")
