"""PipelineDP (local backend) on the benchmark report, for comparison only (bench-only dependency).

Runs in its own virtual environment (``bench/out/pdp-venv``, made by ``python -m bench
--setup-pipelinedp``), never in the test run. Same data, ε, δ, contribution bounds and value
bounds as the benchmark's DP config; metrics COUNT, PRIVACY_ID_COUNT and SUM (PipelineDP's MEAN
counts rows without a value as 0, unlike ours, so it is left out). Prints one JSON line: seconds,
partitions released, and the median absolute and relative error of the released counts against
the true counts. With OUT.json, also writes the released cells (city, category, week, count), one
JSON object per line, so the harness can compare both tools on the cells both released.
With ``--post-threshold`` PipelineDP selects partitions by thresholding its noisy privacy-id count
(``post_aggregation_thresholding``: one mechanism for selection and that count, as ours does)
instead of spending a separate share on selection.

    bench/out/pdp-venv/bin/python bench/pipelinedp_bench.py SOURCE.parquet EPS DELTA L0 LINF [OUT.json] [--post-threshold]
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import time
from collections import Counter


def main() -> None:
    import pipeline_dp
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    post_threshold = "--post-threshold" in sys.argv
    argv = [a for a in sys.argv if a != "--post-threshold"]
    source = argv[1]
    epsilon, delta, l0, linf = (float(argv[2]), float(argv[3]), int(argv[4]), int(argv[5]))
    start = time.perf_counter()
    t = pq.read_table(source, columns=["user_id", "city", "category", "event_time", "event_type", "order_value"])
    t = t.filter(pc.is_in(t["event_type"], value_set=__import__("pyarrow").array(["enquiry", "call", "order"])))
    t = t.filter(pc.is_valid(t["user_id"]))
    weeks = pc.floor_temporal(t["event_time"], unit="week", week_starts_monday=True)
    rows = list(zip(
        t["user_id"].to_pylist(), t["city"].to_pylist(), t["category"].to_pylist(),
        [w.date() if isinstance(w, dt.datetime) else w for w in weeks.to_pylist()],
        [v if v is not None else 0.0 for v in t["order_value"].to_pylist()], strict=True,
    ))
    read_s = time.perf_counter() - start
    accountant = pipeline_dp.NaiveBudgetAccountant(total_epsilon=epsilon, total_delta=delta)
    engine = pipeline_dp.DPEngine(accountant, pipeline_dp.LocalBackend())
    params = pipeline_dp.AggregateParams(
        noise_kind=pipeline_dp.NoiseKind.LAPLACE,
        metrics=[pipeline_dp.Metrics.COUNT, pipeline_dp.Metrics.PRIVACY_ID_COUNT, pipeline_dp.Metrics.SUM],
        max_partitions_contributed=l0,
        max_contributions_per_partition=linf,
        min_value=0.0,
        max_value=100000.0,
        post_aggregation_thresholding=post_threshold,
    )
    extractors = pipeline_dp.DataExtractors(
        partition_extractor=lambda r: (r[1], r[2], r[3]),
        privacy_id_extractor=lambda r: r[0],
        value_extractor=lambda r: min(100000.0, max(0.0, r[4])),
    )
    result = engine.aggregate(rows, params, extractors)
    accountant.compute_budgets()
    released = list(result)
    total_s = time.perf_counter() - start
    truth = Counter((r[1], r[2], r[3]) for r in rows)
    errors = [abs(m.count - truth[k]) for k, m in released]
    rel_errors = [abs(m.count - truth[k]) / truth[k] for k, m in released if truth[k]]
    if len(argv) > 6:
        with open(argv[6], "w") as fh:
            for (city, category, week), m in released:
                fh.write(json.dumps({"city": city, "category": category, "week": str(week), "got": m.count,
                                     "units": m.privacy_id_count, "sum": m.sum}) + "\n")
    print(json.dumps({
        "seconds": round(total_s, 2), "read_seconds": round(read_s, 2), "partitions_released": len(released),
        "median_abs_error_count": statistics.median(errors) if errors else None,
        "median_rel_error_count": statistics.median(rel_errors) if rel_errors else None,
        "post_aggregation_thresholding": post_threshold,
        "pipeline_dp": __import__("importlib.metadata").metadata.version("pipeline-dp"),
    }))


if __name__ == "__main__":
    main()
