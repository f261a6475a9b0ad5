"""Scheduled windows (issue 18): ``window:`` plus ``--as-of`` publishes exactly the last complete
period, names the run after it, records it, and a rerun of the same window is idempotent. The
truth is computed here with plain DuckDB over the raw rows."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from .conftest import release_dirs, run_cli, write_config


def _events(path: Path) -> Path:
    con = duckdb.connect()
    con.execute(f"""COPY (
        SELECT i % 300 AS user_id, 'c' || (i % 3) AS city,
               TIMESTAMP '2026-11-16 00:00:00' + INTERVAL (i % (14 * 24)) HOUR AS event_time
        FROM range(20000) r(i)) TO '{path}' (FORMAT parquet)""")
    return path


def test_a_daily_window_publishes_the_last_complete_day(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    src = _events(tmp_path / "data" / "events.parquet")
    cfg = write_config(tmp_path, "daily.yaml", report="daily", source={"path": "data/events.parquet"},
                       identifiers=["user_id"], filter=None, dimensions=["city"],
                       metrics=[{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"}],
                       min_units=5, window={"column": "event_time", "period": "day"}, history=None, budget=None)
    res = run_cli("run", cfg, "--as-of", "2026-11-24", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["run_id"] == "2026-11-23" and out["release"].endswith("daily/2026-11-23")
    got = {r["city"]: (r["events"], r["buyers"]) for r in pq.read_table(Path(out["release"]) / "report.parquet").to_pylist()}
    truth = {c: (n, b) for c, n, b in duckdb.connect().execute(f"""
        SELECT city, count(*), count(DISTINCT user_id) FROM '{src}'
        WHERE event_time >= TIMESTAMP '2026-11-23' AND event_time < TIMESTAMP '2026-11-24' GROUP BY city""").fetchall()}
    assert got == truth and len(got) == 3
    manifest = json.loads((Path(out["release"]) / "manifest.json").read_text())
    assert manifest["config"]["window"] == {"column": "event_time", "period": "day", "lag": 0,
                                            "start": "2026-11-23", "end": "2026-11-24"}
    again = json.loads(run_cli("run", cfg, "--as-of", "2026-11-24", "--json").stdout)
    assert again["status"] == "unchanged"
    # the catalogue names the window a release covers
    [row] = json.loads(run_cli("releases", tmp_path / "reports", "--json").stdout)
    assert row["window"] == {"period": "day", "start": "2026-11-23", "end": "2026-11-24"}
    assert "window 2026-11-23..2026-11-24" in run_cli("releases", tmp_path / "reports").stdout


def test_weekly_and_monthly_names_and_errors(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    _events(tmp_path / "data" / "events.parquet")
    base = dict(report="w", source={"path": "data/events.parquet"}, identifiers=["user_id"], filter=None,
                dimensions=["city"], metrics=[{"name": "events", "agg": "count"}], min_units=5, history=None, budget=None)
    weekly = write_config(tmp_path, "weekly.yaml", window={"column": "event_time", "period": "week"}, **base)
    out = json.loads(run_cli("run", weekly, "--as-of", "2026-11-25", "--json").stdout)
    assert out["run_id"] == "2026-W47" and out["cells_published"] == 3
    plain = write_config(tmp_path, "plain.yaml", **base)
    res = run_cli("run", plain)
    assert res.exit_code == 2 and "give --run-id" in res.stderr
    res = run_cli("run", plain, "--as-of", "2026-11-25", "--run-id", "x")
    assert res.exit_code == 2 and "--as-of needs a window" in res.stderr
    bad = write_config(tmp_path, "bad.yaml", window={"column": "city", "period": "day"}, **base)
    res = run_cli("run", bad, "--as-of", "2026-11-25")
    assert res.exit_code == 2 and "a window needs a date or timestamp column" in res.stderr
    assert len(release_dirs(tmp_path)) == 1


def test_monthly_and_lagged_windows_through_the_api(tmp_path: Path) -> None:
    """``run_report(cfg, run_id, as_of=…)``: a month window names the month and holds exactly its
    rows; ``lag: 1`` steps one more period back (here the day before yesterday)."""
    import datetime as dt

    from pipeline import load_config, run_report

    (tmp_path / "data").mkdir()
    con = duckdb.connect()
    con.execute(f"""COPY (
        SELECT i % 400 AS user_id, 'c' || (i % 2) AS city,
               TIMESTAMP '2026-10-20 00:00:00' + INTERVAL (i % (30 * 24)) HOUR AS event_time
        FROM range(30000) r(i)) TO '{tmp_path / 'data' / 'm.parquet'}' (FORMAT parquet)""")
    base = dict(source={"path": "data/m.parquet"}, identifiers=["user_id"], filter=None, dimensions=["city"],
                metrics=[{"name": "events", "agg": "count"}], min_units=5, history=None, budget=None)

    def truth(lo: str, hi: str) -> dict:
        return dict(con.execute(f"SELECT city, count(*) FROM '{tmp_path / 'data' / 'm.parquet'}' WHERE event_time >= "
                                f"TIMESTAMP '{lo}' AND event_time < TIMESTAMP '{hi}' GROUP BY city").fetchall())

    monthly = load_config(write_config(tmp_path, "m.yaml", report="m", window={"column": "event_time", "period": "month"},
                                       **base))
    rel = run_report(monthly, None, as_of=dt.date(2026, 11, 3), summary_html=False)
    assert rel.manifest["run_id"] == "2026-10"
    assert dict(zip(rel.table["city"], rel.table["events"], strict=True)) == truth("2026-10-01", "2026-11-01")
    lagged = load_config(write_config(tmp_path, "l.yaml", report="l",
                                      window={"column": "event_time", "period": "day", "lag": 1}, **base))
    rel = run_report(lagged, None, as_of=dt.date(2026, 11, 10), summary_html=False)
    assert rel.manifest["run_id"] == "2026-11-08"
    assert dict(zip(rel.table["city"], rel.table["events"], strict=True)) == truth("2026-11-08", "2026-11-09")
