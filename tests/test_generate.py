"""The synthetic event generator's shapes (``anonymize generate-events --shape``): deterministic,
and the wide shape spans the cells the wide benchmark needs (bench/RESULTS_wide.md)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.conftest import run_cli


def test_wide_shape_spans_cities_categories_and_twelve_weeks(tmp_path: Path) -> None:
    out = tmp_path / "wide.parquet"
    res = run_cli("generate-events", "--rows", "200000", "--users", "20000", "--shape", "wide", "--out", out)
    assert res.exit_code == 0, res.stderr
    cities, cats, weeks, lo, hi = duckdb.connect().execute(
        f"SELECT count(DISTINCT city), count(DISTINCT category), count(DISTINCT date_trunc('week', event_time)), "
        f"min(event_time), max(event_time) FROM '{out}'").fetchone()
    assert 250 <= cities <= 300 and 150 <= cats <= 200 and weeks in (12, 13)
    assert (hi - lo).days < 84
    again = tmp_path / "again.parquet"
    assert run_cli("generate-events", "--rows", "200000", "--users", "20000", "--shape", "wide", "--out", again).exit_code == 0
    same = duckdb.connect().execute(f"SELECT count(*) FROM (SELECT * FROM '{out}' EXCEPT ALL SELECT * FROM '{again}')").fetchone()
    assert same == (0,)  # deterministic given the seed
