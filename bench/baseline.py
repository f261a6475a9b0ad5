"""The baseline: a bare DuckDB GROUP BY … HAVING count(DISTINCT user) >= k over the same Parquet.

It computes the same aggregates as the benchmark report (city × category × week over
enquiry/call/order events: rows, distinct users, clamped sum and mean of ``order_value``) with
no privacy machinery at all, and writes them to a Parquet file: the physical lower bound our
users compare the pipeline with. Run as a whole process by ``bench/run.py``::

    python -m bench.baseline SOURCE OUT.parquet [--k 50] [--threads N] [--memory-limit 3GB] [--temp-dir D]
"""

from __future__ import annotations

import argparse

BASELINE_SQL = """
COPY (
  SELECT city, category, CAST(date_trunc('week', event_time) AS DATE) AS week,
         count(*) AS events,
         count(DISTINCT user_id) AS buyers,
         sum(greatest(0.0, least(100000.0, order_value))) AS order_value_total,
         avg(greatest(0.0, least(100000.0, order_value))) AS order_value_avg
  FROM read_parquet($source)
  WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL
  GROUP BY ALL
  HAVING count(DISTINCT user_id) >= $k
  ORDER BY ALL
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
"""


def main(argv: list[str] | None = None) -> None:
    import duckdb

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="Parquet file, glob or folder of Parquet files")
    ap.add_argument("out", help="output Parquet file")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--memory-limit")
    ap.add_argument("--temp-dir")
    args = ap.parse_args(argv)
    config = {"preserve_insertion_order": "false"}
    if args.threads:
        config["threads"] = str(args.threads)
    if args.memory_limit:
        config["memory_limit"] = args.memory_limit
    if args.temp_dir:
        config["temp_directory"] = args.temp_dir
    source = args.source
    if not any(c in source for c in "*?[") and not source.endswith(".parquet"):
        source = source.rstrip("/") + "/*.parquet"  # a folder of partitions
    con = duckdb.connect(":memory:", config=config)
    out = args.out.replace("'", "''")
    con.execute(BASELINE_SQL.format(out=out), {"source": source, "k": args.k})
    con.close()


if __name__ == "__main__":
    main()
