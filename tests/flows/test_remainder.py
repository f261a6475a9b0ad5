"""Remainder rows (`remainder: true`): published only when safe, checked by the independent attacker.

Truth (units per union of withheld cells, sums) is recomputed here with plain DuckDB; every
written report also goes through the LP attacker of ``tests/lp_check.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import load_config, open_release, run_report

from ..conftest import SAMPLES, release_dirs, run_cli, write_config
from ..lp_check import REAL_SAMPLE_CASES, attack, pinned
from ..privacy.test_secondary import ROOT, level_map, query_arrow, run_crafted

METRICS = [{"name": "events", "agg": "count"}, {"name": "users", "agg": "count_units"}]


def remainder_rows(table: Any) -> list[dict]:
    return [r for r in table.to_pylist() if r["is_remainder"]]


def test_remainder_aggregates_the_withheld_cells(tmp_path: Path) -> None:
    units = {("x",): 3, ("y",): 4, ("z",): 20, ("w",): 30}
    table, targets = run_crafted(tmp_path, units, ["a"], k=5, totals=None, remainder=True)
    assert pinned(targets) == []
    assert table.column_names == ["level", "is_remainder", "a", "events", "users"]
    [rem] = remainder_rows(table)
    src = tmp_path / "data" / "t.parquet"
    truth = query_arrow(
        f"SELECT count(*) AS events, count(DISTINCT user_id) AS users FROM read_parquet('{src}') WHERE a IN ('x', 'y')"
    ).to_pylist()[0]
    assert rem == {"level": "cell", "is_remainder": True, "a": None, **truth}
    # published cells plus the remainder add up to the whole table
    total = query_arrow(f"SELECT count(*) AS n FROM read_parquet('{src}')")["n"][0].as_py()
    assert sum(r["events"] for r in table.to_pylist()) == total
    assert [r["is_remainder"] for r in table.to_pylist()] == [False, False, True]  # remainder last


def test_one_withheld_cell_is_never_a_remainder(tmp_path: Path) -> None:
    table, targets = run_crafted(tmp_path, {("x",): 3, ("z",): 20, ("w",): 30}, ["a"], k=5, totals=None, remainder=True)
    assert remainder_rows(table) == [] and pinned(targets) == []
    manifest = open_release(next(tmp_path.rglob("manifest.json")).parent).internal
    assert manifest["cells"]["remainder_rows_published"] == 0
    assert manifest["cells"]["remainder_rows_withheld"] == 1


def test_remainder_counts_distinct_people_over_the_union(tmp_path: Path) -> None:
    # x and y hold the same three people: 3 + 3 units per cell, but only 3 distinct people
    rows = {"a": [], "user_id": []}
    for cell in ("x", "y"):
        for u in (1, 2, 3):
            rows["a"].append(cell)
            rows["user_id"].append(u)
    for cell, first in (("z", 100), ("w", 200)):
        for u in range(first, first + 20):
            rows["a"].append(cell)
            rows["user_id"].append(u)
    (tmp_path / "data").mkdir()
    src = tmp_path / "data" / "t.parquet"
    pq.write_table(pa.table(rows), src)
    distinct = query_arrow(f"SELECT count(DISTINCT user_id) AS n FROM read_parquet('{src}') WHERE a IN ('x','y')")
    assert distinct["n"][0].as_py() == 3 < 5
    cfg = write_config(tmp_path, source={"path": "data/t.parquet"}, identifiers=["user_id"], filter=None,
                       dimensions=["a"], metrics=METRICS, min_units=5, remainder=True)
    rel = run_report(load_config(cfg), "r", summary_html=False)
    assert remainder_rows(pq.read_table(rel.report_path)) == []
    assert rel.internal["cells"]["remainder_rows_withheld"] == 1


def test_remainder_that_would_pin_a_margin_is_withheld(tmp_path: Path) -> None:
    # by_a['p'] is withheld (4 people); row q needs a complement. A cell-level remainder would add
    # pu + pv + qu + qv = R while by_a['q'] gives qu + qv: by_a['p'] = pu + pv would follow.
    units = {("p", "u"): 2, ("p", "v"): 2, ("q", "u"): 3, ("q", "v"): 30, ("q", "w"): 31}
    dims, totals = ["a", "b"], [["a"]]
    table, targets = run_crafted(tmp_path, units, dims, k=5, totals=totals, remainder=True)
    assert pinned(targets) == []
    assert remainder_rows(table) == []
    manifest = open_release(next(tmp_path.rglob("manifest.json")).parent).internal
    assert manifest["cells"]["remainder_rows_withheld"] == 2  # cell level (would pin), by_a (one row)
    # the attacker confirms the rule was needed: with the remainder row added, by_a['p'] is pinned
    src = tmp_path / "data" / "t.parquet"
    withheld = [r for r in query_arrow(f"SELECT a, b, count(*) AS v FROM read_parquet('{src}') GROUP BY ALL").to_pylist()
                if (r["a"], r["b"]) not in {(x["a"], x["b"]) for x in table.to_pylist() if x["level"] == "cell"}]
    forged = table.to_pylist() + [{"level": "cell", "is_remainder": True, "a": None, "b": None,
                                   "events": sum(r["v"] for r in withheld), "users": 0}]
    truth = query_arrow(f"SELECT a, b, count(*) AS value FROM read_parquet('{src}') GROUP BY ALL")
    leaked = pinned(attack(forged, truth, dims, "events", level_map(dims, totals)))
    assert [(t.level, t.key) for t in leaked] == [("by_a", ("p",))]


def test_margin_level_remainder(tmp_path: Path) -> None:
    # two small rows of a: their by_a margins are withheld, and together they qualify
    units = {("p", "u"): 2, ("p", "v"): 1, ("q", "u"): 2, ("q", "v"): 2,
             ("r", "u"): 30, ("r", "v"): 31, ("s", "u"): 32, ("s", "v"): 33}
    dims, totals = ["a", "b"], [[], ["a"]]
    table, targets = run_crafted(tmp_path, units, dims, k=5, totals=totals, remainder=True)
    assert pinned(targets) == []
    rems = {r["level"]: r for r in remainder_rows(table)}
    assert set(rems) <= {"cell", "by_a"} and "by_a" in rems
    assert rems["by_a"]["users"] == 7 and all(rems["by_a"][d] is None for d in dims)


@pytest.mark.parametrize(("name", "metric", "sql"), REAL_SAMPLE_CASES)
def test_real_sample_data_with_remainders(name: str, metric: str, sql: str, tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / f"{name}.yaml").with_overrides(remainder=True)
    rel = run_report(cfg, "t", output_dir=tmp_path, summary_html=False)
    table = pq.read_table(rel.report_path)
    src = SAMPLES / ("adult_census.parquet" if name.startswith("adult") else "online_retail_sample.parquet")
    dims = [d.name for d in cfg.dims]
    targets = attack(table, query_arrow(sql.format(src=src)), dims, metric, level_map(dims, cfg.totals))
    assert len(remainder_rows(table)) == rel.manifest["cells"]["remainder_rows_published"] > 0
    assert pinned(targets) == []
    assert rel.manifest["gate"]["passed"] and rel.manifest["gate"]["checks"]["min_units"]["remainder_bad"] == 0


def test_gate_recomputes_remainders(project: Path) -> None:
    dims = ["city", "category", {"column": "event_time", "grain": "month", "as": "month"}]
    cfg = write_config(project, dimensions=dims, totals=[[], ["category"]], remainder=True, min_units=10)
    assert run_cli("run", cfg, "--run-id", "r1").exit_code == 0
    [rel] = release_dirs(project)
    table = pq.read_table(rel / "report.parquet")
    assert table.column("is_remainder").to_pylist().count(True) >= 1
    assert run_cli("check", rel).exit_code == 0
    published = table.column("is_remainder").to_pylist().count(True)
    assert f"remainder rows  published {published} · withheld" in run_cli("explain", rel).output
    # a forged remainder for the grand total (one row, nothing withheld beneath it) is refused
    row = {c: [None] for c in table.column_names} | {"level": ["total"], "is_remainder": [True], "events": [5],
                                                        "buyers": [12]}
    forged = pa.concat_tables([table, pa.table(row, schema=table.schema)])
    pq.write_table(forged, rel / "report.parquet")
    res = run_cli("check", rel)
    assert res.exit_code == 3 and "1 remainder row(s) cover fewer than min_units=10" in res.stderr
    assert release_dirs(project) == [rel]
    # is_remainder is not a declared column of a report without remainders
    plain = write_config(project, name="plain.yaml", dimensions=dims, totals=[[], ["category"]], min_units=10)
    res = run_cli("check", rel, "--config", plain)
    assert res.exit_code == 3 and "'is_remainder' are not declared" in res.stderr


def test_remainder_is_refused_in_dp_mode(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, remainder=True, privacy={"epsilon": 1.0},
                       budget={"ledger": "state/ledger.duckdb", "epsilon_limit": 5, "delta_limit": 1e-5})
    res = run_cli("validate", cfg, "--no-source")
    assert res.exit_code == 2
    assert "remainder: remainder rows are a threshold-mode feature" in res.stderr and "\n" not in res.stderr.strip()
    assert release_dirs(tmp_path) == []
