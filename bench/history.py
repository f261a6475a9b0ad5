"""A year of daily releases: how the difference check's cost grows with the release history.

``python -m bench.history [--days 365] [--events-per-day 20000] [--users 20000] [--value]`` generates a
year of events (each day's file written over ``data/today.parquet``, as a nightly export would),
then runs the same threshold report (city × category, k = 10, with a grand total and a by-city
margin, history on by default; ``--value``: also a clamped order-value sum, a third of the events
carrying a value, so most people contribute to it and some do not) once per day, in-process through the public API. It records per
day the ``suppress`` stage (primary suppression, the difference checks, secondary suppression),
the whole run, and the history's size, and prints a table for ``bench/RESULTS.md``.

Not part of the test run (minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

from pipeline import load_config, run_report


def day_events(path: Path, day: int, *, events: int, users: int) -> None:
    """One day's events: a returning population (user ids drawn from a pool that drifts by day);
    a third of them with an order value."""
    start = dt.date(2026, 1, 1) + dt.timedelta(days=day)
    con = duckdb.connect()
    con.execute(f"""
        COPY (
            SELECT (hash(i, {day}) % {users})::BIGINT + {day * users // 365} AS user_id,
                   'city_' || (hash(i, {day}, 'c') % 40)::INT AS city,
                   'cat_' || (hash(i, {day}, 'k') % 25)::INT AS category,
                   TIMESTAMP '{start}' + INTERVAL (i % 86400) SECOND AS event_time,
                   CASE WHEN hash(i, {day}, 'v') % 3 = 0 THEN CAST(hash(i, {day}, 'w') % 500 AS DOUBLE) END AS order_value
            FROM range({events}) r(i)
        ) TO '{path}' (FORMAT parquet)
    """)
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--events-per-day", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--value", action="store_true", help="also publish a clamped order-value sum")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--results", type=Path, default=None, help="write per-day results as JSON here")
    args = ap.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-history-"))
    (root / "data").mkdir(parents=True, exist_ok=True)
    cfg_path = root / "daily.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "report": "daily_city_category",
        "source": {"path": "data/today.parquet"},
        "privacy_unit": "user_id",
        "identifiers": ["user_id"],
        "dimensions": ["city", "category"],
        "metrics": [{"name": "events", "agg": "count"}, {"name": "buyers", "agg": "count_units"}]
        + ([{"name": "order_value", "agg": "sum", "column": "order_value", "bounds": [0, 400]}] if args.value else []),
        "min_units": 10,
        "totals": [[], ["city"]],
        "output": {"dir": "reports"},
    }, sort_keys=False))
    rows = []
    for day in range(args.days):
        day_events(root / "data" / "today.parquet", day, events=args.events_per_day, users=args.users)
        cfg = load_config(cfg_path)
        t = time.perf_counter()
        rel = run_report(cfg, f"day{day + 1:03d}", summary_html=False)
        wall = time.perf_counter() - t
        hist = cfg.state_dir / "release_history.duckdb"
        con = duckdb.connect(str(hist), read_only=True)
        units = con.execute("SELECT count(*) FROM cell_units").fetchone()[0]
        con.close()
        rows.append({
            "day": day + 1, "wall_s": round(wall, 3),
            "suppress_s": rel.manifest["timings_s"].get("suppress"),
            "published": (rel.internal or {}).get("cells", {}).get("cells_published"),
            "withheld_difference": (rel.internal or {}).get("cells", {}).get("suppressed_difference", 0),
            "history_mib": round(hist.stat().st_size / 2**20, 1), "history_rows": units,
        })
        if (day + 1) in (1, 7, 30, 90, 180, 365) or day + 1 == args.days:
            print(json.dumps(rows[-1]), flush=True)
    if args.results:
        args.results.write_text(json.dumps(rows, indent=1))
    med = sorted(r["suppress_s"] for r in rows)[len(rows) // 2]
    print(f"\nmedian suppress stage over {len(rows)} days: {med:.2f} s; total run time {sum(r['wall_s'] for r in rows):.1f} s")
    print("\n| day | run (s) | suppress stage (s) | cells published | withheld (difference) | history (MiB) | history rows |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["day"] in (1, 7, 30, 90, 180, 365) or r["day"] == args.days:
            print(f"| {r['day']} | {r['wall_s']:.2f} | {r['suppress_s']:.2f} | {r['published']} | "
                  f"{r['withheld_difference']} | {r['history_mib']} | {r['history_rows']:,} |")


if __name__ == "__main__":
    main()
