"""DuckDB against local Spark on the same events, in the same run (issue 17).

``python -m bench.spark [--sizes 1M,10M] [--repeat 2]`` (needs the ``[spark]`` extra and Java)
measures, per size and alternating:

- **whole runs** as separate processes, as a scheduler starts them: ``anonymize run CONFIG
  --engine duckdb`` and ``--engine spark`` (the Spark one pays the JVM's start-up), threshold and
  DP mode;
- **the Spark engine against its own limit**, in one Python process holding one Spark session:
  a bare Spark SQL ``GROUP BY … HAVING count(DISTINCT user_id) >= k`` over the same Parquet (the
  aggregates collected to the driver), then a threshold run, the bare query again, then a DP run
  (``run_report`` with ``engine.kind: spark`` reuses the session).

Both engines run the same configs as ``python -m bench`` with ``difference_check: false`` (as
the earlier measurements did; each run is a first release, so the check would compare nothing). Prints a Markdown table; the numbers are
pasted into ``bench/RESULTS.md`` by hand with the machine they ran on. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.run import (
    BENCH,
    K,
    anonymize_cmd,
    ensure_data,
    parse_size,
    run_child,
    size_label,
    write_configs,
)

BARE_SQL = """
SELECT city, category, CAST(date_trunc('week', event_time) AS DATE) AS week, count(*) AS events,
       count(DISTINCT user_id) AS buyers,
       sum(greatest(0.0, least(100000.0, order_value))) AS order_value_total,
       avg(greatest(0.0, least(100000.0, order_value))) AS order_value_avg
FROM parquet.`{source}`
WHERE event_type IN ('enquiry', 'call', 'order') AND user_id IS NOT NULL
GROUP BY 1, 2, 3
HAVING count(DISTINCT user_id) >= {k}
"""


def _configs(source: Path, label: str, work: Path) -> dict[str, Path]:
    """The bench's threshold and DP configs with ``difference_check: false``."""
    out = {}
    for mode, path in write_configs(source, label, work).items():
        if mode not in ("threshold", "dp"):
            continue
        cfg = yaml.safe_load(path.read_text())
        cfg["difference_check"] = False
        cfg["output"] = {"dir": str(work / "reports")}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out[mode] = path
    return out


def in_session(source: Path, configs: dict[str, Path], work: Path, repeat: int) -> dict[str, list[float]]:
    """One Spark session: bare query, threshold run, bare query, DP run, ``repeat`` times."""
    from pyspark.sql import SparkSession

    from pipeline import load_config, run_report

    spark = (SparkSession.builder.master("local[2]").appName("bench")
             .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "8").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    times: dict[str, list[float]] = {"bare": [], "threshold": [], "dp": []}
    spark.sql(BARE_SQL.format(source=source, k=K)).collect()  # warm: JIT, file listing
    for r in range(repeat):
        for mode in ("threshold", "dp"):
            t = time.perf_counter()
            rows = spark.sql(BARE_SQL.format(source=source, k=K)).collect()
            times["bare"].append(time.perf_counter() - t)
            shutil.rmtree(work / "reports", ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)
            cfg = load_config(configs[mode]).with_overrides(engine={"kind": "spark"})
            t = time.perf_counter()
            rel = run_report(cfg, f"s{r}", summary_html=False)
            times[mode].append(time.perf_counter() - t)
            print(f"    in session #{r}: bare {times['bare'][-1]:.2f} s ({len(rows)} rows), "
                  f"{mode} {times[mode][-1]:.2f} s ({len(rel.table)} rows)", flush=True)
    spark.stop()
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.spark", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,10M")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data-dir", type=Path, default=BENCH / "data")
    ap.add_argument("--work-dir", type=Path, default=BENCH / "out" / "spark")
    ap.add_argument("--session-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    log = args.work_dir / "bench.log"
    if args.session_only:  # the child process of the in-session measurement
        source, label = Path(args.sizes.split("|")[0]), args.sizes.split("|")[1]
        times = in_session(source, _configs(source, label, args.work_dir), args.work_dir, args.repeat)
        (args.work_dir / f"session_{label}.json").write_text(json.dumps(times))
        return
    rows = []
    for n in (parse_size(s) for s in args.sizes.split(",")):
        label = size_label(n)
        source, _ = ensure_data(n, args.data_dir, log, regenerate=False)
        configs = _configs(source, label, args.work_dir)
        whole: dict[tuple[str, str], list[float]] = {}
        for r in range(args.repeat):
            for mode in ("threshold", "dp"):
                for engine in (("duckdb", "spark") if r % 2 == 0 else ("spark", "duckdb")):
                    shutil.rmtree(args.work_dir / "reports", ignore_errors=True)
                    shutil.rmtree(args.work_dir / "state", ignore_errors=True)
                    cmd = anonymize_cmd() + ["run", str(configs[mode]), "--run-id", f"r{r}", "-q", "--no-summary",
                                             "--engine", engine]
                    wall, _, rss, rc = run_child(cmd, log)
                    if rc != 0:
                        raise SystemExit(f"{engine} {mode} failed (exit {rc}); see {log}")
                    whole.setdefault((mode, engine), []).append(wall)
                    print(f"  {label} {mode:<9} {engine:<6} #{r}: {wall:6.2f} s wall, {rss:6.0f} MiB", flush=True)
        cmd = [sys.executable, "-m", "bench.spark", "--session-only", "--sizes", f"{source}|{label}",
               "--repeat", str(args.repeat), "--work-dir", str(args.work_dir)]
        subprocess.run(cmd, check=True)
        session = json.loads((args.work_dir / f"session_{label}.json").read_text())
        med = statistics.median
        bare = med(session["bare"])
        for mode in ("threshold", "dp"):
            d, s = med(whole[(mode, "duckdb")]), med(whole[(mode, "spark")])
            rows.append((label, mode, d, s, med(session[mode]), bare))
    print("\n| events | mode | DuckDB run (process) | Spark run (process) | Spark ÷ DuckDB | "
          "Spark run in session | bare Spark GROUP BY | run ÷ bare |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, mode, d, s, ins, bare in rows:
        print(f"| {label} | {mode} | {d:.2f} s | {s:.2f} s | {s / d:.1f}× | {ins:.2f} s | {bare:.2f} s | "
              f"{ins / bare:.2f}× |")


if __name__ == "__main__":
    main()
