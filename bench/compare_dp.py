"""DP error at ε = 1 against the threshold report on the same data (numbers quoted in the README).

Usage: python -m bench.compare_dp [--rows 1000000] [--users 100000] [--noise laplace|gaussian]
       [--selection-share 0.4] [--events-weight 8]

Runs configs/buyer_activity_weekly.yaml (threshold, k = 50) and the DP version of the same report
(ε = 1, δ = 1e-6, ≤ 5 cells and ≤ 10 rows per buyer) on generated events, then compares every
published cell with the true (unbounded, noise-free) value computed by a plain DuckDB query.
Writes nothing outside a temporary folder; the ledger is temporary too.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import duckdb

from pipeline import load_config, run_report
from pipeline.generate import generate_events

ROOT = Path(__file__).resolve().parents[1]


def pct(x: float | None) -> str:
    return "n/a (no cell)" if x is None else f"{x:.1%}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--noise", default="laplace", choices=["laplace", "gaussian"])
    ap.add_argument("--groups", type=int, default=5)
    ap.add_argument("--rows-per-group", type=int, default=10)
    ap.add_argument("--selection-share", type=float, help="privacy.selection_share (default: the config's)")
    ap.add_argument("--events-weight", type=float, help="budget_weight of the events row count (default 1)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src = generate_events(t / "data" / "events.parquet", rows=args.rows, users=args.users, seed=7)
        thr = load_config(ROOT / "configs" / "buyer_activity_weekly.yaml").with_overrides(source={"path": str(src)})
        privacy = {"noise": args.noise, "max_groups_per_unit": args.groups, "max_rows_per_group": args.rows_per_group}
        if args.selection_share is not None:
            privacy["selection_share"] = args.selection_share
        dp = load_config(ROOT / "configs" / "buyer_activity_weekly_dp.yaml")
        metrics = [m.model_dump(exclude_none=True) for m in dp.metrics]
        if args.events_weight is not None:
            metrics = [m | {"budget_weight": args.events_weight} if m["name"] == "events" else m for m in metrics]
        dp = dp.with_overrides(source={"path": str(src)}, budget={"ledger": str(t / "state" / "ledger.duckdb")},
                               privacy=privacy, metrics=metrics)
        r_thr = run_report(thr, "cmp", output_dir=t / "out")
        r_dp = run_report(dp, "cmp", output_dir=t / "out")
        con = duckdb.connect()
        con.execute(
            f"""CREATE TABLE truth AS SELECT city, category, CAST(date_trunc('week', event_time) AS DATE) AS week,
                 count(*) AS events, count(DISTINCT user_id) AS buyers
               FROM read_parquet('{src}') WHERE event_type IN ('enquiry','call','order') GROUP BY ALL"""
        )
        con.register("dp", r_dp.table)
        n_true_50 = con.execute("SELECT count(*) FROM truth WHERE buyers >= 50").fetchall()[0][0]
        row = con.execute(
            """SELECT count(*),
                      median(abs(dp.buyers - t.buyers) / t.buyers),
                      median(abs(dp.events - t.events) / t.events),
                      count(*) FILTER (WHERE t.buyers < 50)
               FROM dp JOIN truth t USING (city, category, week)"""
        ).fetchall()[0]
        print(f"events: {args.rows:,}, users: {args.users:,}; cells with >= 50 buyers (truth): {n_true_50}")
        print("| report | cells published | median rel. error buyers | median rel. error events |")
        print("|---|---|---|---|")
        print(f"| threshold k=50 | {r_thr.manifest['cells']['cells_published']} | 0 (exact) | 0 (exact) |")
        split = dp.privacy.selection_share, args.events_weight or 1
        print(f"| DP ε=1 {args.noise} (g={args.groups}, r={args.rows_per_group}, selection share {split[0]:g}, "
              f"events weight {split[1]:g}) | {row[0]} | {pct(row[1])} | {pct(row[2])} |")
        print(f"DP cells published with < 50 true buyers: {row[3]}")


if __name__ == "__main__":
    main()
