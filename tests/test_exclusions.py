"""Opt-outs and deleted accounts (issue 18): people on an ``exclude_units`` list contribute nothing
to any release, and the gate checks that independently. The truth is computed here with plain
DuckDB over the raw rows minus the listed people."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline import load_config, run_report
from pipeline.errors import ConfigError, SourceError

from .conftest import write_config


def test_listed_people_contribute_nothing(project: Path) -> None:
    src = project / "data" / "events.parquet"
    con = duckdb.connect()
    deleted = [r[0] for r in con.execute(
        f"SELECT DISTINCT user_id FROM '{src}' WHERE user_id IS NOT NULL ORDER BY user_id LIMIT 600").fetchall()]
    con.execute(f"COPY (SELECT unnest(?) AS user_id) TO '{project / 'deleted.parquet'}' (FORMAT parquet)", [deleted[:400]])
    (project / "optout.csv").write_text("uid\n" + "\n".join(f" {u}" for u in deleted[400:]) + "\n")
    cfg = load_config(write_config(project, dimensions=["city"], totals=None, history=None,
                                   metrics=[{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"}],
                                   exclude_units=[{"path": "deleted.parquet", "column": "user_id"},
                                                  {"path": "optout.csv", "column": "uid"}]))
    rel = run_report(cfg, "r1")
    got = {r["city"]: (r["events"], r["buyers"]) for r in pq.read_table(rel.report_path).to_pylist()}
    truth = {c: (n, b) for c, n, b in con.execute(f"""
        SELECT city, count(*), count(DISTINCT user_id) FROM '{src}'
        WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL AND NOT list_contains(?, user_id)
        GROUP BY city HAVING count(DISTINCT user_id) >= 10""", [deleted]).fetchall()}
    assert got == truth
    manifest = json.loads((rel.path / "manifest.json").read_text())
    lists = manifest["source"]["exclude_units"]
    assert [x["units_listed"] for x in lists] == [400, 200] and all(len(x["sha256"]) == 64 for x in lists)
    assert manifest["gate"]["checks"]["exclusions"] == {"ok": True, "lists": 2}  # every list checked against the source


def test_bad_lists_are_refused(project: Path) -> None:
    (project / "bad.csv").write_text("uid\n12\nnot-an-id\n")
    cfg = load_config(write_config(project, exclude_units=[{"path": "bad.csv", "column": "uid"}]))
    with pytest.raises(SourceError, match="lists 'not-an-id'"):
        run_report(cfg, "r1")
    cfg = load_config(write_config(project, exclude_units=[{"path": "missing.csv", "column": "uid"}]))
    with pytest.raises(ConfigError, match="file not found"):
        run_report(cfg, "r1")
    (project / "other.csv").write_text("id\n12\n")
    cfg = load_config(write_config(project, exclude_units=[{"path": "other.csv", "column": "uid"}]))
    with pytest.raises(ConfigError, match="column 'uid' is not in"):
        run_report(cfg, "r1")


def test_the_gate_refuses_when_the_filter_did_not_happen(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate re-reads the lists itself: a filter that was skipped is caught, nothing published."""
    import pipeline.engines.duckdb.exclusions as exclusions
    from pipeline import PrivacyRefusal

    src = project / "data" / "events.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT DISTINCT user_id FROM '{src}' WHERE user_id IS NOT NULL LIMIT 50) "
                f"TO '{project / 'deleted.parquet'}' (FORMAT parquet)")
    monkeypatch.setattr(exclusions, "apply_exclusions", lambda cfg, con, schema: [{"path": "x"}])
    cfg = load_config(write_config(project, exclude_units=[{"path": "deleted.parquet", "column": "user_id"}]))
    with pytest.raises(PrivacyRefusal, match="exclude_units list reached the aggregation"):
        run_report(cfg, "r1")
    assert not (project / "reports" / "t_report" / "r1").exists()


def test_exclusions_through_the_cli_and_the_catalogue(project: Path) -> None:
    """``anonymize run --json`` with an exclusion list: the gate's own re-check is a verdict in the
    JSON, the people's rows are gone (counts against plain DuckDB), and ``anonymize check`` of
    the release re-reads the list and passes; a list naming a missing file is refused (exit 2)."""
    from pipeline import catalogue

    from .conftest import run_cli

    src = project / "data" / "events.parquet"
    con = duckdb.connect()
    listed = [r[0] for r in con.execute(
        f"SELECT DISTINCT user_id FROM '{src}' WHERE user_id IS NOT NULL ORDER BY user_id DESC LIMIT 300").fetchall()]
    (project / "deleted.csv").write_text("user_id\n" + "\n".join(map(str, listed)) + "\n")
    cfg = write_config(project, dimensions=["city"], totals=None, history=None,
                       metrics=[{"name": "events", "agg": "count"}],
                       exclude_units=[{"path": "deleted.csv", "column": "user_id"}])
    res = run_cli("run", cfg, "--run-id", "x1", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["gate"]["checks"]["exclusions"] is True
    truth = dict(con.execute(f"SELECT city, count(*) FROM '{src}' WHERE event_type IN ('enquiry', 'call', 'order') "
                             "AND user_id IS NOT NULL AND NOT list_contains(?, user_id) GROUP BY city", [listed]).fetchall())
    got = {r["city"]: r["events"] for r in pq.read_table(Path(out["release"]) / "report.parquet").to_pylist()}
    assert got and all(got[c] == truth[c] for c in got)  # every published count is the count without them
    assert run_cli("check", out["release"]).exit_code == 0
    [row] = catalogue(project / "reports")
    assert row["run_id"] == "x1" and row["intact"] and row["gate_passed"]
    missing = write_config(project, "m.yaml", exclude_units=[{"path": "nope.csv", "column": "user_id"}])
    res = run_cli("run", missing, "--run-id", "x2")
    assert res.exit_code == 2 and "nope.csv" in res.stderr
